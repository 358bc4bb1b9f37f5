"""The fault tour of docs/training.md ("Faults tried"): an outside user's cases of issue 14, each one a real
``python -m rtdmd.cli ...`` process on the tiny analytic world, its outcome classified (exit code, a single
``rtdmd: error:`` line, a traceback). Usage: ``python scripts/fault_tour.py [WORK_DIR]`` (a few minutes; one
line per case, then the counts; WORK_DIR/results.json holds them)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.tiny import TINY  # noqa: E402

ROOT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="rtdmd_fault_tour_"))
shutil.rmtree(ROOT, ignore_errors=True)
ROOT.mkdir(parents=True)
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]), "OMP_NUM_THREADS": "1"}
CFG = ROOT / "tiny.yaml"
CFG.write_text(yaml.safe_dump(TINY, sort_keys=False))
EVERY2 = ("--set", "distill.checkpoint_every=2")
LONG = ("--set", "distill.iterations=100000")
results = []


def start(*args):
    return subprocess.Popen([sys.executable, "-m", "rtdmd.cli", *map(str, args)], env=ENV, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run(*args):
    proc = start(*args)
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


def record(name, code, out, err, expect=2):
    """One case: its exit code against the expected one, one error line or not, a traceback or not."""
    lines = [line for line in err.strip().splitlines() if line]
    traceback = "Traceback" in err or "Traceback" in out
    one_line = code == 2 and len(lines) == 1 and lines[0].startswith("rtdmd: error: ")
    results.append({"case": name, "rc": code, "traceback": traceback, "one_line": one_line, "ok_rc": code == expect,
                    "err": lines[-1] if lines else ""})
    last = lines[-1] if lines else (out.strip().splitlines() or [""])[-1]
    print(f"{name}: rc={code} tb={traceback} one={one_line} :: {last[:220]}", flush=True)


def case(name, *args, expect=2):
    record(name, *run(*args), expect=expect)


def signalled(name, proc, signum, expect):
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=300)
    record(name, proc.returncode, out, err, expect=expect)


def until_logged(run_dir, lines=1):
    """Wait until a started run has logged ``lines`` lines (it is then inside its training loop)."""
    log = run_dir / "metrics.jsonl"
    while not log.exists() or len(log.read_text().splitlines()) < lines:
        time.sleep(0.2)


def copy(src, name):
    shutil.copytree(src, ROOT / name)
    return ROOT / name


def flip(path, where=0.5):
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0xFF
    path.write_bytes(bytes(data))


def steps_once(run_dir):
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
             if "fake_loss" in line]
    return steps == list(range(1, steps[-1] + 1))


def truncate(path):
    path.write_bytes(path.read_bytes()[:999])


code, _, err = run("distill", CFG, "--out", ROOT / "s1", *EVERY2)
assert code == 0, err
code, _, err = run("align", CFG, "--from", ROOT / "s1", "--out", ROOT / "s2")
assert code == 0, err
s1, s2 = ROOT / "s1", ROOT / "s2"
(ROOT / "afile").write_text("x")

# -- 1: damaged checkpoints, then a fresh start in the same folder
r = copy(s1, "r1")
for step in (4, 6):
    flip(r / f"checkpoints/step_{step:08d}/tensors.safetensors")
case("1a resume, two newest damaged", "distill", CFG, "--out", r, "--resume", *EVERY2)
case("1b fresh start in the same --out", "distill", CFG, "--out", r, *EVERY2)
case("1c generate from it", "generate", "--run", r, "--out", ROOT / "g1c")

# -- 2: a second run while the owner trains
owner = start("distill", CFG, "--out", ROOT / "r2", *LONG, "--set", "distill.checkpoint_every=1")
until_logged(ROOT / "r2")
case("2a second run, other lr", "distill", CFG, "--out", ROOT / "r2", "--set", "distill.generator.lr=1e-2")
case("2b second run with --resume", "distill", CFG, "--out", ROOT / "r2", "--resume")
case("2c generate while it trains (newest checkpoint)", "generate", "--run", ROOT / "r2", "--out", ROOT / "g2c",
     expect=0)
signalled("2d the owner, SIGTERM", owner, signal.SIGTERM, 75)
print("2e steps once:", steps_once(ROOT / "r2"))

# -- 3: a damaged newest checkpoint, for every reader
DAMAGES = {"flipped tensors byte": lambda d: flip(d / "tensors.safetensors"),
           "truncated tensors": lambda d: truncate(d / "tensors.safetensors"),
           "deleted manifest": lambda d: (d / "manifest.json").unlink(),
           "flipped state.json byte": lambda d: flip(d / "state.json", 0.3)}
for label, damage in DAMAGES.items():
    r = copy(s1, "r3_" + label.replace(" ", "_").replace(".", ""))
    damage(r / "checkpoints/step_00000006")
    case(f"3 {label}: generate", "generate", "--run", r, "--out", ROOT / f"g_{r.name}")
    case(f"3 {label}: evaluate", "evaluate", "--run", r, "--out", ROOT / f"e_{r.name}.json")
    case(f"3 {label}: align --from", "align", CFG, "--from", r, "--out", ROOT / f"a_{r.name}")
case("3 explicit --checkpoint step_4 after damage", "generate", "--run", r, "--checkpoint", "step_4", "--out",
     ROOT / "g3ok", expect=0)
samples = np.load(ROOT / "g3ok/samples.npz")
print("3 samples.npz records:", {k: str(v) for k, v in samples.items() if k not in ("x", "prompt", "seed")})

# -- 5: stage 2 after a preempted stage 1, or from another stage 1
pre = start("distill", CFG, "--out", ROOT / "r5", *LONG)
until_logged(ROOT / "r5", 3)
signalled("5a SIGTERM stage 1", pre, signal.SIGTERM, 75)
shell = subprocess.run(f"{sys.executable} -m rtdmd.cli align {CFG} --from {ROOT / 'r5'} --out {ROOT / 'r5b'} "
                       "|| echo STOPPED", shell=True, env=ENV, capture_output=True, text=True)
record("5b align --from the preempted stage 1", 2 if "STOPPED" in shell.stdout else 0,
       shell.stdout.replace("STOPPED", ""), shell.stderr)
case("5c align --from it --allow-unfinished", "align", CFG, "--from", ROOT / "r5", "--out", ROOT / "r5c",
     "--allow-unfinished", "--set", "align.iterations=1", expect=0)
case("5d align --resume with another --from", "align", CFG, "--from", copy(s1, "r5_other"), "--out",
     copy(s2, "r5_s2"), "--resume", "--set", "align.iterations=6")

# -- 4 and 6: output paths
case("6a generate --out a file", "generate", "--run", s1, "--out", ROOT / "afile")
case("6b evaluate --out a folder (vector world)", "evaluate", "--run", s1, "--out", ROOT)
case("6c evaluate --out under a file", "evaluate", "--run", s1, "--out", ROOT / "afile/m.json")
case("6d export of an analytic run", "export", "--run", s1, "--out", ROOT / "x6d", "--format", "lora")
(ROOT / "nonempty").mkdir()
(ROOT / "nonempty/old.png").write_text("x")
case("6e generate --out non-empty", "generate", "--run", s1, "--out", ROOT / "nonempty")

# -- 8: the vague messages
case("8a directory as config", "distill", ROOT, "--out", ROOT / "x8")
case("8b run directory as config", "distill", s1, "--out", ROOT / "x8")
case("8c resume with another config", "distill", CFG, "--out", s1, "--resume", "--set", "distill.eta=0.5",
     "--set", "distill.batch_size=32")
case("8d log_every=0", "distill", CFG, "--out", ROOT / "x8", "--set", "distill.log_every=0")
case("8e backbone.kind switched", "distill", CFG, "--out", ROOT / "x8", "--set", "backbone.kind=flux1")
case("8f preset twice", "distill", CFG, "--out", ROOT / "x8", "--set", "preset=paper", "--set", "preset=exact")
killed = start("distill", CFG, "--out", ROOT / "r8", *LONG)
until_logged(ROOT / "r8", 3)
killed.kill()
killed.communicate()
case("8g rerun after SIGKILL before the first checkpoint", "distill", CFG, "--out", ROOT / "r8", expect=0)
print("8g steps once:", steps_once(ROOT / "r8"))
case("8h evaluate --prompts missing (image args on vector world)", "evaluate", "--run", s1, "--prompts",
     "nope.txt", "--out", ROOT / "e8h")
case("8i resume in a folder killed before its first checkpoint", "distill", CFG, "--out", ROOT / "r8b",
     "--resume")

# -- more of our own
case("9a --checkpoint garbage", "generate", "--run", s1, "--checkpoint", "newest", "--out", ROOT / "g9a")
case("9b --checkpoint as a path", "generate", "--run", s1, "--checkpoint", s1 / "checkpoints/step_00000004",
     "--out", ROOT / "g9b", expect=0)
case("9c align --from a stage-2 run", "align", CFG, "--from", s2, "--out", ROOT / "x9c")
case("9d align --from a missing folder", "align", CFG, "--from", ROOT / "nothing", "--out", ROOT / "x9d")
case("9e --out under a file", "distill", CFG, "--out", ROOT / "afile/run")
r = copy(s1, "r9f")
(r / "checkpoints").rename(r / "ck")
(r / "checkpoints").write_text("x")
case("9f checkpoints is a file", "distill", CFG, "--out", r, "--resume")
r = copy(s1, "r9g")
(r / "rtdmd.lock").write_text("")
case("9g empty lock file left behind", "distill", CFG, "--out", r, "--resume", "--set", "distill.iterations=8")
r = copy(s1, "r9h")
(r / "checkpoints/LATEST").write_text("step_00000099")
case("9h LATEST names a missing newer folder", "generate", "--run", r, "--out", ROOT / "g9h")
r = copy(s1, "r9i")
(r / "checkpoints/step_abc").mkdir()
case("9i a stray folder in checkpoints", "generate", "--run", r, "--out", ROOT / "g9i", expect=0)
case("9j reward-server --max-request-mb 0", "reward-server", "--reward", "linear", "--set", "w=[0,1]",
     "--max-request-mb", "0")
case("9k align --resume --from-checkpoint other than recorded", "align", CFG, "--from", s1, "--from-checkpoint",
     "step_4", "--out", copy(s2, "r9k"), "--resume", "--set", "align.iterations=6")
early = start("distill", "gmm/default", "--out", ROOT / "r9l")  # its model takes a moment to build
while not (ROOT / "r9l/rtdmd.lock").exists():
    time.sleep(0.05)
time.sleep(0.3)
signalled("9l SIGTERM while loading (before training)", early, signal.SIGTERM, 143)
print("9l lock left:", (ROOT / "r9l/rtdmd.lock").exists())
r = copy(s1, "r9m")
(r / "run.json").write_text(json.dumps({"stage": "distill"}))
case("9m align --from a run.json without 'finished' (older rtdmd)", "align", CFG, "--from", r, "--out",
     ROOT / "x9m", "--set", "align.iterations=1", expect=0)
case("9n evaluate --checkpoint with --config", "evaluate", "--config", CFG, "--role", "teacher", "--checkpoint",
     "step_4")
r = copy(s1, "r9o")
shutil.rmtree(r / "checkpoints/step_00000006")
case("9o newest folder deleted by hand", "generate", "--run", r, "--out", ROOT / "g9o")
case("10a generate twice into one --out", "generate", "--run", s1, "--out", ROOT / "g9b")
case("10b distill --resume into a stage-2 run", "distill", CFG, "--out", s2, "--resume")
interrupted = start("distill", CFG, "--out", ROOT / "r10c", *LONG)
until_logged(ROOT / "r10c", 3)
signalled("10c Ctrl-C during training", interrupted, signal.SIGINT, 130)
print("10c lock left:", (ROOT / "r10c/rtdmd.lock").exists(), "run.json:",
      json.loads((ROOT / "r10c/run.json").read_text()))
case("10d align --resume in a new folder", "align", CFG, "--from", s1, "--out", ROOT / "x10d", "--resume")
r = copy(s1, "r10e")
(r / "run.json").unlink()
case("10e generate from a run without run.json", "generate", "--run", r, "--out", ROOT / "g10e")
r = copy(s1, "r10f")
flip(r / "checkpoints/step_00000004/tensors.safetensors")
case("10f --checkpoint naming a damaged older one", "generate", "--run", r, "--checkpoint", "step_4", "--out",
     ROOT / "g10f")
case("10g distill --out an existing finished run (no --resume)", "distill", CFG, "--out", s1)
r = copy(s1, "r10h")
(r / "metrics.jsonl").unlink()
(r / "metrics.jsonl").mkdir()
case("10h metrics.jsonl is a folder", "distill", CFG, "--out", r, "--resume", "--set", "distill.iterations=8")
case("10i --set with no '='", "distill", CFG, "--out", ROOT / "x10i", "--set", "distill.iterations")
case("10j evaluate --num 0", "evaluate", "--run", s1, "--num", "0")

(ROOT / "results.json").write_text(json.dumps(results, indent=1))
print(f"cases {len(results)}, tracebacks {sum(r['traceback'] for r in results)}, one-line errors "
      f"{sum(r['one_line'] for r in results)}, unexpected exit codes {[r['case'] for r in results if not r['ok_rc']]}")
