"""The comparison table end to end on the shapes world, and its HTML page checked in a headless browser.

    python scripts/benchmark_table.py --out runs/table_demo \
        [--screenshot docs/img/benchmark_table.png] [--chromium chromium]

1. two small shapes runs through the command line (kept if ``OUT/s1`` and ``OUT/s2`` already hold checkpoints):
   ``rtdmd distill shapes/default --set distill.iterations=2`` and ``rtdmd align ... --set align.iterations=1``;
2. the table: ``rtdmd evaluate --benchmark world --benchmark geneval --limit 30 --run OUT/s1 --run OUT/s2
   --teacher-steps 50 --reward geneval=shapes_oracle --reward shapes_clip --out OUT/table`` (the shapes oracle
   plays GenEval's part; on GenEval's own prompts, whose COCO classes the shapes models cannot draw, it shows
   that the registered set is fetched, hash-checked and run through the same path, not a meaningful score);
3. Chromium, headless: a copy of ``index.html`` with a script that counts the images the browser decoded
   (``naturalWidth > 0``) is loaded with ``--dump-dom``; then a screenshot of ``index.html`` itself.

Exits with 1 when an image did not render. GenEval's prompts come through the registry: online, or offline with
``RTDMD_DATA_MIRROR`` (docs/rewards.md, "Prompt sets").
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHECK = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const decoded = images.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.setAttribute("data-images", decoded + "/" + images.length);
});
</script>"""
BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--hide-scrollbars"]


def rtdmd(*args: str) -> None:
    """One ``rtdmd`` command in its own process, as a user runs it; stop the script if it fails."""
    print("+ rtdmd " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "rtdmd.cli", *args], check=True)


def make_runs(out: Path) -> None:
    small = ["--set", "distill.iterations=2", "--set", "distill.batch_size=4", "--set", "run.progress=false",
             "--set", "run.eval_samples=1"]
    if not (out / "s1" / "checkpoints" / "LATEST").is_file():
        rtdmd("distill", "shapes/default", "--out", str(out / "s1"), *small)
    if not (out / "s2" / "checkpoints" / "LATEST").is_file():
        rtdmd("align", "shapes/default", "--from", str(out / "s1"), "--out", str(out / "s2"), *small,
              "--set", "align.iterations=1", "--set", "align.prompts_per_iteration=2", "--set", "align.group_size=4")


def browser(chromium: str, *args: str) -> str:
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run([chromium, *BROWSER_FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=120)
    return done.stdout


def decoded_images(chromium: str, page: Path) -> tuple[int, int]:
    """(images decoded, images on the page), as the browser counts them after the page's load event."""
    check = page.with_name("_browser_check.html")
    check.write_text(page.read_text(encoding="utf-8").replace("</body>", CHECK + "</body>"), encoding="utf-8")
    try:
        dom = browser(chromium, "--virtual-time-budget=10000", "--dump-dom", check.resolve().as_uri())
    finally:
        check.unlink()
    found = re.search(r'data-images="(\d+)/(\d+)"', dom)
    if found is None:
        raise SystemExit(f"the browser did not run the page's check (its output began: {dom[:200]!r})")
    return int(found[1]), int(found[2])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--screenshot", type=Path, default=None, help="PNG of the page (e.g. docs/img/...)")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    parser.add_argument("--window", default="1200,900", help="browser window WIDTH,HEIGHT for the screenshot")
    parser.add_argument("--teacher-steps", default="50")
    args = parser.parse_args()
    make_runs(args.out)
    table = args.out / "table"
    rtdmd("evaluate", "--benchmark", "world", "--benchmark", "geneval", "--limit", "30", "--grid", "4",
          "--run", str(args.out / "s1"), "--run", str(args.out / "s2"), "--teacher-steps", args.teacher_steps,
          "--reward", "geneval=shapes_oracle", "--reward", "shapes_clip", "--out", str(table))
    decoded, total = decoded_images(args.chromium, table / "index.html")
    print(f"browser: {decoded} of {total} images decoded")
    if args.screenshot is not None:
        args.screenshot.parent.mkdir(parents=True, exist_ok=True)
        browser(args.chromium, f"--window-size={args.window}", f"--screenshot={args.screenshot.resolve()}",
                (table / "index.html").resolve().as_uri())
        print(f"wrote {args.screenshot}")
    return 0 if total and decoded == total else 1


if __name__ == "__main__":
    sys.exit(main())
