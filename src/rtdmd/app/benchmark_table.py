"""The paper's comparison table from one command: ``rtdmd evaluate --benchmark NAME ... --run RUN ... --out OUT``.

Columns are models: the runs' common teacher (its ODE with ``--teacher-steps`` steps and guidance ``--cfg``,
default the config's), then each run's generator (its few-step CPS sampler with the EMA weights of its latest
checkpoint). Rows are metrics, grouped by prompt set. A prompt set is a registered one (``geneval``,
``drawbench``, ``t2i_compbench``, ...: :mod:`rtdmd.data.benchmarks`), ``world`` (the runs' world's held-out
prompts), or any prompt source (a file, ``generated:...``: :mod:`rtdmd.data.sources`). For a set on which the
paper reports metrics, the rows are those metrics, computed by the scorers named like them (a reward named
``clipscore``, ``geneval``, ...; ``--reward NAME=KIND`` names one) and shown as "-" when no scorer has the name;
other sets are scored by every scorer. A value is the mean over images (GenEval: the mean of its per-task means).

Every model generates the same prompts with the same seeds (``--seed`` onwards, ``--num`` per prompt, else the
set's own protocol: DrawBench 5, GenEval 4, others 1) through :func:`rtdmd.app.evaluation.evaluate`. Written to
OUT (new or empty, checked before any model loads):

    table.md       the table and the protocol
    table.json     models, rows (value, std and count per model) and the protocol: each set's source, sha256 and
                   number of prompts, the seeds, steps, CFG and eta of each model (a generator's run, stage,
                   checkpoint and the checkpoint's sha256), every scorer's name, kind and weight-file sha256
    index.html     the table, the protocol and, per set, an image grid: a row per prompt (the first ``--grid``
                   prompts, first seed), a column per model
    <model>/<set>/ each evaluation's images/, scores.jsonl and summary.json

Prompt sets are fetched and checked, and scorers built, before any generation; one model is in memory at a
time (the teacher is the first run's backbone with its adapters off).
"""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from rtdmd import registry
from rtdmd.app.evaluation import EvalProtocol, evaluate, prompt_set_digest, scorer_record
from rtdmd.app.outputs import check_output_dir
from rtdmd.app.runs import load_run, open_run
from rtdmd.app.sampling import sample_images
from rtdmd.config import resolve_rewards
from rtdmd.data import benchmarks
from rtdmd.data.prompts import PromptSet
from rtdmd.data.sources import parse_source
from rtdmd.devices import resolve_device
from rtdmd.errors import UserError, suggest
from rtdmd.train.components import build_rewards
from rtdmd.train.rundir import read_run_config

WORLD = "world"


@dataclass(frozen=True)
class TableRequest:
    """What ``rtdmd evaluate --benchmark ...`` asks for (module docstring)."""

    runs: tuple[Path, ...]
    sets: tuple[str, ...]
    out: Path
    teacher_steps: int = 50
    cfg: float | None = None  # teacher guidance; None: the config's
    rewards: tuple[str, ...] = ()  # "KIND" or "NAME=KIND"; (): the first run's rewards
    num: int | None = None  # images per prompt; None: each set's own protocol
    seed: int = 1234
    limit: int | None = None  # first prompts of each set only (a quick look)
    grid: int = 4  # prompts shown per set in the HTML page
    device: str = "cpu"

    def __post_init__(self):
        if not self.runs or not self.sets:
            raise UserError("the table needs at least one --run and one --benchmark")
        small = {"--teacher-steps": self.teacher_steps, "--num": self.num, "--limit": self.limit}
        bad = next((k for k, v in small.items() if v is not None and v < 1), None)
        if bad is not None or self.grid < 0:
            raise UserError(f"{bad or '--grid'} must be at least {0 if bad is None else 1}")


@dataclass(frozen=True)
class EvalSet:
    """A prompt set of the table, with what the protocol records about it."""

    name: str
    prompts: PromptSet
    record: Mapping[str, Any]
    paper_metrics: tuple[str, ...] | None  # None: every scorer
    samples_per_prompt: int = 1
    aggregate: str = "mean"

    @property
    def slug(self) -> str:
        return slug(self.name)


@dataclass(frozen=True)
class Column:
    """A model of the table: how it samples and what the protocol records about it."""

    name: str
    role: str  # "teacher" or "generator"
    steps: int
    eta: float
    cfg: float | None
    step_list: tuple[int, ...] = ()  # generator: the timesteps it was trained on
    extra: Mapping[str, Any] = field(default_factory=dict)  # run directory, stage, checkpoint step

    @property
    def slug(self) -> str:
        return slug(self.name)

    @property
    def label(self) -> str:
        guidance = f", CFG {self.cfg:g}" if self.cfg is not None else ""
        stage = f"{self.extra['stage']}, " if self.extra.get("stage") else ""
        return f"{self.name} ({stage}{self.steps} steps{guidance})"


def slug(name: str) -> str:
    """A file-name-safe form of a set or model name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "set"


# ----------------------------------------------------------------------------------------------------------
# Prompt sets and scorers (before any model loads)

def resolve_sets(names: Sequence[str], world, limit: int | None) -> list[EvalSet]:
    """The sets the names stand for (a group name stands for all its members), each cut to ``limit`` prompts."""
    sets: list[EvalSet] = []
    for name in names:
        if name == WORLD:
            prompts = world.prompts("eval")
            sets.append(EvalSet(WORLD, prompts, {"name": WORLD, "source": "the runs' world, held-out split",
                                                 **prompt_set_digest(prompts, None)}, None))
        elif benchmarks.members(name):
            sets += [EvalSet(b.name, b.load(), b.record(), b.metrics if b.use == "paper" else None,
                             b.samples_per_prompt, b.aggregate) for b in benchmarks.members(name)]
        else:
            source = parse_source(name)
            if source.kind == "file" and not Path(source.name).is_file():
                raise UserError(f"--benchmark {name}: neither a registered prompt set"
                                f"{suggest(name, [*benchmarks.BENCHMARKS, WORLD])} nor a prompt file ('rtdmd "
                                "prompts list' shows the sets; 'world' is the runs' held-out prompts)")
            prompts = source.load()
            path = source.name if source.kind == "file" else None
            sets.append(EvalSet(str(source), prompts, {"name": str(source), **prompt_set_digest(prompts, path)},
                                None))
    if len({s.slug for s in sets}) != len(sets):
        raise UserError(f"a prompt set is named twice in --benchmark {' '.join(names)}")
    if limit is not None:
        sets = [replace(s, prompts=s.prompts.subset(range(min(limit, len(s.prompts))))) for s in sets]
    return sets


def reward_entries(specs: Sequence[str], default):
    """Reward entries of ``--reward KIND`` / ``--reward NAME=KIND`` (the name is what the table matches
    against the paper's metrics), or ``default`` (the first run's rewards) when none is given."""
    if not specs:
        return default
    raw = []
    for spec in specs:
        name, _, kind = spec.rpartition("=")
        raw.append({"kind": kind, **({"name": name} if name else {})})
    return resolve_rewards(raw)


def scorers_for(eval_set: EvalSet, entries: Sequence) -> list:
    """The scorers of a set: those named like its paper metrics, or all of them for a set without."""
    if eval_set.paper_metrics is None:
        return list(entries)
    chosen = [e for e in entries if e.name in eval_set.paper_metrics]
    if not chosen:
        wanted = ", ".join(f"{m} ({benchmarks.METRICS[m]})" for m in eval_set.paper_metrics)
        raise UserError(f"no scorer for the metrics the paper reports on {eval_set.name}: {wanted}; name one with "
                        f"--reward NAME=KIND (scorers here: {', '.join(e.name for e in entries)})")
    return chosen


def check_runs(runs: Sequence[Path]):
    """The runs' configs and run records; they must share one world and backbone (one teacher)."""
    read = [read_run_config(Path(run)) for run in runs]
    first = read[0][0].fingerprint("world", "backbone")
    for run, (config, _) in zip(runs[1:], read[1:]):
        if config.fingerprint("world", "backbone") != first:
            raise UserError(f"--run {run} has another world or backbone than --run {runs[0]}: the table compares "
                            "generators distilled from one teacher")
    return read


# ----------------------------------------------------------------------------------------------------------
# Models

def teacher_column(config, steps: int, cfg: float | None) -> Column:
    guidance = cfg if cfg is not None else getattr(config.backbone, "teacher_guidance", None)
    return Column("teacher", "teacher", steps, 0.0, guidance)


def generator_columns(runs: Sequence[Path], read) -> list[Column]:
    """One column per run, named after its directory (with its position when two directories share a name)."""
    names = [Path(run).name for run in runs]
    columns = []
    for i, (run, (config, info)) in enumerate(zip(runs, read)):
        name = names[i] if names.count(names[i]) == 1 and names[i] != "teacher" else f"{names[i]}-{i + 1}"
        stage_cfg = config.align if info["stage"] == "align" else config.distill
        columns.append(Column(name, "generator", len(stage_cfg.step_list), stage_cfg.eta, None,
                              tuple(stage_cfg.step_list), {"run": str(run), "stage": info["stage"]}))
    return columns


def sampler(backbone, column: Column) -> Callable:
    """``generate(prompts, seeds) -> images`` of a column on a loaded backbone."""
    if column.role == "teacher":
        sigmas = backbone.teacher_sigmas(column.steps)
    else:
        sigmas = backbone.generator_sigmas(column.step_list)

    def generate(texts, seeds):
        return sample_images(backbone, texts, seeds, sigmas=sigmas, eta=column.eta, role=column.role,
                             guidance=column.cfg)
    return generate


def evaluate_column(generate: Callable, column: Column, sets: Sequence[EvalSet], entries: Sequence,
                    seeds: Mapping[str, tuple[int, ...]], out: Path) -> dict[str, dict]:
    """Every set with one model: ``{set slug: summary}`` (images and scores under ``out/<model>/<set>``)."""
    summaries = {}
    for eval_set in sets:
        protocol = EvalProtocol(seeds=seeds[eval_set.slug], steps=column.steps, cfg=column.cfg,
                                extra={**column.extra, "role": column.role, "eta": column.eta,
                                       "prompt_set": dict(eval_set.record)})
        start = time.perf_counter()
        summary = evaluate(generate, eval_set.prompts, scorers_for(eval_set, entries), protocol,
                           out / column.slug / eval_set.slug)
        summary["seconds"] = time.perf_counter() - start
        summaries[eval_set.slug] = summary
    return summaries


# ----------------------------------------------------------------------------------------------------------
# The table

def metric_value(summary: Mapping[str, Any], metric: str, aggregate: str) -> dict[str, Any] | None:
    stats = summary["scores"].get(metric)
    if stats is None:
        return None
    value = stats["tag_mean"] if aggregate == "tag_mean" and "tag_mean" in stats else stats["mean"]
    return {"value": value, "std": stats["std"], "count": stats["count"]}


def table_rows(sets: Sequence[EvalSet], columns: Sequence[Column], entries: Sequence,
               summaries: Mapping[str, Mapping[str, dict]]) -> list[dict[str, Any]]:
    """Rows = (set, metric): the paper's metrics of the set in its order (computed or not), then the other
    scorers it was scored with."""
    rows = []
    for eval_set in sets:
        names = [e.name for e in scorers_for(eval_set, entries)]
        metrics = [*(eval_set.paper_metrics or ()), *(n for n in names if n not in (eval_set.paper_metrics or ()))]
        for metric in metrics:
            rows.append({"set": eval_set.name, "metric": metric, "display": benchmarks.METRICS.get(metric, metric),
                         "paper": metric in (eval_set.paper_metrics or ()), "computed": metric in names,
                         "values": {c.name: metric_value(summaries[c.slug][eval_set.slug], metric, eval_set.aggregate)
                                    for c in columns}})
    return rows


def fmt(value: Mapping[str, Any] | None) -> str:
    """Four significant digits, as the paper's tables (0.2936, 5.571, 22.32, 1.000); "-" for no scorer."""
    return "-" if value is None else f"{value['value']:#.4g}".rstrip(".")


def set_label(eval_set: EvalSet, seeds: Sequence[int]) -> str:
    return f"{eval_set.name} ({len(eval_set.prompts)} x {len(seeds)})"


def protocol_record(request: TableRequest, sets, columns, seeds, scorers) -> dict[str, Any]:
    return {"prompt_sets": [{**dict(s.record), "evaluated_prompts": len(s.prompts), "seeds": list(seeds[s.slug]),
                             "aggregate": s.aggregate} for s in sets],
            "models": [{**asdict(c), "label": c.label} for c in columns],
            "scorers": scorers, "limit": request.limit, "device": request.device}


def protocol_lines(protocol: Mapping[str, Any]) -> list[str]:
    """The protocol in one line per prompt set, model and scorer (``table.json`` has all of it)."""
    lines = []
    for record in protocol["prompt_sets"]:
        lines.append(f"{record['name']}: {record.get('url') or record.get('path') or record.get('source')}, "
                     f"sha256 {record['sha256']}, {record['evaluated_prompts']} prompts evaluated, seeds "
                     f"{record['seeds'][0]}..{record['seeds'][-1]}")
    for model in protocol["models"]:
        lines.append(f"{model['name']}: {model['role']}, {model['steps']} steps, eta {model['eta']:g}, CFG "
                     f"{model['cfg'] if model['cfg'] is not None else 'none'}"
                     + "".join(f", {k} {v}" for k, v in model["extra"].items()))
    for scorer in protocol["scorers"]:
        hashes = scorer["info"].get("weights_sha256") or {}
        lines.append(f"scorer {scorer['name']}: {scorer['info'].get('kind', scorer['info'].get('type'))}"
                     + "".join(f", {file} sha256 {digest}" for file, digest in hashes.items()))
    return lines


def markdown(sets, columns, rows, seeds, protocol) -> str:
    labels = {s.name: set_label(s, seeds[s.slug]) for s in sets}
    lines = ["| prompt set | metric | " + " | ".join(c.label for c in columns) + " |",
             "|---|---|" + "---:|" * len(columns)]
    for row in rows:
        metric = row["display"] + ("" if row["computed"] else " (no scorer)")
        lines.append(f"| {labels[row['set']]} | {metric} | "
                     + " | ".join(fmt(row["values"][c.name]) for c in columns) + " |")
    lines += ["", "Protocol (table.json has all of it):", "", *(f"- {line}" for line in protocol_lines(protocol))]
    return "\n".join(lines) + "\n"


def grid_rows(eval_set: EvalSet, columns, seeds, out: Path, count: int) -> list[dict[str, Any]]:
    """The first ``count`` prompts at the first seed: per model the image file (relative to ``out``) and its
    scores, read back from each evaluation's ``scores.jsonl``."""
    first_seed = seeds[eval_set.slug][0]
    per_model = {}
    for column in columns:
        folder = out / column.slug / eval_set.slug
        lines = [json.loads(line) for line in (folder / "scores.jsonl").read_text(encoding="utf-8").splitlines()]
        per_model[column.name] = {r["index"]: r for r in lines if r["seed"] == first_seed and r["index"] < count}
    rows = []
    for index in range(min(count, len(eval_set.prompts))):
        cells = {name: {"file": f"{columns[i].slug}/{eval_set.slug}/{records[index]['file']}",
                        "scores": records[index]["scores"]} for i, (name, records) in enumerate(per_model.items())}
        rows.append({"index": index, "prompt": eval_set.prompts.texts[index], "seed": first_seed, "images": cells})
    return rows


PAGE_STYLE = """body{font-family:system-ui,sans-serif;margin:24px;color:#222}
table{border-collapse:collapse;margin:8px 0 20px}th,td{border:1px solid #ccc;padding:4px 8px;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums}td.prompt{max-width:260px;font-size:13px}
img{image-rendering:pixelated;display:block}.score{font-size:11px;color:#555}ul{font-size:13px}"""


def page(sets, columns, rows, seeds, protocol, grids, out: Path) -> str:
    """The HTML page: the table, the protocol, one image grid per set (same prompt and seed across a row)."""
    esc = html.escape
    head = "".join(f"<th>{esc(c.label)}</th>" for c in columns)
    labels = {s.name: set_label(s, seeds[s.slug]) for s in sets}
    body = [f"<h1>rtdmd: {len(columns)} models on {len(sets)} prompt sets</h1>",
            f"<table class='scores'><tr><th>prompt set</th><th>metric</th>{head}</tr>"]
    for row in rows:
        cells = "".join(f"<td class='num'>{fmt(row['values'][c.name])}</td>" for c in columns)
        metric = row["display"] + ("" if row["computed"] else " (no scorer)")
        body.append(f"<tr><td>{esc(labels[row['set']])}</td><td>{esc(metric)}</td>{cells}</tr>")
    body.append("</table><h2>Protocol</h2><ul>")
    body += [f"<li>{esc(line)}</li>" for line in protocol_lines(protocol)]
    body.append("</ul>")
    for eval_set in sets:
        body.append(f"<h2>{esc(eval_set.name)}: the same prompts and seeds in every column</h2>"
                    f"<table class='grid'><tr><th>prompt (seed)</th>{head}</tr>")
        for row in grids[eval_set.slug]:
            cells = []
            for column in columns:
                image = row["images"][column.name]
                width, height = Image.open(out / image["file"]).size
                scale = max(1, 128 // max(width, height)) if max(width, height) < 128 else 256 / max(width, height)
                scores = ", ".join(f"{k} {v:.3g}" for k, v in image["scores"].items())
                cells.append(f"<td><img src='{esc(image['file'])}' width='{round(width * scale)}' "
                             f"height='{round(height * scale)}' alt='{esc(column.name)}: {esc(row['prompt'])}'>"
                             f"<div class='score'>{esc(scores)}</div></td>")
            body.append(f"<tr><td class='prompt'>{esc(row['prompt'])} ({row['seed']})</td>{''.join(cells)}</tr>")
        body.append("</table>")
    return (f"<!doctype html>\n<html><head><meta charset='utf-8'><title>rtdmd benchmark table</title>"
            f"<style>{PAGE_STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def write_outputs(request: TableRequest, sets, columns, entries, summaries, scorers) -> dict[str, Any]:
    seeds = {s.slug: tuple(summaries[columns[0].slug][s.slug]["protocol"]["seeds"]) for s in sets}
    rows = table_rows(sets, columns, entries, summaries)
    protocol = protocol_record(request, sets, columns, seeds, scorers)
    grids = {s.slug: grid_rows(s, columns, seeds, request.out, request.grid) for s in sets}
    timing = {c.name: {s.name: summaries[c.slug][s.slug]["seconds"] for s in sets} for c in columns}
    images = sum(summaries[c.slug][s.slug]["protocol"]["images"] for c in columns for s in sets)
    table = {"columns": [c.label for c in columns], "rows": rows, "protocol": protocol, "grids": grids,
             "images": images, "seconds": timing}
    out = request.out
    (out / "table.json").write_text(json.dumps(table, indent=1) + "\n", encoding="utf-8")
    (out / "table.md").write_text(markdown(sets, columns, rows, seeds, protocol), encoding="utf-8")
    (out / "index.html").write_text(page(sets, columns, rows, seeds, protocol, grids, out), encoding="utf-8")
    return table


# ----------------------------------------------------------------------------------------------------------
# The command

def make_table(request: TableRequest) -> dict[str, Any]:
    """Everything the module docstring describes; returns the contents of ``table.json``."""
    read = check_runs(request.runs)
    config = read[0][0]
    world = registry.builder("world", config.world.kind)(config.world)
    sets = resolve_sets(request.sets, world, request.limit)
    device = resolve_device(request.device)
    entries = build_rewards(reward_entries(request.rewards, config.rewards), world=world, device=device).entries
    for eval_set in sets:  # every set has a scorer, before anything is generated
        scorers_for(eval_set, entries)
    seeds = {s.slug: tuple(range(request.seed, request.seed + (request.num or s.samples_per_prompt))) for s in sets}
    refs = [open_run(Path(run)) for run in request.runs]  # every run's checkpoint checked before any model loads
    check_output_dir(request.out)  # new or empty: two tables never mix their folders
    teacher = teacher_column(config, request.teacher_steps, request.cfg)
    columns = [teacher]
    summaries: dict[str, dict] = {}
    for i, column in enumerate(generator_columns(request.runs, read)):
        loaded = load_run(refs[i], device)
        column = replace(column, extra={**column.extra, "checkpoint_step": loaded.step,
                                        "checkpoint": refs[i].checkpoint.name,
                                        "checkpoint_sha256": refs[i].digest})
        backbone = loaded.components.backbone
        if i == 0:  # the teacher: the first run's backbone with its adapters off
            summaries[teacher.slug] = evaluate_column(sampler(backbone, teacher), teacher, sets, entries, seeds,
                                                      request.out)
        summaries[column.slug] = evaluate_column(sampler(backbone, column), column, sets, entries, seeds,
                                                 request.out)
        columns.append(column)
        del loaded, backbone  # one model in memory at a time
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return write_outputs(request, sets, columns, entries, summaries, [scorer_record(e) for e in entries])


def table_command(args) -> int:
    """``rtdmd evaluate --benchmark ...`` (the thin command-line side)."""
    if args.config is not None or args.prompts is not None or args.role != "generator":
        raise UserError("the table (--benchmark) compares the teacher and the generators of --run directories: "
                        "drop --config, --prompts and --role (a file is a --benchmark too)")
    if args.out is None:
        raise UserError("the table writes a folder (table.md, table.json, index.html, images): give --out DIR")
    request = TableRequest(runs=tuple(args.run or ()), sets=tuple(args.benchmark), out=args.out,
                           teacher_steps=args.teacher_steps, cfg=args.cfg, rewards=tuple(args.reward or ()),
                           num=args.num, seed=args.seed, limit=args.limit, grid=args.grid, device=args.device)
    table = make_table(request)
    print((args.out / "table.md").read_text(encoding="utf-8").split("\n\n")[0])
    print(f"rtdmd: wrote {args.out}/table.md, table.json and index.html ({table['images']} images)")
    return 0
