"""The package's layers (docs/architecture.md): every import of ``src/rtdmd`` points down or sideways within its
layer, never up, and the modules import each other without a cycle. Read from the source with ``ast`` (imports
inside functions count too)."""

import ast
from pathlib import Path

import rtdmd

SRC = Path(rtdmd.__file__).parent

# Lowest first. A module may import its own layer and the layers below it.
LAYERS = [
    ("rtdmd", "rtdmd.errors", "rtdmd.devices", "rtdmd.rng"),
    ("rtdmd.functional",),
    ("rtdmd.registry", "rtdmd.config", "rtdmd.data", "rtdmd.scheduler"),
    ("rtdmd.rewards",),
    ("rtdmd.worlds",),
    ("rtdmd.backbones",),
    ("rtdmd.train",),
    ("rtdmd.app",),
    ("rtdmd.demo",),
    ("rtdmd.commands", "rtdmd.cli"),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    """The layer of ``module``: that of its longest matching prefix."""
    best = None
    for rank, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (rank, len(prefix))
    assert best is not None, f"{module} is in no layer of tests/test_architecture.py"
    return best[0]


def imports(path: Path) -> list[tuple[str, int]]:
    """``(imported rtdmd module, line)`` for every import in the file, wherever it is."""
    tree = ast.parse(path.read_text(), str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rsplit(".", 1)[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "rtdmd"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            if name.split(".")[0] == "rtdmd":
                # "from rtdmd.x import y" may import the submodule rtdmd.x.y
                for alias in node.names:
                    sub = f"{name}.{alias.name}"
                    out.append((sub if (SRC.parent / Path(*sub.split("."))).with_suffix(".py").exists()
                                or (SRC.parent / Path(*sub.split("."))).is_dir() else name, node.lineno))
    return out


def edges() -> dict[str, set[str]]:
    graph = {}
    for path in SRC.rglob("*.py"):
        graph[module_name(path)] = {target for target, _ in imports(path)}
    return graph


def test_imports_never_point_up():
    upward = []
    for path in sorted(SRC.rglob("*.py")):
        source = module_name(path)
        for target, line in imports(path):
            if layer(target) > layer(source):
                upward.append(f"{path.relative_to(SRC)}:{line} {source} -> {target}")
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def test_no_import_cycles_between_packages():
    """Between the packages (rtdmd.train, rtdmd.worlds, ...): a module of one never needs another that needs it."""
    def package(module: str) -> str:
        parts = module.split(".")
        return ".".join(parts[:2])

    graph: dict[str, set[str]] = {}
    for source, targets in edges().items():
        graph.setdefault(package(source), set()).update(package(t) for t in targets if package(t) != package(source))
    cycles = [(a, b) for a in graph for b in graph[a] if a in graph.get(b, set())]
    assert not cycles, f"packages that import each other: {sorted(cycles)}"


def test_the_check_can_fail():
    """The layer table catches an upward import (a guard against a checker that accepts everything)."""
    assert layer("rtdmd.functional.flow") < layer("rtdmd.train.align")
    assert layer("rtdmd.worlds.gmm.rewards") > layer("rtdmd.rewards.base")
    assert layer("rtdmd.train.components") < layer("rtdmd.app.runs") < layer("rtdmd.commands.train")
