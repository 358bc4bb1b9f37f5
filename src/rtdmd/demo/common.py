"""What every world's demo shares (``rtdmd demo``): its config with the ``--quick`` overrides, both training
stages with their evaluation hooks and timings, ``metrics.json``, and a self-contained HTML page.

A world's demo is a function ``demo(out, config_name, overrides, quick) -> summary`` registered under the
world's kind in the ``demo`` section of :mod:`rtdmd.registry` (:mod:`rtdmd.demo.gmm`,
:mod:`rtdmd.demo.shapes`); it calls these helpers and adds its own evaluation, figures and claims.
"""

from __future__ import annotations

import dataclasses
import html
import json
import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from rtdmd.config import Config, load_config
from rtdmd.errors import UserError
from rtdmd.train import align, distill
from rtdmd.train.signals import raise_if_stopped

# transformers 5 names the torchvision image processors `XImageProcessor`; diffusers' SD3 module imports two of them
# (for IP-adapters, which the demo never builds), and without torchvision transformers substitutes the PIL class
# with this notice. The demo filters exactly this notice on the logger that emits it; any other message passes.
FALLBACK_NOTICE = re.compile(r"`\w+ImageProcessor` requires torchvision \(not installed\); falling back to "
                             r"`\w+ImageProcessorPil`")
TRANSFORMERS_IMPORT_LOGGER = "transformers.utils.import_utils"


class _DropFallbackNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not FALLBACK_NOTICE.match(record.getMessage())


def quiet_image_processor_fallback() -> None:
    """Drop transformers' "requires torchvision; falling back to ...Pil" notice (idempotent)."""
    logger = logging.getLogger(TRANSFORMERS_IMPORT_LOGGER)
    if not any(isinstance(f, _DropFallbackNotice) for f in logger.filters):
        logger.addFilter(_DropFallbackNotice())


def claims_table(claims: dict) -> str:
    """The claims as a short plain-text table: name, value (± standard error), threshold, whether it holds; and
    a last line counting the claims that hold."""
    rows = [("claim", "value", "holds when", "holds")]
    for name, c in claims.items():
        value = "–" if c["value"] is None else f"{c['value']:.3f}"
        if c.get("se") is not None and math.isfinite(c["se"]):
            value += f" ± {c['se']:.3f}"
        bound = f"{'<=' if c.get('at_most') else '>='} {c['threshold']:g}"
        rows.append((name, value, bound, "yes" if c["holds"] else "NO"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    held = sum(c["holds"] for c in claims.values())
    lines.append(f"{held} of {len(claims)} claims hold")
    return "\n".join(lines)


def demo_config(config_name: str, overrides: Sequence[str], quick_overrides: Sequence[str], quick: bool) -> Config:
    """The config of a demo run: the user's ``--set`` overrides win over the ``--quick`` ones."""
    return load_config(config_name, overrides, defaults=quick_overrides if quick else ())


def check_out_dir(out: Path) -> None:
    """A demo writes two fresh runs: refuse an ``--out`` that already holds one (one-line user error)."""
    for stage in ("stage1", "stage2"):
        if (Path(out) / stage / "checkpoints").exists():
            raise UserError(f"{out} already holds a demo run: delete it or pass --out NEW_DIR")


def with_eval_every(config: Config, every: int) -> Config:
    return dataclasses.replace(config, run=dataclasses.replace(config.run, eval_every=every))


def train_stages(config: Config, out: Path, *, evaluate_stage1: Callable | None = None,
                 evaluate_stage2: Callable | None = None, stage1_eval_every: int | None = None) -> dict[str, float]:
    """Stage 1 into ``out/stage1``, then stage 2 from it into ``out/stage2``, each with its evaluation hook
    (``evaluate(parts, step) -> dict``, called with the EMA generator every ``run.eval_every`` steps; stage 1 may
    use its own cadence ``stage1_eval_every``). Returns the wall seconds of each stage."""
    stage1_config = config if stage1_eval_every is None else with_eval_every(config, stage1_eval_every)
    timings = {}
    t0 = time.perf_counter()
    raise_if_stopped(distill.run(stage1_config, out / "stage1", evaluate=evaluate_stage1))
    timings["stage1_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    raise_if_stopped(align.run(config, out / "stage2", out / "stage1", evaluate=evaluate_stage2))
    timings["stage2_seconds"] = time.perf_counter() - t0
    return timings


def _finite(value):
    """JSON has no NaN: non-finite floats become None (recursively)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_metrics(out: Path, data: dict) -> Path:
    path = Path(out) / "metrics.json"
    path.write_text(json.dumps(_finite(data), indent=1))
    return path


# -- HTML ------------------------------------------------------------------------------------------------------

def fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def table(header: Sequence[str], rows: Sequence[Sequence], digits: int = 3) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{fmt(c, digits)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def figure(path: Path, caption: str = "") -> str:
    """An image by its file name: the page and its PNGs move together."""
    name = html.escape(Path(path).name)
    text = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f'<figure><a href="{name}"><img src="{name}" alt="{name}"></a>{text}</figure>'


def paragraph(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"


STYLE = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
         "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
         "th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%}"
         "figure{margin:1em 0}figcaption{font-size:90%;color:#555}.warn{color:#a00}")


def write_html(out: Path, title: str, sections: Sequence[tuple[str, str]]) -> Path:
    """``out/report.html``: a title and ``(heading, html)`` sections; no external resources."""
    body = "".join(f"<h2>{html.escape(h)}</h2>\n{content}\n" for h, content in sections)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>\n{body}</body></html>\n")
    path = Path(out) / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
