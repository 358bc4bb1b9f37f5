"""``rtdmd evaluate --benchmark ... --run ... --run ...``: the comparison table end to end on tiny SD3 runs trained
through the command line (the code path of real models), with registered prompt sets fetched through the mirror;
the HTML page references existing images of the generated size, every column has the same prompts and seeds,
and the protocol records the sets' sha256, seeds, steps, CFG and scorers. Its errors come before any model
loads. (scripts/benchmark_table.py runs the same on the shapes world and checks the page in Chromium.)"""

import html.parser
import json
import re

import pytest
import torch
import yaml
from PIL import Image

from rtdmd.app import benchmark_table as bt
from rtdmd.cli import main
from rtdmd.data import benchmarks, fetch
from tests.backbones import tiny_pipelines as tiny
from tests.backbones.image_reward import registered
from tests.shared_data import shared_dir

SIDE = 16


@pytest.fixture(autouse=True)
def _mirror(tmp_path, monkeypatch):
    monkeypatch.setenv(fetch.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(fetch.MIRROR_ENV, str(shared_dir() / "datasets"))
    with registered():  # the "brightness" reward of tests/backbones
        yield


def write_config(root, folder, **world):
    (root / "train.txt").write_text("a red cube\na blue ball\n")
    config = {"world": {"kind": "prompts", "train": str(root / "train.txt"), **world},
              "backbone": {"kind": "sd3", "path": str(folder), "height": SIDE, "width": SIDE,
                           "max_sequence_length": 8, "teacher_guidance": 3.0},
              "reward": {"kind": "brightness"},
              "distill": {"iterations": 1, "batch_size": 2, "fake_update_ratio": 1, "checkpoint_every": 1},
              "align": {"iterations": 1, "prompts_per_iteration": 1, "group_size": 2, "micro_batch": 2,
                        "checkpoint_every": 1, "ema_every": 1},
              "run": {"progress": False, "eval_samples": 1}}
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Stage 1 and stage 2 of a tiny SD3 pipeline, through the command line."""
    root = tmp_path_factory.mktemp("table_runs")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with registered():
        config = write_config(root, tiny.sd3_pipeline(root / "sd3"))
        assert main(["distill", str(config), "--out", str(root / "s1")]) == 0
        assert main(["align", str(config), "--from", str(root / "s1"), "--out", str(root / "s2")]) == 0
    torch.set_num_threads(threads)
    return root


class Images(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.images = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))


def test_the_table_end_to_end(runs, tmp_path, capsys):
    out = tmp_path / "table"
    code = main(["evaluate", "--benchmark", "geneval", "--benchmark", "drawbench", "--limit", "3", "--grid", "2",
                 "--run", str(runs / "s1"), "--run", str(runs / "s2"), "--teacher-steps", "3", "--cfg", "2.5",
                 "--reward", "geneval=brightness", "--reward", "clipscore=brightness", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    header = "| prompt set | metric | teacher (3 steps, CFG 2.5) | s1 (distill, 4 steps) | s2 (align, 4 steps) |"
    assert header in printed
    table = json.loads((out / "table.json").read_text())
    # Rows = the paper's metrics of each set (those without a scorer shown as "-"); columns = the three models.
    assert [(r["set"], r["display"], r["computed"]) for r in table["rows"]] == [
        ("geneval", "GenEval", True), ("drawbench", "CLIPScore", True), ("drawbench", "Aesthetic", False),
        ("drawbench", "PickScore", False), ("drawbench", "HPSv2", False), ("drawbench", "ImageReward", False)]
    assert all(set(r["values"]) == {"teacher", "s1", "s2"} for r in table["rows"])
    assert "| drawbench (3 x 5) | ImageReward (no scorer) | - | - | - |" in (out / "table.md").read_text()
    # The protocol: each set's source and sha256, its seeds (GenEval 4, DrawBench 5 per prompt), steps and CFG.
    sets = {s["name"]: s for s in table["protocol"]["prompt_sets"]}
    assert sets["geneval"]["sha256"] == benchmarks.FILES["geneval/evaluation_metadata.jsonl"].sha256
    assert sets["drawbench"]["url"] == benchmarks.FILES["drawbench/test.txt"].url
    assert sets["geneval"]["seeds"] == [1234, 1235, 1236, 1237] and len(sets["drawbench"]["seeds"]) == 5
    assert sets["geneval"]["evaluated_prompts"] == 3 and sets["geneval"]["num_prompts"] == 553
    models = {m["name"]: m for m in table["protocol"]["models"]}
    assert (models["teacher"]["steps"], models["teacher"]["cfg"], models["teacher"]["eta"]) == (3, 2.5, 0.0)
    assert models["s2"]["extra"]["stage"] == "align" and models["s2"]["extra"]["checkpoint_step"] == 1
    assert models["s2"]["extra"]["checkpoint"] == "step_00000001"
    assert len(models["s2"]["extra"]["checkpoint_sha256"]) == 64
    assert [s["name"] for s in table["protocol"]["scorers"]] == ["geneval", "clipscore"]
    # Every model drew the same prompts with the same seeds.
    for name in ("geneval", "drawbench"):
        drawn = [[(r["index"], r["prompt"], r["seed"]) for r in map(json.loads, (out / m / name / "scores.jsonl")
                                                                    .read_text().splitlines())]
                 for m in ("teacher", "s1", "s2")]
        assert drawn[0] == drawn[1] == drawn[2] and len(drawn[0]) == 3 * len(sets[name]["seeds"])
    # The page: a grid of 2 prompts x 3 models per set, each image an existing PNG of the generated size.
    parser = Images()
    parser.feed((out / "index.html").read_text())
    assert len(parser.images) == 2 * 2 * 3 == len({i["src"] for i in parser.images})
    for image in parser.images:
        assert Image.open(out / image["src"]).size == (SIDE, SIDE)
        assert (int(image["width"]), int(image["height"])) == (8 * SIDE, 8 * SIDE)  # shown at 128 px
    assert table["images"] == 3 * (3 * 4 + 3 * 5)


def test_geneval_is_the_mean_of_its_task_means():
    summary = {"scores": {"geneval": {"mean": 0.7, "std": 0.1, "count": 10, "tag_mean": 0.55}}}
    assert bt.metric_value(summary, "geneval", "tag_mean")["value"] == 0.55
    assert bt.metric_value(summary, "geneval", "mean")["value"] == 0.7
    assert bt.metric_value(summary, "clipscore", "mean") is None


@pytest.mark.parametrize("args, message", [
    (["--run", "{s1}", "--benchmark", "geneval"], "give --out DIR"),
    (["--config", "x", "--benchmark", "geneval", "--out", "{tmp}/t"], "drop --config"),
    (["--run", "{s1}", "--benchmark", "genevl", "--out", "{tmp}/t"],
     "--benchmark genevl: neither a registered prompt set \\(did you mean 'geneval'\\?\\) nor a prompt file"),
    (["--run", "{s1}", "--benchmark", "drawbench", "--out", "{tmp}/t"],
     "no scorer for the metrics the paper reports on drawbench: clipscore \\(CLIPScore\\)"),
    (["--run", "{s1}", "--run", "{other}", "--benchmark", "geneval", "--out", "{tmp}/t"],
     "has another world or backbone than"),
    (["--run", "{s1}", "--run", "{s2}", "--out", "{tmp}/t"], "several --run, --cfg and --limit belong to the"),
    (["--run", "{s1}", "--benchmark", "geneval", "--limit", "0", "--out", "{tmp}/t"], "--limit must be at least 1"),
])
def test_errors_come_before_any_model_loads(args, message, runs, tmp_path, capsys, monkeypatch):
    other = tmp_path / "other"
    other.mkdir()
    config = yaml.safe_load((runs / "s1" / "config.yaml").read_text())
    config["world"]["eval"] = config["world"]["train"]
    (other / "config.yaml").write_text(yaml.safe_dump(config))
    (other / "run.json").write_text('{"stage": "distill"}')
    monkeypatch.setattr("rtdmd.app.benchmark_table.load_run", lambda *a, **k: pytest.fail("a model was loaded"))
    fill = {"s1": runs / "s1", "s2": runs / "s2", "other": other, "tmp": tmp_path}
    assert main(["evaluate", *(a.format(**fill) for a in args)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(message, err), err
