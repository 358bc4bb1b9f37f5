"""Claim 5, the image claim on the shapes world: the 4-step stage-2 generator beats the 50-step CFG teacher and the
4-step stage-1 generator on held-out prompts, on the trained reward and on the held-out oracle, with within-prompt
diversity at least 80% of the teacher's, over training seeds.

Every seed is one run of the demo's own pipeline (:func:`rtdmd.demo.shapes.demo`, what ``rtdmd demo --set
run.seed=S`` runs): the teacher, stage 1 and stage 2 evaluated on the held-out prompts with the same evaluation
seeds. A seed whose folder already holds ``metrics.json`` is read back, not retrained, so that ``--demo-seeds 10``
reuses the claim's five seeds.

    python -m studies.shapes --out runs/study_shapes            # claim 5: five seeds (~40 min here)
    python -m studies.shapes --out runs/study_shapes --demo-seeds 10   # rtdmd demo for ten seeds, its claims counted
    python -m studies.shapes --out /tmp/s --quick               # CI: two seeds, a few iterations each
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from rtdmd.demo import shapes as shapes_demo
from rtdmd.worlds.shapes import ASSETS
from rtdmd.worlds.shapes.prompts import TAGS
from studies.common import Claim, Row, markdown, mean, standard_error

SEEDS = (0, 1, 2, 3, 4)
QUICK_SEEDS = (0, 1)
CONFIG = "shapes/default"
# What the issue asks of claim 5.
MIN_SHARE_ABOVE_STAGE1 = 0.8  # of the seeds: 4 of 5
MIN_GAIN_OVER_STAGE1 = 0.03
MIN_GAIN_OVER_TEACHER = 0.10
MIN_DIVERSITY_RATIO = 0.80
MIN_AUC = 0.95
STAGE1_BEFORE = (0.63, 0.67)  # stage 1's held-out oracle accuracy in the runs before this study (docs/shapes_world.md)
QUICK_OVERRIDES = ("distill.iterations=2", "distill.batch_size=4", "distill.fake_update_ratio=1",
                   "align.iterations=2", "align.prompts_per_iteration=2", "align.group_size=2",
                   "run.eval_every=1", "run.eval_samples=2")
QUICK_TEACHER_STEPS = (6,)


def quick_prompts(out: Path) -> Path:
    """One held-out prompt per tag (the quick form's held-out set)."""
    rows = [json.loads(line) for line in (ASSETS / "eval.jsonl").read_text().splitlines()]
    path = out / "held_out_quick.jsonl"
    path.write_text("".join(json.dumps(next(r for r in rows if r["tag"] == tag)) + "\n" for tag in TAGS))
    return path


def run_seed(out: Path, seed: int, quick: bool = False) -> dict:
    """The demo for one training seed in ``out/seed_S`` (read back when it already ran): its ``metrics.json``. The
    teacher's held-out samples do not depend on the training seed: the first seed's are reused by the others."""
    folder = out / f"seed_{seed}"
    metrics = folder / "metrics.json"
    if not metrics.is_file():
        overrides = [f"run.seed={seed}", "run.progress=false"]
        first = next((f for f in sorted(out.glob("seed_*")) if (f / shapes_demo.TEACHER_FILE).is_file()), None)
        kwargs = {"teacher_from": first}
        if quick:
            overrides = [*QUICK_OVERRIDES, f"world.eval_prompts={quick_prompts(out)}", *overrides]
            kwargs["teacher_steps"] = QUICK_TEACHER_STEPS
        shapes_demo.demo(folder, CONFIG, overrides, quick=False, **kwargs)
    return json.loads(metrics.read_text())


def per_seed(runs: list[dict]) -> dict[str, list[float]]:
    """The per-seed numbers the rows are made of."""
    reference = next(k for k in runs[0] if k.startswith("teacher_"))
    trained = [k for k in runs[0]["stage2"]["auc_vs_oracle"] if f"stage2_beats_teacher_on_{k}" in runs[0]["claims"]]
    values: dict[str, list[float]] = {}

    def add(key, value):
        values.setdefault(key, []).append(value)

    for m in runs:
        for name in (reference, "stage1", "stage2"):
            add(f"{name}_accuracy", m[name]["summary"]["accuracy"])
            add(f"{name}_diversity", m[name]["summary"]["diversity"])
            prompts = m[name]["prompts"].values()  # same number of images per prompt: the image-level acceptance
            add(f"{name}_acceptance", mean([p["accuracy"] for p in prompts]))
            for reward in trained:
                add(f"{name}_{reward}", m[name]["summary"][reward])
                add(f"{name}_{reward}_auc", m[name]["auc_vs_oracle"][reward])
        add("diversity_ratio", m["stage2"]["summary"]["diversity"] / m[reference]["summary"]["diversity"])
        add("hacking_warnings", float(m["summary"]["hacking_warnings"]))
        add("demo_claims_hold", float(m["summary"]["claims_hold"]))
        add("seconds", m["summary"]["total_seconds"])
    values["_reference"], values["_trained"] = [reference], trained
    return values


def _gain_verdict(diffs: list[float], minimum: float, min_seeds: int | None) -> str:
    m, se = mean(diffs), standard_error(diffs)
    above = sum(d > 0 for d in diffs)
    parts = [f"mean {m:+.3f} ± {se:.3f} (needs >= {minimum:+.2f}, s.e. below half of it)"]
    ok = m >= minimum and se < m / 2
    if min_seeds is not None:
        parts.append(f"above in {above} of {len(diffs)} seeds (needs {min_seeds})")
        ok = ok and above >= min_seeds
    return ("holds: " if ok else "does not hold: ") + "; ".join(parts)


def rows(values: dict[str, list[float]]) -> list[Row]:
    """One row per statement of claim 5, each with its verdict."""
    ref, trained = values["_reference"][0], values["_trained"]
    s1, s2, teacher = values["stage1_accuracy"], values["stage2_accuracy"], values[f"{ref}_accuracy"]
    n = len(s1)
    out = [
        Row("stage 2 above stage 1 on held-out prompts", "oracle accuracy (mean of tags)",
            {"stage1": s1, "stage2": s2}, ("stage2", "stage1"),
            _gain_verdict([b - a for a, b in zip(s1, s2)], MIN_GAIN_OVER_STAGE1, math.ceil(MIN_SHARE_ABOVE_STAGE1 * n))),
        Row("stage 2 above the 50-step CFG teacher by 0.10", "oracle accuracy (mean of tags)",
            {"teacher": teacher, "stage2": s2}, ("stage2", "teacher"),
            _gain_verdict([b - a for a, b in zip(teacher, s2)], MIN_GAIN_OVER_TEACHER, None)),
        Row("stage 2 keeps 80% of the teacher's within-prompt diversity", "diversity ratio stage 2 / teacher",
            {"ratio": values["diversity_ratio"]}, None,
            ("holds" if min(values["diversity_ratio"]) >= MIN_DIVERSITY_RATIO else "does not hold")
            + f": lowest seed {min(values['diversity_ratio']):.2f} (needs >= {MIN_DIVERSITY_RATIO})"),
        Row("stage 1 as good as before the study (same budget)", "oracle accuracy (mean of tags)",
            {"stage1": s1}, None,
            ("holds" if mean(s1) >= STAGE1_BEFORE[0] else "does not hold")
            + f": mean {mean(s1):.3f} against {STAGE1_BEFORE[0]:.2f}-{STAGE1_BEFORE[1]:.2f} before"),
    ]
    for reward in trained:
        auc1, auc2 = values[f"stage1_{reward}_auc"], values[f"stage2_{reward}_auc"]
        out.append(Row(f"{reward} stays a faithful proxy of the oracle after training on it",
                       "AUC against the oracle's verdicts on held-out samples", {"stage1": auc1, "stage2": auc2},
                       ("stage2", "stage1"),
                       ("holds" if min(auc2) >= MIN_AUC else "does not hold")
                       + f": lowest stage-2 seed {min(auc2):.3f} (needs >= {MIN_AUC})"))
        r1, r2 = values[f"stage1_{reward}"], values[f"stage2_{reward}"]
        rose = mean([b - a for a, b in zip(r1, r2)])
        falls = {name: [b - a for a, b in zip(values[f"stage1_{key}"], values[f"stage2_{key}"])]
                 for name, key in (("oracle accuracy", "accuracy"), ("oracle acceptance", "acceptance"))}
        # Hacked: the trained reward rises while the held-out oracle falls by more than two standard errors.
        hacked = rose > 0 and any(mean(d) + 2 * standard_error(d) < 0 for d in falls.values())
        out.append(Row(f"no hacking: {reward} rises and the held-out oracle does not fall", f"held-out {reward}",
                       {"stage1": r1, "stage2": r2}, ("stage2", "stage1"),
                       ("does not hold (hacked)" if hacked else "holds (no significant fall of the oracle)")
                       + f": {reward} {rose:+.3f}; "
                       + "; ".join(f"{name} {mean(d):+.3f} ± {standard_error(d):.3f}" for name, d in falls.items())
                       + f"; watch warnings in {sum(w > 0 for w in values['hacking_warnings'])} of {n} seeds"))
        out.append(Row("held-out oracle acceptance (fraction of images accepted; what the soft oracle estimates)",
                       "oracle acceptance", {"teacher": values[f"{ref}_acceptance"],
                                             "stage1": values["stage1_acceptance"],
                                             "stage2": values["stage2_acceptance"]}, ("stage2", "stage1"),
                       "reported beside the claim (the issue decides on the mean of tags)"))
    return out


def run(out: Path, quick: bool = False, seeds: tuple[int, ...] | None = None) -> Claim:
    """Claim 5 over ``seeds`` (five; ``quick``: two, a few iterations each)."""
    start = time.perf_counter()
    seeds = seeds or (QUICK_SEEDS if quick else SEEDS)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = [run_seed(out, seed, quick) for seed in seeds]
    values = per_seed(runs)
    seconds = max(time.perf_counter() - start, sum(values["seconds"]))  # the seeds' own time when read back
    claim = Claim(5, "the image claim (shapes world): stage 2 beats the teacher and stage 1 on held-out prompts",
                  rows(values), seconds=seconds,
                  command="python -m studies.claims --only 5" + (" --quick" if quick else ""))
    claim.notes.append(f"Seeds {', '.join(map(str, seeds))}; each seed is one `rtdmd demo --set run.seed=S` "
                       f"(`{CONFIG}`); held-out prompts and evaluation seeds are the same for every model and seed.")
    return claim


def demo_seeds(out: Path, count: int) -> tuple[int, list[dict]]:
    """``rtdmd demo`` for seeds ``0 .. count-1`` (reusing seeds already run): how many met all their claims, and
    per seed ``{"seed", "claims_hold", "failed"}``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = []
    for seed in range(count):
        m = run_seed(out, seed)
        failed = [name for name, c in m["claims"].items() if not c["holds"]]
        table.append({"seed": seed, "claims_hold": not failed, "failed": failed,
                      "seconds": m["summary"]["total_seconds"]})
    return sum(r["claims_hold"] for r in table), table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studies.shapes", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="two seeds, a few iterations each (CI)")
    parser.add_argument("--demo-seeds", type=int, default=0, metavar="N",
                        help="instead of the claim: run rtdmd demo for seeds 0..N-1 and count the runs whose claims hold")
    args = parser.parse_args(argv)
    if args.demo_seeds:
        held, table = demo_seeds(args.out, args.demo_seeds)
        for r in table:
            print(f"seed {r['seed']}: {'all claims hold' if r['claims_hold'] else 'fails ' + ', '.join(r['failed'])}"
                  f" ({r['seconds']:.0f} s)")
        print(f"rtdmd demo met its claims in {held} of {len(table)} seeds")
        (args.out / "demo_seeds.json").write_text(json.dumps({"held": held, "seeds": table}, indent=1))
        return 0
    claim = run(args.out, args.quick)
    text = markdown(claim)
    (args.out / "claim5.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
