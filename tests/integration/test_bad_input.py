"""Bad input through the command line: each case ends with exit code 2 and one line ``rtdmd: error: ...``, never
a traceback; configuration problems are found before any model is built (the registry's builders are made to
fail for those cases, so a check that came too late would show up as an AssertionError)."""

import json
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

from rtdmd import registry
from rtdmd.cli import main
from tests.tiny import TINY
from tests.train.multiprocess import REPO, child_env

pytestmark = [pytest.mark.integration, pytest.mark.multiprocess]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_input")
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY, sort_keys=False))
    clip = {k: v for k, v in TINY.items() if k != "reward"}
    clip["rewards"] = [TINY["reward"], {"kind": "clipscore", "path": str(root / "no_clip_here")}]
    (root / "clip.yaml").write_text(yaml.safe_dump(clip, sort_keys=False))
    assert main(["distill", str(config), "--out", str(root / "s1")]) == 0
    return root


@pytest.fixture
def no_models(monkeypatch):
    def builder(section, kind):
        raise AssertionError(f"a {section} was built before the input was checked")

    monkeypatch.setattr(registry, "builder", builder)


def error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rtdmd: error: "), lines
    return lines[0]


def run(args, files, tmp_path):
    return main([str(a).format(cfg=files / "tiny.yaml", s1=files / "s1", root=files, tmp=tmp_path) for a in args])


@pytest.mark.parametrize("args, env, message", [
    (["distill", "{cfg}", "--out", "{tmp}/x", "--set", "distill.batch_size=15"], {"WORLD_SIZE": "2"},
     "distill.batch_size (15) must be divisible by the number of processes (2): use a multiple of 2, e.g. 16"),
    (["align", "{cfg}", "--from", "{s1}", "--out", "{tmp}/x", "--set", "align.group_size=3",
      "--set", "align.prompts_per_iteration=3"], {"WORLD_SIZE": "2"},
     "(3 x 3 = 9) must be divisible by the number of processes (2)"),
    (["align", "{cfg}", "--from", "{s1}", "--out", "{tmp}/x", "--set", "align.step_list=[1000,750,500]"], {},
     "differs from the step list the stage-1 generator was distilled for ([1000, 750, 500, 250])"),
    (["align", "{cfg}", "--from", "{s1}", "--out", "{tmp}/x", "--set", "backbone.hidden=8"], {},
     "was trained with another world or backbone"),
    (["distill", "{cfg}", "--out", "{tmp}/x", "--set", "run.device=gpu"], {}, "run.device 'gpu' is not a torch device"),
    (["distill", "{root}/clip.yaml", "--out", "{tmp}/x"], {}, "reward 'clipscore': "),
    (["distill", "{cfg}", "--out", "{s1}", "--resume", "--set", "distill.eta=0.5"], {},
     "was trained with (distill.eta: 0.9 -> 0.5): resume with its own configuration"),
    (["distill", "{cfg}", "--out", "{s1}"], {}, "already holds checkpoints (newest: step_00000006): pass --resume"),
    (["distill", "{cfg}", "--out", "{cfg}"], {}, "is a file, not a run directory"),
    (["distill", "{cfg}", "--out", "{tmp}/x", "--set", "world.components.5.cov=1"], {},
     "index 5 is out of range (the list has 2 entries)"),
    (["distill", "{cfg}", "--out", "{tmp}/x"], {"WORLD_SIZE": "2", "RANK": "0"}, "MASTER_ADDR, MASTER_PORT not set"),
])
def test_checked_before_any_model_is_built(files, tmp_path, monkeypatch, capsys, no_models, args, env, message):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert run(args, files, tmp_path) == 2
    assert message in error_line(capsys)
    assert not (tmp_path / "x").exists()


def test_cuda_requested_without_cuda(files, tmp_path, monkeypatch, capsys, no_models):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert run(["distill", "{cfg}", "--out", "{tmp}/x", "--set", "run.device=cuda"], files, tmp_path) == 2
    assert "run.device is 'cuda' but CUDA is not available here" in error_line(capsys)


def corrupt(run_dir):
    (tensors,) = (run_dir / "checkpoints").glob("step_*/tensors.safetensors")
    data = bytearray(tensors.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tensors.write_bytes(bytes(data))


def test_damaged_runs(files, tmp_path, capsys):
    damaged = tmp_path / "damaged"
    shutil.copytree(files / "s1", damaged)
    corrupt(damaged)
    damage = "step_00000006 is damaged (tensors.safetensors does not match its sha256 in the manifest); no intact"
    assert run(["align", "{cfg}", "--from", damaged, "--out", "{tmp}/x"], files, tmp_path) == 2
    assert damage in error_line(capsys)
    assert run(["generate", "--run", damaged, "--out", "{tmp}/g"], files, tmp_path) == 2
    assert damage in error_line(capsys)
    assert run(["distill", "{cfg}", "--out", damaged, "--resume"], files, tmp_path) == 2
    assert "--resume: every checkpoint in" in error_line(capsys)
    (damaged / "config.yaml").write_text("world: [unclosed\n")
    assert run(["evaluate", "--run", damaged], files, tmp_path) == 2
    assert "holds a damaged config.yaml or run.json" in error_line(capsys)


@pytest.mark.parametrize("args, message", [
    (["generate", "--run", "{s1}", "--out", "{tmp}/g", "--num", "0"], "--num must be at least 1"),
    (["generate", "--run", "{s1}", "--out", "{tmp}/g", "--eta", "1.5"], "--eta must lie in [0, 1]"),
    (["generate", "--run", "{s1}", "--out", "{tmp}/g", "--device", "banana"],
     "run.device 'banana' is not a torch device"),
    (["evaluate", "--run", "{s1}", "--teacher-steps", "0"], "--teacher-steps must be at least 1"),
    (["reward-server", "--reward", "linear", "--port", "70000"], "--port must lie in [0, 65535]"),
])
def test_command_arguments(files, tmp_path, capsys, args, message):
    assert run(args, files, tmp_path) == 2
    assert message in error_line(capsys)


@pytest.mark.parametrize("args, message", [
    (["align", "{cfg}"], "rtdmd align: the following arguments are required: --from"),
    (["generate", "--run", "{s1}", "--out", "{tmp}/g", "--num", "many"], "argument --num: invalid int value: 'many'"),
    (["trian"], "argument COMMAND: invalid choice: 'trian'"),
])
def test_command_line_syntax(files, tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_:
        run(args, files, tmp_path)
    assert exit_.value.code == 2
    assert message in error_line(capsys)


def test_a_rank_of_a_launch_fails_fast_with_one_tagged_line(files, tmp_path):
    # A real process with torchrun's environment (WORLD_SIZE=2) but nobody to meet: the batch check comes before
    # joining the group, so it fails in seconds instead of waiting for the other rank.
    env = child_env({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
                     "MASTER_PORT": "1", "OMP_NUM_THREADS": "1"})
    proc = subprocess.run([sys.executable, "-m", "rtdmd.cli", "distill", str(files / "tiny.yaml"), "--out",
                           str(tmp_path / "x"), "--set", "distill.batch_size=15"],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "rtdmd: error: [rank 1] distill.batch_size (15) must be divisible by the number of processes (2): use a "
        "multiple of 2, e.g. 16"]


def image_run(root, backbone, train="a red cube\n", name="prompts.txt"):
    """A config of the image recipes' shape: a prompt-file world and a diffusers backbone kind."""
    (root / name).write_bytes(train.encode("utf-8") if isinstance(train, str) else train)
    raw = {"world": {"kind": "prompts", "train": str(root / name)}, "backbone": backbone,
           "reward": {"kind": "linear", "w": [0.0, 1.0]}, "run": {"progress": False}}
    path = root / "image.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def model_folder(root, pipeline, **files):
    """A diffusers folder with its JSON files only (no weights): enough for the checks before loading."""
    (root / "model").mkdir()
    (root / "model" / "model_index.json").write_text(json.dumps({"_class_name": pipeline, **files.pop("index", {})}))
    for name, content in files.items():
        (root / "model" / name).mkdir()
        (root / "model" / name / "config.json").write_text(json.dumps(content))
    return str(root / "model")


@pytest.mark.parametrize("case, message", [
    ("jsonl", "line 2: malformed JSON"),
    ("latin1", "is not valid UTF-8 (line 1"),
    ("empty", "holds no prompts"),
    ("no_folder", "is a folder without model_index.json"),
    ("no_weights", "transformer/ has a config.json but no weights (.safetensors or .bin)"),
    ("wrong_family", "holds a StableDiffusion3Pipeline pipeline, but this backbone kind needs a FluxPipeline folder"),
    ("cfg_on_guidance_distilled", "guidance_mode 'cfg' with a guidance-distilled FLUX.1"),
    ("embedded_without_embedding", "guidance_mode 'embedded' needs a guidance-distilled FLUX.1"),
    ("cfg_on_distilled_klein", "is a step-distilled klein (is_distilled: true), whose teacher cannot use CFG"),
])
def test_image_runs_checked_before_any_model_is_built(tmp_path, capsys, no_models, case, message):
    sd3 = {"kind": "sd3", "path": str(tmp_path), "height": 16, "width": 16}
    train = {"jsonl": b'{"prompt": "a"}\n{"prompt": "b"\n', "latin1": "caf\xe9\n".encode("latin-1"), "empty": b"\n"}
    if case in train:
        folder = model_folder(tmp_path, "StableDiffusion3Pipeline")
        config = image_run(tmp_path, {**sd3, "path": folder}, train[case], "p.jsonl" if case == "jsonl" else "p.txt")
    elif case == "no_folder":
        config = image_run(tmp_path, sd3)
    elif case == "no_weights":  # an interrupted download
        folder = model_folder(tmp_path, "StableDiffusion3Pipeline", index={"transformer": ["diffusers", "X"]},
                              transformer={"num_layers": 1})
        config = image_run(tmp_path, {**sd3, "path": folder})
    elif case == "wrong_family":
        config = image_run(tmp_path, {"kind": "flux1", "path": model_folder(tmp_path, "StableDiffusion3Pipeline")})
    elif case.startswith("cfg_on_guidance") or case.startswith("embedded"):
        folder = model_folder(tmp_path, "FluxPipeline", transformer={"guidance_embeds": case.startswith("cfg")})
        mode = "cfg" if case.startswith("cfg") else "embedded"
        config = image_run(tmp_path, {"kind": "flux1", "path": folder, "guidance_mode": mode})
    else:
        folder = model_folder(tmp_path, "Flux2KleinPipeline", index={"is_distilled": True})
        config = image_run(tmp_path, {"kind": "flux2_klein", "path": folder, "teacher_guidance": 4.0})
    assert main(["distill", str(config), "--out", str(tmp_path / "x")]) == 2
    assert message in error_line(capsys)
    assert not (tmp_path / "x").exists()
