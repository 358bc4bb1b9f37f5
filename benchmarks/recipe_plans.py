"""The five published recipes planned on 80 GB GPUs (``rtdmd plan`` for each, without a GPU): the tables of
docs/recipes.md ("Memory on GPUs") and whether the goals of issue 15 are met.

    python -m benchmarks.recipe_plans --out docs/recipe_plans.md     # ~1-2 h on 2 shared cores (fake tensors)

Each recipe is planned as shipped (activation checkpointing on, text encoders freed, micro-batches of the published
per-GPU batch) with the published 16 sampling rounds per stage-2 step (spec 5.8), at its published GPU counts,
without checkpointing for comparison, and on the fewest GPUs; beside it the authors' layout computed the same way.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks.report import table

# Published GPU counts (stage 1, stage 2), spec 4.7 and 5.8; the recipes' batches are global, so the per-GPU
# batches follow (stage 1: 9; stage 2: SD3-M 2, SD3.5-M 9, klein 4B 6, FLUX.1-dev and klein 9B 3).
PUBLISHED_GPUS = {"sd3m": (8, 16), "sd35m": (8, 8), "flux1_dev": (8, 32), "flux2_klein_4b": (8, 16),
                  "flux2_klein_9b": (8, 32)}
OVERRIDES = ["align.sampling_rounds=16"]
MEMORY = "80GiB"
HEADROOM = 0.2
GiB = 2**30


def quiet() -> None:
    from rtdmd.commands.plan import quiet as quiet_libraries

    quiet_libraries()


def plan_recipe(name: str, log) -> dict:
    from rtdmd.app.plan.planner import Planner
    from rtdmd.app.plan.report import (
        authors_layout,
        candidate_gpus,
        fewest_gpus,
        fits,
        parse_memory,
    )
    from rtdmd.config import load_config

    memory = parse_memory(MEMORY)
    config = load_config(f"recipes/{name}", OVERRIDES)
    planner = Planner(config)
    fsdp = config.run.parallel == "fsdp"
    out = {}
    for stage, gpus in zip(("distill", "align"), PUBLISHED_GPUS[name]):
        t0 = time.time()
        on = planner.plan(stage, gpus, True)
        off = planner.plan(stage, gpus, False)
        fewest = fewest_gpus(lambda n, stage=stage: planner.plan(stage, n, True), candidate_gpus(planner, stage),
                             memory)
        authors = authors_layout(on, gpus, fsdp)
        out[stage] = {
            "gpus": gpus, "batch": on.local_batch, "micro": on.micro_batch,
            "peak": on.peak, "startup": on.startup, "needed": on.needed, "terms": on.terms,
            "peak_off": off.peak, "needed_off": off.needed,
            "fewest": fewest.gpus if fewest else None, "fewest_needed": fewest.needed if fewest else None,
            "authors": sum(authors.values()), "authors_needed": max(sum(authors.values()), on.startup),
            "fits_with_headroom": on.needed <= (1 - HEADROOM) * memory, "fits": fits(on, memory),
            "flops": on.flops, "mean_flops": on.mean_flops, "phase_peaks": on.phase_peaks, "host": on.host,
            "notes": on.notes,
        }
        log(f"{name} {stage}: {on.peak / GiB:.1f} GiB on {gpus} GPUs, fewest {out[stage]['fewest']} "
            f"({time.time() - t0:.0f} s)")
    return out


def goals(log) -> dict:
    """SD3.5-M on one GPU (both stages, accumulating over its micro-batches), FLUX.1-dev stage 2 on 8 GPUs."""
    from rtdmd.app.plan.planner import Planner
    from rtdmd.config import load_config

    sd35m = Planner(load_config("recipes/sd35m", OVERRIDES))
    flux = Planner(load_config("recipes/flux1_dev", OVERRIDES))
    out = {"sd35m_distill_1": sd35m.plan("distill", 1, True), "sd35m_align_1": sd35m.plan("align", 1, True),
           "flux1_dev_align_8": flux.plan("align", 8, True)}
    for key, plan in out.items():
        log(f"goal {key}: {plan.needed / GiB:.1f} GiB")
    return out


def gib(value) -> str:
    return "-" if value is None else f"{value / GiB:.1f}"


def render(plans: dict, goal_plans: dict) -> str:
    from rtdmd.app.plan.report import REMEDIES, parse_memory

    memory = parse_memory(MEMORY)
    rows, terms_rows = [], []
    for name, stages in plans.items():
        for stage, p in stages.items():
            headroom = 1 - p["needed"] / memory
            rows.append([name, stage, p["gpus"], f"{p['batch']}" + (f" ({p['micro']})" if p["micro"] != p["batch"] else ""),
                         gib(p["peak"]), gib(p["peak_off"]), gib(p["startup"]), f"{headroom:.0%}",
                         p["fewest"] or "none", gib(p["authors"]), f"{p['flops'] / 1e12:.0f}"])
            t = p["terms"]
            terms_rows.append([name, stage, *(gib(t[k]) for k in ("frozen base", "adapters", "gradients", "optimizer",
                                                                   "EMA", "activations", "FSDP gathered", "VAE",
                                                                   "rewards"))])
    goal_rows = []
    for name, stages in plans.items():
        for stage, p in stages.items():
            met = p["fits_with_headroom"]
            big = max(((v, k) for k, v in p["terms"].items() if k in REMEDIES), default=(0, ""))
            goal_rows.append([f"{name} {stage} on {p['gpus']} GPUs with >= 20% headroom",
                              f"{gib(p['needed'])} GiB ({1 - p['needed'] / memory:.0%})", "met" if met else "NOT met",
                              "" if met else f"largest term: {big[1]} {gib(big[0])} GiB"])
    for key, label in (("sd35m_distill_1", "SD3.5-M stage 1 on one 80 GB GPU (72 samples)"),
                       ("sd35m_align_1", "SD3.5-M stage 2 on one 80 GB GPU (72 samples per round, micro-batches of 9)"),
                       ("flux1_dev_align_8", "FLUX.1-dev stage 2 on 8 GPUs (12 per GPU, micro-batches of 3)")):
        plan = goal_plans.get(key)
        if plan is None:  # --no-goals, or a partial run
            goal_rows.append([label, "not planned", "-", ""])
            continue
        met = plan.needed <= memory * 0.95
        big = max(((v, k) for k, v in plan.terms.items() if k in REMEDIES), default=(0, ""))
        goal_rows.append([label, f"{gib(plan.needed)} GiB", "met" if met else "NOT met",
                          f"largest term: {big[1]} {gib(big[0])} GiB"])
    return "\n\n".join([
        table(["recipe", "stage", "GPUs (published)", "per GPU (micro-batch)", "peak GiB", "without checkpointing",
               "start-up GiB", "headroom", "fewest 80 GB GPUs", "authors' layout GiB", "TFLOP / GPU / iteration"],
              rows),
        table(["recipe", "stage", "frozen base", "adapters", "gradients", "optimizer", "EMA", "activations",
               "FSDP gathered", "VAE", "rewards"], terms_rows),
        table(["goal", "planned", "status", "note"], goal_rows)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="markdown file for the tables")
    parser.add_argument("--json", type=Path, default=None, help="raw figures (default: next to --out)")
    parser.add_argument("--recipes", default=",".join(PUBLISHED_GPUS), help="comma-separated recipe names")
    parser.add_argument("--no-goals", action="store_true", help="skip the goal plans (tables from the recipes only)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    quiet()
    log = lambda text: print(f"recipe_plans: {text}", flush=True)
    partial = (args.json or args.out.with_suffix(".json")) if args.out else None
    plans = json.loads(partial.read_text()).get("plans", {}) if partial and partial.exists() else {}
    for name in args.recipes.split(","):  # each recipe's figures are kept as soon as planned (a long run resumes)
        if name not in plans:
            plans[name] = plan_recipe(name, log)
            if partial:
                partial.write_text(json.dumps({"plans": plans}, indent=1, default=str))
    goal_plans = goals(log) if not args.no_goals else {}
    text = render(plans, goal_plans)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
        data = {"plans": plans, "goals": {k: {"needed": v.needed, "terms": v.terms, "startup": v.startup}
                                          for k, v in goal_plans.items()}}
        (args.json or args.out.with_suffix(".json")).write_text(json.dumps(data, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
