import numpy as np
import pytest

from rtdmd.worlds.shapes import prompts, render
from rtdmd.worlds.shapes.render import Placed


def test_masks_match_hand_drawn_shapes():
    square = render.shape_mask("square", 8, 8)
    circle = render.shape_mask("circle", 8, 8)
    triangle = render.shape_mask("triangle", 8, 8)
    assert square.all()
    # Disc inscribed in 8x8, pixels at least half covered: rows of 4, 6, 8, 8, 8, 8, 6, 4 pixels.
    assert circle.sum(1).tolist() == [4, 6, 8, 8, 8, 8, 6, 4]
    assert circle.tolist() == circle[::-1].tolist() == circle[:, ::-1].tolist()
    # Apex up, base along the bottom: widths grow downwards, bottom row full, left-right symmetric.
    widths = triangle.sum(1)
    assert widths[-1] == 8 and widths[0] == 0 and (np.diff(widths) >= 0).all()
    assert triangle.tolist() == triangle[:, ::-1].tolist()


def test_draw_places_colour_in_the_cell():
    image = render.draw([Placed("square", "red", 1, 2)])
    y, x = render.cell_origin(1, 2)
    assert (y, x) == (12, 22)  # border 1 + 10 px per cell + 1 px padding
    red = np.asarray(render.COLORS["red"], np.float32)
    assert np.allclose(image[:, y:y + 8, x:x + 8], red[:, None, None])
    rest = image.copy()
    rest[:, y:y + 8, x:x + 8] = 0.5
    assert np.allclose(rest, 0.5)


def test_neighbouring_objects_are_separate():
    gaps = [render.cell_origin(0, c + 1)[1] - (render.cell_origin(0, c)[1] + render.OBJECT) for c in range(2)]
    assert gaps == [2, 2]
    assert render.cell_origin(2, 2)[0] + render.OBJECT <= render.IMAGE_SIZE - 1


def test_render_is_deterministic_and_seeds_differ():
    record = {"tag": "counting", "include": [{"class": "circle", "count": 3}]}
    assert np.array_equal(render.render(record, 7), render.render(record, 7))
    assert not np.array_equal(render.render(record, 7), render.render(record, 8))
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    batch = prompts.grammar()[:5]
    assert np.array_equal(render.render_batch(batch, rng_a), render.render_batch(batch, rng_b))


@pytest.mark.parametrize("seed", range(3))
def test_layouts_satisfy_every_prompt(seed):
    """Checked on the layout itself (not the pixels): counts, colours and relations."""
    rng = np.random.default_rng(seed)
    for record in prompts.grammar():
        layout = render.sample_layout(record, rng)
        assert len({(o.row, o.col) for o in layout}) == len(layout)
        owners = []
        for req in record["include"]:
            mine = [o for o in layout if o.shape == req["class"] and o.color == req.get("color", o.color)]
            assert len(mine) >= req["count"]
            owners.append(mine)
        assert len(layout) == sum(req["count"] for req in record["include"])
        for i, req in enumerate(record["include"]):
            if "position" in req:
                relation, j = req["position"]
                a, b = owners[i][0], owners[j][0]
                dx, dy = a.col - b.col, a.row - b.row
                expected = {"left of": dx < 0 and dy == 0, "right of": dx > 0 and dy == 0,
                            "above": dy < 0 and dx == 0, "below": dy > 0 and dx == 0}[relation]
                assert expected, (record["prompt"], layout)
