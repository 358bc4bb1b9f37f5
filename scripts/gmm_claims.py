"""What the analytic world must show (fidelity issue), for every shipped world and for random unseen mixtures:

- stage 1: every component weight within 0.03 of the teacher's; energy distance to the teacher at most 0.2 x the
  teacher-to-p~ distance plus 3 noise floors;
- stage 2 (``exact``): every component weight within 0.05 of p~'s; mean reward within 10% of the teacher-to-p~
  gap; energy distance to p~ at most 0.25 x the teacher-to-p~ distance plus 3 floors.

Each criterion is checked on every prompt (the worst prompt is printed). Unseen worlds are drawn from a seed: 3-4
components of unequal weights and correlated covariances (variances 0.02-0.3) in 2-3 dimensions, one prompt per
component plus two prompts over several, a random linear or quadratic reward; they are trained with
gmm/default's training sections, unchanged.

    python scripts/gmm_claims.py --out runs/gmm_claims                  # the shipped worlds
    python scripts/gmm_claims.py --out runs/gmm_claims --unseen 3       # ... and 3 random unseen worlds
    python scripts/gmm_claims.py --out runs/gmm_claims --quick          # the pipeline, not the numbers

Writes ``OUT/gmm_claims.json`` and ``OUT/gmm_claims.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # studies/
from rtdmd.config import find_config, resolve  # noqa: E402
from studies import analytic  # noqa: E402

SHIPPED = ["gmm/default", "gmm/unequal", "gmm/ring3d", "gmm/narrow"]


def unseen_world(seed: int) -> dict:
    """A random mixture world (the ``world`` and ``reward`` sections) from ``seed``."""
    g = torch.Generator().manual_seed(10_000 + seed)
    dim = 2 + int(torch.randint(2, (1,), generator=g))
    k = 3 + int(torch.randint(2, (1,), generator=g))
    weights = -torch.log(torch.rand(k, generator=g))  # exponential draws: a Dirichlet(1) after normalising
    weights = (weights + 0.15) / (weights + 0.15).sum()
    means: list[torch.Tensor] = []
    while len(means) < k:
        m = (torch.rand(dim, generator=g) * 2 - 1) * 2.5
        if all(float((m - o).norm()) > 1.8 for o in means):
            means.append(m)
    components = []
    for i in range(k):
        variances = 0.02 + 0.28 * torch.rand(dim, generator=g) ** 2
        q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g))
        cov = q @ torch.diag(variances) @ q.T
        components.append({"weight": round(float(weights[i]), 4), "mean": [round(float(x), 3) for x in means[i]],
                           "cov": [[round(float(c), 5) for c in row] for row in (cov + cov.T) / 2]})
    prompts = {f"c{i}": [i] for i in range(k)} | {"any": list(range(k)), "pair": [0, 1]}
    if float(torch.rand(1, generator=g)) < 0.5:
        w = torch.randn(dim, generator=g)
        w = w / w.norm() * (0.6 + 0.6 * float(torch.rand(1, generator=g)))
        reward = {"kind": "linear", "w": [round(float(x), 3) for x in w]}
    else:
        center = (torch.rand(dim, generator=g) * 2 - 1) * 2
        reward = {"kind": "quadratic", "center": [round(float(x), 3) for x in center], "scale": 0.5}
    return {"world": {"kind": "gmm", "components": components, "prompts": prompts, "guidance": 1.0}, "reward": reward}


def stage1_criteria(result: dict) -> dict[str, float]:
    rows = result["prompts"].values()
    return {"weight_error": max(r["weight_error_teacher"] for r in rows),
            "ed_ratio": max((r["ed_teacher"] - 3 * r["ed_teacher_floor"]) / r["ed_teacher_to_tilted"] for r in rows)}


def measure(name: str, raw: dict, out: Path, quick: bool) -> dict:
    config = resolve(raw, [*(analytic.QUICK if quick else analytic.FULL)])
    t0 = time.perf_counter()
    stage1 = analytic.stage1(config, out / name.replace("/", "_") / "stage1")
    t1 = time.perf_counter()
    stage2 = analytic.stage2(config, out / name.replace("/", "_") / "stage2", stage1)
    t2 = time.perf_counter()
    first, second = stage1_criteria(analytic.metrics(stage1, config)), analytic.tilt_errors(analytic.metrics(stage2, config))
    row = {"world": name, "reward": raw["reward"]["kind"], "stage1_seconds": t1 - t0, "stage2_seconds": t2 - t1,
           **{f"stage1_{k}": v for k, v in first.items()}, **{f"stage2_{k}": v for k, v in second.items()}}
    row["stage1_met"] = first["weight_error"] <= 0.03 and first["ed_ratio"] <= 0.2
    row["stage2_met"] = (second["weight_error"] <= 0.05 and second["reward_error"] <= 0.10
                         and second["ed_ratio"] <= 0.25)
    print(json.dumps(row), flush=True)
    return row


def table(rows: list[dict]) -> str:
    lines = ["| world | reward | stage 1: weight error (<= 0.03) | ED excess / teacher-to-p~ (<= 0.2) | met | "
             "stage 2: weight error vs p~ (<= 0.05) | reward error / gap (<= 0.10) | ED excess / teacher-to-p~ "
             "(<= 0.25) | met | time (s) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['world']} | {r['reward']} | {r['stage1_weight_error']:.3f} | {r['stage1_ed_ratio']:.2f} | "
                     f"{'yes' if r['stage1_met'] else 'NO'} | {r['stage2_weight_error']:.3f} | "
                     f"{r['stage2_reward_error']:.2f} | {r['stage2_ed_ratio']:.2f} | {'yes' if r['stage2_met'] else 'NO'} | "
                     f"{r['stage1_seconds']:.0f} + {r['stage2_seconds']:.0f} |")
    return "\n".join(lines) + "\n\n(worst prompt of each world; 'ED excess' is the energy distance beyond 3 noise floors)\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/gmm_claims"))
    parser.add_argument("--unseen", type=int, default=0, help="also this many random unseen worlds")
    parser.add_argument("--only", default=None, help="comma-separated world names (e.g. gmm/narrow,unseen-1)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    worlds = {name: yaml.safe_load(find_config(name).read_text()) for name in SHIPPED}
    default = yaml.safe_load(find_config("gmm/default").read_text())
    for seed in range(args.unseen):
        worlds[f"unseen-{seed}"] = {**default, **unseen_world(seed)}
    if args.only:
        worlds = {k: v for k, v in worlds.items() if k in args.only.split(",")}
    rows = [measure(name, raw, args.out, args.quick) for name, raw in worlds.items()]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gmm_claims.json").write_text(json.dumps(rows, indent=1))
    (args.out / "gmm_claims.md").write_text(table(rows))
    print(table(rows))


if __name__ == "__main__":
    main()
