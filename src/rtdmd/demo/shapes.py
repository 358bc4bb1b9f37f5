"""The shapes world's demo (the default ``rtdmd demo``): the paper's claim, end to end, on a CPU.

1. The teacher on the held-out prompts: 50 ODE steps with CFG (the reference of every comparison), timed batch by
   batch.
2. Stage 1 (AC-DMD) and stage 2 (RTDMD) on the training prompts; the EMA generator is evaluated on the held-out
   prompts during both, and during stage 2 a :class:`~rtdmd.worlds.watch.RewardHackingWatch` sets the held-out
   oracle accuracy, image statistics and within-prompt diversity next to the training rewards.
3. Teacher, stage-1 and stage-2 generators on the same held-out prompts and seeds: oracle accuracy per tag
   (standard errors over seeds), the training rewards, image statistics, diversity, and the speed of 4-step
   generation against the teacher's 50 steps with CFG on identical batches.
4. ``report.html``, its PNG figures (:mod:`rtdmd.demo.shapes_figures`) and ``metrics.json`` in ``out``.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import torch

from rtdmd import registry
from rtdmd.app.runs import load_run
from rtdmd.app.watch import RewardHackingWatch
from rtdmd.app.world_metrics import TimedSamples, per_seed, sample_timed, standard_error
from rtdmd.demo import common as shared
from rtdmd.demo import shapes_figures as figures
from rtdmd.errors import UserError
from rtdmd.rewards.base import RewardSet, WeightedReward
from rtdmd.train.components import build_components
from rtdmd.train.parallel import init_distributed
from rtdmd.worlds.shapes import oracle, stats

QUICK = ("distill.iterations=20", "align.iterations=4", "run.eval_every=2", "run.eval_samples=2")
EVAL_SEED = 1234  # first seed of every held-out evaluation (teacher, both generators, the watch)
PROMPTS_PER_BATCH = 10  # timed batches: 10 held-out prompts x run.eval_samples seeds
STAGE1_EVALS = 4  # held-out evaluations during stage 1 (besides its start and end)
TEACHER_STEPS = (50,)  # the first is the reference of every comparison (28 steps were dropped: budget)
CLAIMS = {"stage1_gap": 0.05, "stage2_gain": 0.10, "diversity_ratio": figures.DIVERSITY_RATIO, "speedup": 10.0, "reward_auc": 0.95}
MONITORED = ("shapes_clip", "shapes_pref")  # the world's learned rewards: always reported, trained on or not

_monitors: dict = {}


def with_monitors(rewards, world, device):
    """The training rewards plus each :data:`MONITORED` reward the config does not train on, at weight 0 (so the
    weighted total is still the training reward). Monitors are built once per process."""
    extra = []
    for kind in MONITORED:
        if kind in rewards.weights:
            continue
        if (kind, str(device)) not in _monitors:
            build = registry.builder("reward", kind)
            _monitors[kind, str(device)] = build(registry.config_class("reward", kind)(), world=world, device=device)
        extra.append(WeightedReward(kind, _monitors[kind, str(device)], weight=0.0, bp_scale=0.0))
    return RewardSet([*rewards.entries, *extra]) if extra else rewards


def evaluation(parts, config, samples: dict) -> dict:
    """The world's metrics of ``samples`` (training rewards and monitors) plus standard errors over seeds and the
    per-seed summaries."""
    rewards = with_monitors(parts.rewards, parts.world, parts.backbone.device)
    result = parts.world.evaluate(samples, rewards, config.beta)
    seeds = per_seed(parts.world, samples, rewards, config.beta)
    result["se"] = {k: standard_error([m[k] for m in seeds]) for k in seeds[0]} if len(seeds) > 1 else {}
    result["per_seed"] = seeds
    return result


def reward_auc(parts, samples: dict, metadata: dict) -> dict[str, float]:
    """Per reward (trained and monitored, the oracle itself excepted), its AUC against the oracle's verdicts on
    ``samples`` ``{prompt: images}``: how faithfully it ranks accepted above rejected images of this model."""
    rewards = with_monitors(parts.rewards, parts.world, parts.backbone.device)
    texts = [prompt for prompt, x in samples.items() for _ in range(len(x))]
    images = torch.cat([torch.as_tensor(x).detach().float().cpu() for x in samples.values()])
    meta = [metadata[t] for t in texts]
    verdicts = oracle.score(images.numpy(), meta)
    with torch.no_grad():
        scores = rewards.score(images, texts, meta)
    return {name: stats.auc(s.float().cpu().numpy(), verdicts) for name, s in scores.items() if name != "shapes_oracle"}


def held_out_hook(config, num: int, stage: str):
    """``evaluate(parts, step)`` for the training loop of ``stage``: the EMA generator on the held-out prompts."""
    def evaluate(parts, step):
        timed = sample_timed(parts, config, num=num, seed=EVAL_SEED, stage=stage, prompts_per_batch=PROMPTS_PER_BATCH)
        result = evaluation(parts, config, timed.samples)
        return {**result["summary"], "accuracy_se": result["se"].get("accuracy", float("nan"))}
    return evaluate


def paired_difference(a: dict, b: dict, key: str = "accuracy") -> tuple[float, float]:
    """``a - b`` of a summary metric and its standard error from the per-seed differences (same seeds)."""
    diffs = [x[key] - y[key] for x, y in zip(a["per_seed"], b["per_seed"])]
    return a["summary"][key] - b["summary"][key], standard_error(diffs)


def speed(reference, fast) -> dict:
    """Medians over identical batches of the reference's and the fast sampler's wall / CPU seconds."""
    out = {"batch_images": reference.batch, "batches": len(reference.seconds)}
    for name, ref, new in (("wall", reference.seconds, fast.seconds), ("cpu", reference.cpu_seconds, fast.cpu_seconds)):
        if ref and new:
            out[f"teacher_{name}_seconds"] = statistics.median(ref)
            out[f"generator_{name}_seconds"] = statistics.median(new)
            out[f"speedup_{name}"] = out[f"teacher_{name}_seconds"] / out[f"generator_{name}_seconds"]
    return out


def differences(results: dict, reference: str) -> dict[str, tuple[float, float]]:
    """The paired held-out accuracy differences the claims rest on, ``{"stage1_minus_teacher": (value, se), ...}``
    (``reference``: the teacher's evaluation)."""
    pairs = {"stage1_minus_teacher": ("stage1", reference), "stage2_minus_teacher": ("stage2", reference),
             "stage2_minus_stage1": ("stage2", "stage1")}
    return {name: paired_difference(results[a], results[b]) for name, (a, b) in pairs.items()}


def claims(teacher: dict, stage2: dict, gains: dict, reward_names: list[str], speedup: float | None, *,
           auc: dict[str, float] | None = None, hacking_warnings: int = 0) -> dict:
    """The issue's claims, each ``{"value", "se", "threshold", "holds"}`` (and ``"at_most": True`` for a claim that
    holds at or below its threshold) from the teacher's and stage 2's summaries, the paired accuracy differences of
    :func:`differences` (``se``: standard error of a paired difference, else None), the AUC against the oracle of
    each trained differentiable reward on stage 2's samples (``auc``), and the watch's warning count. A claim
    holds when ``value >= threshold``: the stage-1 claim is checked one-sided (not more than 0.05 below the
    teacher)."""
    out = {
        "stage1_within_0.05_of_teacher": (*gains["stage1_minus_teacher"], -CLAIMS["stage1_gap"]),
        "stage2_beats_teacher_by_0.10": (*gains["stage2_minus_teacher"], CLAIMS["stage2_gain"]),
        "stage2_diversity_vs_teacher": (stage2["diversity"] / teacher["diversity"], None, CLAIMS["diversity_ratio"]),
        "stage2_held_out_not_below_stage1": (*gains["stage2_minus_stage1"], 0.0),
        "speedup_4_steps_vs_50_cfg": (speedup, None, CLAIMS["speedup"]),
    }
    for name in reward_names:
        out[f"stage2_beats_teacher_on_{name}"] = (stage2[name] - teacher[name], None, 0.0)
    for name, value in (auc or {}).items():
        out[f"stage2_{name}_auc_vs_oracle"] = (value, None, CLAIMS["reward_auc"])
    table = {k: {"value": v, "se": se, "threshold": t, "holds": v is not None and v >= t} for k, (v, se, t) in out.items()}
    table["no_reward_hacking_warning"] = {"value": float(hacking_warnings), "se": None, "threshold": 0.0,
                                          "holds": hacking_warnings == 0, "at_most": True}
    return table


TEACHER_FILE = "teacher_samples.pt"  # the teacher's held-out samples and batch timings, reusable by another run


def teacher_key(config, steps: int, held_out) -> dict:
    """What the teacher's held-out samples depend on (not the training seed): equal keys, equal samples."""
    backbone = config.backbone
    return {"teacher": str(getattr(backbone, "path", "")), "world": repr(config.world), "guidance":
            getattr(backbone, "teacher_guidance", None), "steps": steps, "eval_samples": config.run.eval_samples,
            "eval_seed": EVAL_SEED, "prompts": list(held_out.texts), "dtype": config.run.dtype}


def save_teacher(out: Path, key: dict, timed) -> None:
    torch.save({"key": key, "samples": timed.samples, "batch": timed.batch, "seconds": timed.seconds,
                "cpu_seconds": timed.cpu_seconds}, Path(out) / TEACHER_FILE)


def load_teacher(folder: Path, key: dict):
    """The teacher's samples saved by an earlier demo in ``folder`` (a one-line error if they are of another
    configuration or missing)."""
    path = Path(folder) / TEACHER_FILE
    if not path.is_file():
        raise UserError(f"{path} not found: reuse the teacher of a finished demo run (its --out folder)")
    data = torch.load(path, weights_only=True)
    if data["key"] != key:
        raise UserError(f"{path} holds the teacher's samples of another configuration: run the teacher anew")
    return TimedSamples(data["samples"], data["batch"], data["seconds"], data["cpu_seconds"])


def demo(out: Path, config_name: str, overrides: list[str], quick: bool, *,
         teacher_steps: tuple[int, ...] = TEACHER_STEPS, teacher_from: Path | None = None) -> dict:
    """The demo into ``out``. ``teacher_from``: a finished demo's folder whose teacher samples are reused (they do
    not depend on the training seed; the studies use it to run many seeds), instead of sampling the teacher."""
    start, load_start = time.perf_counter(), os.getloadavg()[0]
    shared.quiet_image_processor_fallback()
    out = Path(out)
    config = shared.demo_config(config_name, overrides, QUICK, quick)
    shared.check_out_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    num, timings, results, timed = config.run.eval_samples, {}, {}, {}
    _, device = init_distributed(config.run.device)

    def evaluate(name, parts, reuse=None, **kwargs):
        t0 = time.perf_counter()
        timed[name] = reuse or sample_timed(parts, config, num=num, seed=EVAL_SEED,
                                            prompts_per_batch=PROMPTS_PER_BATCH, **kwargs)
        results[name] = evaluation(parts, config, timed[name].samples)
        results[name]["auc_vs_oracle"] = reward_auc(parts, timed[name].samples, metadata)
        timings[f"{name}_eval_seconds"] = time.perf_counter() - t0
        s, se = results[name]["summary"], results[name]["se"]
        print(f"rtdmd demo: {name}: held-out oracle accuracy {s['accuracy']:.3f} ± {se.get('accuracy', float('nan')):.3f}"
              f" ({timings[f'{name}_eval_seconds']:.0f} s)", flush=True)

    # 1. The teacher (ODE, CFG) on the held-out prompts.
    parts = build_components(config, device)
    held_out = parts.world.prompts("eval")
    metadata = dict(zip(held_out.texts, held_out.metadata))
    for steps in teacher_steps:
        key = teacher_key(config, steps, held_out)
        reuse = load_teacher(teacher_from, key) if teacher_from is not None and steps == teacher_steps[0] else None
        evaluate(f"teacher_{steps}", parts, reuse, role="teacher", teacher_steps=steps)
        if steps == teacher_steps[0]:
            save_teacher(out, key, timed[f"teacher_{steps}"])
    reference = f"teacher_{teacher_steps[0]}"
    del parts

    # 2. Both stages, watched on the held-out prompts.
    watch = RewardHackingWatch(out / "stage2", held_out_hook(config, num, "align"), signal="accuracy")
    timings.update(shared.train_stages(config, out, evaluate_stage1=held_out_hook(config, num, "distill"),
                                       evaluate_stage2=watch,
                                       stage1_eval_every=max(1, config.distill.iterations // STAGE1_EVALS)))

    # 3. Both generators (EMA weights, from their checkpoints) on the same prompts and seeds.
    for name, stage in (("stage1", "distill"), ("stage2", "align")):
        evaluate(name, load_run(out / name, device).components, stage=stage)
    timings["total_seconds"] = time.perf_counter() - start
    timings["load_average_start"], timings["load_average_end"] = load_start, os.getloadavg()[0]

    reward_names = [r.name for r in config.rewards]
    speeds = speed(timed[reference], timed["stage2"])
    summary = {"held_out_prompts": len(results["stage2"]["prompts"]), "seeds_per_prompt": num}
    for name, result in results.items():
        summary[f"{name}_accuracy"] = result["summary"]["accuracy"]
        summary[f"{name}_accuracy_se"] = result["se"].get("accuracy")
    gains = differences(results, reference)
    for name, (value, se) in gains.items():
        summary[name], summary[f"{name}_se"] = value, se
    monitors = [m for m in MONITORED if m not in reward_names]
    summary["monitored_rewards"] = ",".join(monitors)
    for key in [*reward_names, *monitors, "reward", "diversity", "mean_intensity", "saturation", "color_entropy"]:
        summary.update({f"{name}_{key}": results[name]["summary"][key] for name in (reference, "stage1", "stage2")})
    summary.update(speeds)
    summary.update(timings)
    summary["hacking_warnings"] = len(watch.warnings)
    summary["teacher_reused_from"] = str(teacher_from or "")
    for name, result in results.items():
        summary.update({f"{name}_{r}_auc_vs_oracle": value for r, value in result["auc_vs_oracle"].items()})
    proxies = [r for r in reward_names if r in results["stage2"]["auc_vs_oracle"]]  # trained rewards but the oracle
    claim_table = claims(results[reference]["summary"], results["stage2"]["summary"], gains, reward_names,
                         speeds.get("speedup_cpu"), hacking_warnings=len(watch.warnings),
                         auc={r: results["stage2"]["auc_vs_oracle"][r] for r in proxies})
    summary["claims_hold"] = all(c["holds"] for c in claim_table.values())

    samples = {name: t.samples for name, t in timed.items()}
    shared.write_metrics(out, {"summary": summary, "claims": claim_table, "watch": watch.record(),
                               "timings": {k: {"wall": t.seconds, "cpu": t.cpu_seconds} for k, t in timed.items()},
                               **results})
    figures.write_report(out, config, results, samples, metadata, reference, summary, claim_table, watch.record())
    return summary
