"""The fault tour of docs/training.md ("Faults tried"): an outside user's cases of issue 14, each one a real
``python -m rtdmd.cli ...`` process on the tiny analytic world, its outcome classified (exit code, one error
line, traceback). Usage: ``python scripts/fault_tour.py [WORK_DIR]`` (a few minutes; prints one line per case
and the counts; writes WORK_DIR/results.json)."""
import json, os, shutil, signal, subprocess, sys, tempfile, time
from pathlib import Path
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.tiny import TINY  # noqa: E402

ROOT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="rtdmd_fault_tour_"))
shutil.rmtree(ROOT, ignore_errors=True); ROOT.mkdir(parents=True)
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]), "OMP_NUM_THREADS": "1"}
PY = sys.executable
CFG = ROOT / "tiny.yaml"; CFG.write_text(yaml.safe_dump(TINY, sort_keys=False))
results = []

def cli(*args, wait=True, **kw):
    p = subprocess.Popen([PY, "-m", "rtdmd.cli", *map(str, args)], env=ENV, cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, **kw)
    if not wait:
        return p
    out, err = p.communicate(timeout=300)
    return p.returncode, out, err

def record(name, rc, out, err, expect_rc=2):
    lines = [l for l in err.strip().splitlines() if l]
    tb = "Traceback" in err or "Traceback" in out
    one = rc == 2 and len(lines) == 1 and lines[0].startswith("rtdmd: error: ")
    results.append({"case": name, "rc": rc, "traceback": tb, "one_line": one, "err": lines[-1] if lines else "",
                    "ok_rc": rc == expect_rc})
    print(f"{name}: rc={rc} tb={tb} one={one} :: {(lines[-1] if lines else out.strip().splitlines()[-1] if out.strip() else '')[:220]}", flush=True)

def flip(p, where=0.5):
    b = bytearray(p.read_bytes()); b[int(len(b) * where)] ^= 0xFF; p.write_bytes(bytes(b))

def stage1(name, *sets):
    rc, out, err = cli("distill", CFG, "--out", ROOT / name, "--set", "distill.checkpoint_every=2", *sets)
    assert rc == 0, err
    return ROOT / name

s1 = stage1("s1")
rc, out, err = cli("align", CFG, "--from", s1, "--out", ROOT / "s2"); assert rc == 0, err
s2 = ROOT / "s2"
def copy(src, name): shutil.copytree(src, ROOT / name); return ROOT / name

# -- reproduction 1
r = copy(s1, "r1")
for st in (4, 6): flip(r / f"checkpoints/step_0000000{st}/tensors.safetensors")
record("1a resume, two newest damaged", *cli("distill", CFG, "--out", r, "--resume", "--set", "distill.checkpoint_every=2"))
record("1b fresh start in the same --out", *cli("distill", CFG, "--out", r, "--set", "distill.checkpoint_every=2"))
record("1c generate from it", *cli("generate", "--run", r, "--out", ROOT / "g1c"))
# -- reproduction 2 (two runs) - live owner
owner = cli("distill", CFG, "--out", ROOT / "r2", "--set", "distill.iterations=100000", "--set", "distill.checkpoint_every=1", wait=False)
while not (ROOT / "r2" / "metrics.jsonl").exists(): time.sleep(0.2)
record("2a second run, other lr", *cli("distill", CFG, "--out", ROOT / "r2", "--set", "distill.generator.lr=1e-2"))
record("2b second run with --resume", *cli("distill", CFG, "--out", ROOT / "r2", "--resume"))
record("2c generate while it trains (newest checkpoint)", *cli("generate", "--run", ROOT / "r2", "--out", ROOT / "g2c"), expect_rc=0)
owner.send_signal(signal.SIGTERM); out, err = owner.communicate()
record("2d the owner, SIGTERM", owner.returncode, out, err, expect_rc=75)
steps = [json.loads(l)["step"] for l in (ROOT / "r2/metrics.jsonl").read_text().splitlines() if "fake_loss" in l]
print("2e steps once:", steps == list(range(1, steps[-1] + 1)))
# -- reproduction 3
for label, damage in [("flipped tensors byte", lambda d: flip(d / "tensors.safetensors")),
                      ("truncated tensors", lambda d: (d / "tensors.safetensors").write_bytes((d / "tensors.safetensors").read_bytes()[:999])),
                      ("deleted manifest", lambda d: (d / "manifest.json").unlink()),
                      ("flipped state.json byte", lambda d: flip(d / "state.json", 0.3))]:
    r = copy(s1, "r3_" + label.replace(" ", "_").replace(".", ""))
    damage(r / "checkpoints/step_00000006")
    record(f"3 {label}: generate", *cli("generate", "--run", r, "--out", ROOT / f"g_{r.name}"))
    record(f"3 {label}: evaluate", *cli("evaluate", "--run", r, "--out", ROOT / f"e_{r.name}.json"))
    record(f"3 {label}: align --from", *cli("align", CFG, "--from", r, "--out", ROOT / f"a_{r.name}"))
record("3 explicit --checkpoint step_4 after damage", *cli("generate", "--run", r, "--checkpoint", "step_4", "--out", ROOT / "g3ok"), expect_rc=0)
import numpy as np
print("3 samples.npz records:", {k: str(v) for k, v in np.load(ROOT / "g3ok/samples.npz").items() if k not in ("x", "prompt", "seed")})
# -- reproduction 5
pre = cli("distill", CFG, "--out", ROOT / "r5", "--set", "distill.iterations=100000", "--set", "distill.checkpoint_every=0", wait=False)
while not (ROOT / "r5" / "metrics.jsonl").exists() or len((ROOT / "r5/metrics.jsonl").read_text().splitlines()) < 3: time.sleep(0.2)
pre.send_signal(signal.SIGTERM); out, err = pre.communicate()
record("5a SIGTERM stage 1", pre.returncode, out, err, expect_rc=75)
shell = subprocess.run(f"{PY} -m rtdmd.cli align {CFG} --from {ROOT/'r5'} --out {ROOT/'r5b'} || echo STOPPED", shell=True, env=ENV, capture_output=True, text=True)
record("5b align --from the preempted stage 1", 2 if "STOPPED" in shell.stdout else 0, shell.stdout.replace("STOPPED", ""), shell.stderr)
record("5c align --from it --allow-unfinished", *cli("align", CFG, "--from", ROOT / "r5", "--out", ROOT / "r5c", "--allow-unfinished", "--set", "align.iterations=1"), expect_rc=0)
other = copy(s1, "r5_other")
r = copy(s2, "r5_s2")
record("5d align --resume with another --from", *cli("align", CFG, "--from", other, "--out", r, "--resume", "--set", "align.iterations=6"))
# -- reproduction 4/6: outputs
(ROOT / "afile").write_text("x")
record("6a generate --out a file", *cli("generate", "--run", s1, "--out", ROOT / "afile"))
record("6b evaluate --out a folder (vector world)", *cli("evaluate", "--run", s1, "--out", ROOT))
record("6c evaluate --out under a file", *cli("evaluate", "--run", s1, "--out", ROOT / "afile/m.json"))
record("6d export of an analytic run", *cli("export", "--run", s1, "--out", ROOT / "x6d", "--format", "lora"))
(ROOT / "nonempty").mkdir(); (ROOT / "nonempty/old.png").write_text("x")
record("6e generate --out non-empty", *cli("generate", "--run", s1, "--out", ROOT / "nonempty"))
# -- point 8 and more
record("8a directory as config", *cli("distill", ROOT, "--out", ROOT / "x8"))
record("8b run directory as config", *cli("distill", s1, "--out", ROOT / "x8"))
record("8c resume with another config", *cli("distill", CFG, "--out", s1, "--resume", "--set", "distill.eta=0.5", "--set", "distill.batch_size=32"))
record("8d log_every=0", *cli("distill", CFG, "--out", ROOT / "x8", "--set", "distill.log_every=0"))
record("8e backbone.kind switched", *cli("distill", CFG, "--out", ROOT / "x8", "--set", "backbone.kind=flux1"))
record("8f preset twice", *cli("distill", CFG, "--out", ROOT / "x8", "--set", "preset=paper", "--set", "preset=exact"))
killed = cli("distill", CFG, "--out", ROOT / "r8", "--set", "distill.iterations=100000", "--set", "distill.checkpoint_every=0", wait=False)
while not (ROOT / "r8" / "metrics.jsonl").exists() or len((ROOT / "r8/metrics.jsonl").read_text().splitlines()) < 3: time.sleep(0.2)
killed.kill(); killed.communicate()
record("8g rerun after SIGKILL before the first checkpoint", *cli("distill", CFG, "--out", ROOT / "r8"), expect_rc=0)
steps = [json.loads(l)["step"] for l in (ROOT / "r8/metrics.jsonl").read_text().splitlines() if "fake_loss" in l]
print("8g steps once:", steps == list(range(1, 7)))
record("8h evaluate --prompts missing (image args on vector world)", *cli("evaluate", "--run", s1, "--prompts", "nope.txt", "--out", ROOT / "e8h"))
record("8i resume in a folder killed before its first checkpoint", *cli("distill", CFG, "--out", ROOT / "r8b", "--resume"))
# -- more of my own
record("9a --checkpoint garbage", *cli("generate", "--run", s1, "--checkpoint", "newest", "--out", ROOT / "g9a"))
record("9b --checkpoint as a path", *cli("generate", "--run", s1, "--checkpoint", s1 / "checkpoints/step_00000004", "--out", ROOT / "g9b"), expect_rc=0)
record("9c align --from a stage-2 run", *cli("align", CFG, "--from", s2, "--out", ROOT / "x9c"))
record("9d align --from a missing folder", *cli("align", CFG, "--from", ROOT / "nothing", "--out", ROOT / "x9d"))
record("9e --out under a file", *cli("distill", CFG, "--out", ROOT / "afile/run"))
r = copy(s1, "r9f"); (r / "checkpoints").rename(r / "ck"); (r / "checkpoints").write_text("x")
record("9f checkpoints is a file", *cli("distill", CFG, "--out", r, "--resume"))
r = copy(s1, "r9g"); (r / "rtdmd.lock").write_text("")
record("9g empty lock file left behind", *cli("distill", CFG, "--out", r, "--resume", "--set", "distill.iterations=8"))
r = copy(s1, "r9h"); (r / "checkpoints/LATEST").write_text("step_00000099")
record("9h LATEST names a missing newer folder", *cli("generate", "--run", r, "--out", ROOT / "g9h"))
r = copy(s1, "r9i"); (r / "checkpoints/step_abc").mkdir()
record("9i a stray folder in checkpoints", *cli("generate", "--run", r, "--out", ROOT / "g9i"), expect_rc=0)
record("9j reward-server --max-request-mb 0", *cli("reward-server", "--reward", "linear", "--set", "w=[0,1]", "--max-request-mb", "0"))
r = copy(s2, "r9k")
record("9k align --resume --from-checkpoint other than recorded", *cli("align", CFG, "--from", s1, "--from-checkpoint", "step_4", "--out", r, "--resume", "--set", "align.iterations=6"))
early = cli("distill", "gmm/default", "--out", ROOT / "r9l", wait=False)
while not (ROOT / "r9l/rtdmd.lock").exists(): time.sleep(0.05)
time.sleep(0.3); early.send_signal(signal.SIGTERM); out, err = early.communicate()
record("9l SIGTERM while loading (before training)", early.returncode, out, err, expect_rc=143)
print("9l lock left:", (ROOT / "r9l/rtdmd.lock").exists())
r = copy(s1, "r9m"); (r / "run.json").write_text(json.dumps({"stage": "distill"}))
record("9m align --from a run.json without 'finished' (older rtdmd)", *cli("align", CFG, "--from", r, "--out", ROOT / "x9m", "--set", "align.iterations=1"), expect_rc=0)
record("9n evaluate --checkpoint with --config", *cli("evaluate", "--config", CFG, "--role", "teacher", "--checkpoint", "step_4"))
r = copy(s1, "r9o"); shutil.rmtree(r / "checkpoints/step_00000006/"); 
record("9o newest folder deleted by hand", *cli("generate", "--run", r, "--out", ROOT / "g9o"))
record("10a generate twice into one --out", *cli("generate", "--run", s1, "--out", ROOT / "g9b"))
record("10b distill --resume into a stage-2 run", *cli("distill", CFG, "--out", s2, "--resume"))
intr = cli("distill", CFG, "--out", ROOT / "r10c", "--set", "distill.iterations=100000", wait=False)
while not (ROOT / "r10c" / "metrics.jsonl").exists() or len((ROOT / "r10c/metrics.jsonl").read_text().splitlines()) < 3: time.sleep(0.2)
intr.send_signal(signal.SIGINT); out, err = intr.communicate()
record("10c Ctrl-C during training", intr.returncode, out, err, expect_rc=130)
print("10c lock left:", (ROOT / "r10c/rtdmd.lock").exists(), "finished:", json.loads((ROOT / "r10c/run.json").read_text()))
record("10d align --resume in a new folder", *cli("align", CFG, "--from", s1, "--out", ROOT / "x10d", "--resume"))
r = copy(s1, "r10e"); (r / "run.json").unlink()
record("10e generate from a run without run.json", *cli("generate", "--run", r, "--out", ROOT / "g10e"))
r = copy(s1, "r10f"); flip(r / "checkpoints/step_00000004/tensors.safetensors")
record("10f --checkpoint naming a damaged older one", *cli("generate", "--run", r, "--checkpoint", "step_4", "--out", ROOT / "g10f"))
record("10g distill --out an existing finished run (no --resume)", *cli("distill", CFG, "--out", s1))
r = copy(s1, "r10h"); (r / "metrics.jsonl").unlink(); (r / "metrics.jsonl").mkdir()
record("10h metrics.jsonl is a folder", *cli("distill", CFG, "--out", r, "--resume", "--set", "distill.iterations=8"))
record("10i --set with no '='", *cli("distill", CFG, "--out", ROOT / "x10i", "--set", "distill.iterations"))
record("10j evaluate --num 0", *cli("evaluate", "--run", s1, "--num", "0"))
json.dump(results, open(ROOT / "results.json", "w"), indent=1)
bad_rc = [r["case"] for r in results if not r["ok_rc"]]
print("cases", len(results), "tracebacks", sum(r["traceback"] for r in results), "one-line errors", sum(r["one_line"] for r in results), "unexpected rc", bad_rc)
