import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from rtdmd.worlds.shapes import oracle, prompts, render
from rtdmd.worlds.shapes.render import Placed


def _rendered(seed: int, copies: int = 3):
    rng = np.random.default_rng(seed)
    records = prompts.grammar() * copies
    return records, render.render_batch(records, rng)


def test_images_of_their_own_metadata_score_one():
    records, images = _rendered(0)
    correct = oracle.score(images, records)
    assert correct.all(), [r["prompt"] for r, ok in zip(records, correct) if not ok][:5]


def test_images_of_another_prompt_score_low():
    records, images = _rendered(1)
    shifted = records[7:] + records[:7]  # every image judged against a different prompt
    acc = oracle.accuracy(oracle.score(images, shifted), [r["tag"] for r in shifted])
    assert acc["overall"] < 0.3
    assert acc["color_attr"] < 0.2 and acc["counting"] < 0.3


@pytest.mark.parametrize("degrade", [
    lambda x, rng: np.clip(x + rng.normal(0, 0.06, x.shape), 0, 1),
    lambda x, rng: gaussian_filter(x, sigma=(0, 0, 0.6, 0.6)),
    lambda x, rng: np.clip(gaussian_filter(x, sigma=(0, 0, 0.5, 0.5)) + rng.normal(0, 0.04, x.shape), 0, 1),
], ids=["noise", "blur", "blur+noise"])
def test_robust_to_mild_noise_and_blur(degrade):
    records, images = _rendered(2, copies=1)
    rng = np.random.default_rng(0)
    acc = oracle.accuracy(oracle.score(degrade(images, rng), records), [r["tag"] for r in records])
    assert acc["overall"] >= 0.97


def test_detects_a_hand_placed_object():
    blobs = oracle.detect(render.draw([Placed("triangle", "blue", 1, 2)]))
    assert [(b.color, b.shape) for b in blobs] == [("blue", "triangle")]
    assert blobs[0].cx == pytest.approx(26.0)  # x box [22, 30), symmetric shape
    assert 16.0 < blobs[0].cy < 18.0  # y box [12, 20); a triangle's mass sits low


@pytest.mark.parametrize("size", [(8, 8), (7, 9), (10, 10), (6, 7)])
@pytest.mark.parametrize("shape", render.SHAPES)
def test_templates_tell_shapes_apart_at_other_sizes(shape, size):
    assert oracle.classify(render.shape_mask(shape, *size))[0] == shape


def test_small_circles_and_triangles_differ_although_fill_ratio_is_close():
    circle, triangle = render.shape_mask("circle", 6, 6), render.shape_mask("triangle", 7, 6)
    assert oracle.classify(circle)[0] == "circle" and oracle.classify(triangle)[0] == "triangle"


def test_counting_is_exact_and_others_at_least():
    image = render.draw([Placed("circle", "red", 0, 0), Placed("circle", "green", 1, 1), Placed("circle", "blue", 2, 2)])
    blobs = oracle.detect(image)
    assert oracle.check(blobs, {"tag": "counting", "include": [{"class": "circle", "count": 3}]})
    assert not oracle.check(blobs, {"tag": "counting", "include": [{"class": "circle", "count": 2}]})
    assert oracle.check(blobs, {"tag": "single_object", "include": [{"class": "circle", "count": 1}]})
    assert oracle.check(blobs, {"tag": "colors", "include": [{"class": "circle", "count": 1, "color": "green"}]})
    assert not oracle.check(blobs, {"tag": "colors", "include": [{"class": "square", "count": 1, "color": "green"}]})


def test_position_uses_centroids():
    image = render.draw([Placed("circle", "red", 1, 0), Placed("square", "blue", 1, 2)])
    blobs = oracle.detect(image)
    left = {"tag": "position", "include": [{"class": "square", "count": 1},
                                           {"class": "circle", "count": 1, "position": ["left of", 0]}]}
    right = {"tag": "position", "include": [{"class": "square", "count": 1},
                                            {"class": "circle", "count": 1, "position": ["right of", 0]}]}
    above = {"tag": "position", "include": [{"class": "square", "count": 1},
                                            {"class": "circle", "count": 1, "position": ["above", 0]}]}
    assert oracle.check(blobs, left) and not oracle.check(blobs, right) and not oracle.check(blobs, above)


def test_merged_or_tiny_blobs_are_not_objects():
    image = np.full((3, 32, 32), 0.5, np.float32)
    image[:, 2:20, 2:20] = np.asarray(render.COLORS["red"])[:, None, None]  # 18 px: several objects' worth
    image[:, 25:27, 25:28] = np.asarray(render.COLORS["green"])[:, None, None]  # 6 px: noise
    blobs = oracle.detect(image)
    assert [(b.color, b.shape) for b in blobs] == [("red", "unknown")]


def test_accuracy_is_the_mean_of_tag_accuracies():
    acc = oracle.accuracy([True, False, True, True, False], ["a", "a", "b", "b", "c"])
    assert acc == {"a": 0.5, "b": 1.0, "c": 0.0, "overall": pytest.approx(0.5)}
