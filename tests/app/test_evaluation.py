"""Evaluation: images, per-image JSONL, and a summary that records the protocol and per-tag means."""

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from rtdmd.app.evaluation import EvalProtocol, evaluate
from rtdmd.data.prompts import load_prompts
from rtdmd.rewards.base import WeightedReward
from rtdmd.rewards.compositional import CompositionalReward
from tests.rewards import toys
from tests.rewards.test_compositional import COUNTING, POSITION


def generate(prompts, seeds):
    """Seed 1 of "two cats" draws three cats (wrong); everything else matches its prompt."""
    images = []
    for prompt, seed in zip(prompts, seeds):
        if prompt == "two cats":
            cats = [("cat", 2, 2, 5), ("cat", 12, 12, 5)] + ([("cat", 22, 22, 5)] if seed == 1 else [])
            image = toys.draw(32, cats)
        else:
            image = toys.draw(32, [("dog", 2, 10, 6), ("cat", 20, 10, 6)])
        images.append(image + 0.003 * (seed + 1))  # not on the 8-bit grid: scores use what is saved
    return torch.stack(images).clamp(0, 1)


@pytest.fixture
def prompt_file(tmp_path):
    file = tmp_path / "geneval_small.jsonl"
    file.write_text("\n".join(json.dumps({"prompt": p, **m}) for p, m in
                              [("two cats", COUNTING), ("a cat right of a dog", POSITION)]) + "\n")
    return file


def test_evaluate_writes_images_scores_and_summary(tmp_path, prompt_file):
    prompts = load_prompts(prompt_file)
    rewards = [WeightedReward("geneval", CompositionalReward(toys.SquareOracle())),
               WeightedReward("brightness", toys.Brightness(), weight=0.5)]
    protocol = EvalProtocol(seeds=(0, 1), steps=4, cfg=None, resolution=(32, 32), extra={"run": "toy"})
    out = tmp_path / "eval"
    summary = evaluate(generate, prompts, rewards, protocol, out, prompt_file=prompt_file, batch_size=3)

    rows = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    assert [(r["index"], r["seed"], r["tag"]) for r in rows] == [(0, 0, "counting"), (0, 1, "counting"),
                                                                 (1, 0, "position"), (1, 1, "position")]
    assert [r["scores"]["geneval"] for r in rows] == [1.0, 0.0, 1.0, 1.0]
    for row in rows:  # re-scoring the saved file gives the recorded score
        saved = torch.from_numpy(np.array(Image.open(out / row["file"]))).permute(2, 0, 1)[None].float() / 255
        assert toys.Brightness()(saved, [row["prompt"]]).item() == pytest.approx(row["scores"]["brightness"], abs=1e-6)
    assert rows[0]["file"] == "images/00000_0.png"

    assert summary == json.loads((out / "summary.json").read_text())
    protocol_record = summary["protocol"]
    assert protocol_record["prompt_set"] == {"path": str(prompt_file), "num_prompts": 2,
                                             "sha256": hashlib.sha256(prompt_file.read_bytes()).hexdigest()}
    assert (protocol_record["seeds"], protocol_record["steps"], protocol_record["cfg"]) == ([0, 1], 4, None)
    assert protocol_record["resolution"] == [32, 32] and protocol_record["images"] == 4
    assert protocol_record["extra"] == {"run": "toy"}
    geneval = summary["scores"]["geneval"]
    assert geneval["mean"] == 0.75 and geneval["per_tag"] == {"counting": 0.5, "position": 1.0}
    assert geneval["tag_mean"] == 0.75 and geneval["count"] == 4
    scorers = {s["name"]: s for s in summary["scorers"]}
    assert scorers["geneval"]["info"]["detector"] == {"name": "square-oracle"}
    assert scorers["brightness"]["weight"] == 0.5 and scorers["brightness"]["info"] == {"type": "Brightness"}


def test_generate_output_is_checked(tmp_path, prompt_file):
    prompts = load_prompts(prompt_file)
    rewards = [WeightedReward("brightness", toys.Brightness())]
    with pytest.raises(ValueError, match=r"\(2, 3, H, W\)"):
        evaluate(lambda p, s: torch.zeros(2, 4, 8, 8), prompts, rewards, EvalProtocol(), tmp_path)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        evaluate(lambda p, s: torch.full((2, 3, 8, 8), 2.0), prompts, rewards, EvalProtocol(), tmp_path)
    with pytest.raises(ValueError, match="the protocol says"):
        evaluate(lambda p, s: torch.zeros(2, 3, 8, 8), prompts, rewards, EvalProtocol(resolution=(16, 16)), tmp_path)


def test_summary_without_file_hashes_the_content(tmp_path, prompt_file):
    prompts = load_prompts(prompt_file)
    a = evaluate(generate, prompts, [WeightedReward("b", toys.Brightness())], EvalProtocol(), tmp_path / "a")
    b = evaluate(generate, prompts.subset([1, 0]), [WeightedReward("b", toys.Brightness())], EvalProtocol(),
                 tmp_path / "b")
    assert a["protocol"]["prompt_set"]["path"] is None
    assert a["protocol"]["prompt_set"]["sha256"] != b["protocol"]["prompt_set"]["sha256"]
