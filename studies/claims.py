"""The paper's claims, decided over seeds where the truth is known (issue 13):

    python -m studies.claims                     # every claim (an hour or more on a 2-core CPU)
    python -m studies.claims --only 2,4          # some of them
    python -m studies.claims --quick --out DIR   # a few iterations per arm: the pipeline, not the numbers (CI)

Each claim trains its arms with the library's own trainers and configs (``rtdmd distill`` / ``rtdmd align`` runs
on shipped configs with overrides; runs are cached under ``--out``, so an interrupted study resumes), and reports
per-seed values, the paired difference that decides it and a plain verdict. Writes ``OUT/claims.json`` and the
markdown page (``docs/claims.md`` for a full run; ``OUT/claims.md`` with ``--quick``)."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
from pathlib import Path

from studies.common import Claim, Row, markdown

MODULES = {1: "studies.fake_tracking", 2: "studies.estimator_variance", 3: "studies.hybrid", 4: "studies.tilt",
           5: "studies.shapes"}
DOCS = Path(__file__).resolve().parents[1] / "docs" / "claims.md"
HEADER = """# The paper's claims, with seeds

Each claim below is decided over seeds (mean ± standard error over seeds; the paired difference of the arms that
decide it, the same seeds in every arm). `python -m studies.claims` reproduces the page; every arm is an
`rtdmd distill` / `rtdmd align` run of a shipped config with `--set` overrides. Where a claim does not reproduce
in our worlds the verdict says so.

"""


def main(argv: list[str] | None = None) -> list[Claim]:
    parser = argparse.ArgumentParser(prog="python -m studies.claims", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/claims"))
    parser.add_argument("--quick", action="store_true", help="a few iterations per arm (CI): not the numbers")
    parser.add_argument("--only", default=",".join(map(str, MODULES)), help="comma-separated claim numbers")
    args = parser.parse_args(argv)
    numbers = [int(n) for n in args.only.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    record = args.out / "claims.json"
    claims, done = [], {}
    for number in numbers:
        claim = importlib.import_module(MODULES[number]).run(args.out, args.quick)
        claims.append(claim)
        # read back just before writing: another study process may have recorded its claims meanwhile
        done = json.loads(record.read_text()) if record.exists() else {}
        if str(number) in done:  # a study read back from its cached runs takes less time than training them did
            claim.seconds = max(claim.seconds, done[str(number)]["seconds"])
        done[str(number)] = dataclasses.asdict(claim)
        record.write_text(json.dumps(done, indent=1))
        print(markdown(claim), flush=True)
    page = HEADER + "\n".join(markdown(restore(done[k])) for k in sorted(done, key=int))
    (args.out / "claims.md").write_text(page)
    if not args.quick:
        DOCS.write_text(page)
    return claims


def restore(data: dict) -> Claim:
    rows = [Row(**{**r, "decision": tuple(r["decision"]) if r["decision"] else None}) for r in data["rows"]]
    return Claim(**{**data, "rows": rows})


if __name__ == "__main__":
    main()
