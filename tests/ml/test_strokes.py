"""Stroke-level rendering (ml/strokes.py): thinning, tracing, the pen, the page's strokes."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from ml import strokes
from ml.preprocess import CANVAS


def bitmap(draw_on) -> np.ndarray:
    image = Image.new("L", (28, 28), 0)
    draw_on(ImageDraw.Draw(image))
    return np.asarray(image)


def seven() -> np.ndarray:
    return bitmap(lambda d: d.line([(6, 5), (21, 5), (11, 23)], fill=255, width=3))


def ring() -> np.ndarray:
    return bitmap(lambda d: d.ellipse((6, 4, 21, 23), outline=255, width=3))


def test_thinning_leaves_one_pixel_wide_lines_inside_the_ink():
    image = seven()
    skeleton = strokes.skeletonize(image)
    assert skeleton.any()
    assert not (skeleton & (image < 90)).any()  # never outside the ink
    # One pixel wide: no 2x2 block is fully set.
    blocks = skeleton[:-1, :-1] & skeleton[1:, :-1] & skeleton[:-1, 1:] & skeleton[1:, 1:]
    assert not blocks.any()
    assert skeleton.sum() < (image > 90).sum() / 2


def test_thinning_works_on_a_batch_as_on_single_images():
    batch = np.stack([seven(), ring()])
    together = strokes.skeletonize(batch)
    assert (together[0] == strokes.skeletonize(batch[0])).all()
    assert (together[1] == strokes.skeletonize(batch[1])).all()


def test_a_ring_traces_to_one_closed_loop_and_a_seven_to_an_open_path():
    (loop,) = strokes.trace(strokes.skeletonize(ring()))
    assert np.abs(loop[0] - loop[-1]).max() <= 1.5  # ends where it began
    assert len(loop) > 20
    lines = strokes.trace(strokes.skeletonize(seven()))
    ends = np.concatenate([line[[0, -1]] for line in lines])
    assert max(len(line) for line in lines) > 15
    # The open ends are the pen's start (top left) and finish (bottom).
    assert ends[:, 1].min() <= 7 and ends[:, 1].max() >= 20


def test_the_pen_draws_inside_the_canvas_at_the_asked_size():
    lines = strokes.digit_strokes(seven())
    small = strokes.Pen(canvas_px=200, height=(0.2, 0.2), centre=(0.8, 0.8), centre_spread=0)
    ink = strokes.draw_strokes(lines, small, np.random.default_rng(0))
    assert ink.shape == (200, 200) and 0 <= ink.min() and ink.max() == 1.0
    rows = np.flatnonzero(ink.max(axis=1) > 0)
    cols = np.flatnonzero(ink.max(axis=0) > 0)
    assert 30 <= rows[-1] - rows[0] <= 60  # ~20% of 200 px plus the pen's width
    assert rows[0] > 100 and cols[0] > 100  # bottom right


def test_a_drawing_placed_at_the_edge_is_pushed_back_onto_the_canvas():
    lines = strokes.digit_strokes(seven())
    pen = strokes.Pen(canvas_px=100, height=(0.5, 0.5), centre=(1.0, 1.0), centre_spread=0)
    ink = strokes.draw_strokes(lines, pen, np.random.default_rng(1))
    assert ink[-1].max() == 0 and ink[:, -1].max() == 0


def test_the_pen_is_seeded_and_varies_between_draws():
    lines = strokes.digit_strokes(seven())
    first = strokes.draw_strokes(lines, strokes.TRAIN_PEN, np.random.default_rng(5))
    again = strokes.draw_strokes(lines, strokes.TRAIN_PEN, np.random.default_rng(5))
    other = strokes.draw_strokes(lines, strokes.TRAIN_PEN, np.random.default_rng(6))
    assert (first == again).all()
    assert (first != other).any()


def test_redrawn_digits_come_out_as_the_preprocessing_makes_them():
    images = np.stack([seven(), ring(), np.zeros((28, 28), np.uint8)])
    out, labels = strokes.redraw_batch(images, np.array([7, 0, 3]), seed=0)
    assert out.shape == (2, CANVAS, CANVAS) and out.dtype == np.uint8
    assert labels.tolist() == [7, 0]  # the blank one is left out, not invented
    for image in out:
        rows = np.flatnonzero(image.max(axis=1))
        cols = np.flatnonzero(image.max(axis=0))
        assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 == 20  # MNIST's 20 px box


def test_the_pages_strokes_in_both_shapes_and_malformed_points_skipped():
    upload = [[[0.2, 0.2, 0], [0.8, 0.2, 10], [0.4, 0.9, 20]], [[0.3, 0.55, 0], [0.7, 0.55, 5]]]
    stored = [{"points": [{"x": 0.2, "y": 0.2, "t": 0}, {"x": 0.8, "y": 0.2, "t": 9}]}]
    assert [len(line) for line in strokes.strokes_from_json(upload)] == [3, 2]
    assert np.allclose(strokes.strokes_from_json(stored)[0], [[0.2, 0.2], [0.8, 0.2]])
    junk = [[["x", 1], [float("nan"), 0.5], [0.1]], "no", [{"x": 1}], 7]
    assert strokes.strokes_from_json(junk) == []
    assert strokes.strokes_from_json({"not": "a list"}) == []

    image = strokes.render_json_strokes(upload, strokes.TRAIN_PEN, np.random.default_rng(0))
    assert image is not None and image.shape == (28, 28) and image.max() > 200
    assert strokes.render_json_strokes([], strokes.TRAIN_PEN, np.random.default_rng(0)) is None


def test_collected_drawings_are_multiplied_with_fresh_pens():
    seven_strokes = [[[0.2, 0.2, 0], [0.8, 0.2, 10], [0.4, 0.9, 20]]]
    plus = [[[0.5, 0.1, 0], [0.5, 0.9, 9]], [[0.1, 0.5, 0], [0.9, 0.5, 9]]]
    images, labels = strokes.multiply_drawings(
        [seven_strokes, None, plus], np.array([7, 1, 4]), copies=3, seed=0
    )
    assert images.shape == (6, 28, 28) and labels.tolist() == [7, 7, 7, 4, 4, 4]
    assert len({image.tobytes() for image in images}) == 6  # every copy drawn anew


def test_loops_are_counted_so_a_redrawing_that_loses_one_is_left_out():
    def eight_strokes(d: ImageDraw.ImageDraw) -> None:
        d.ellipse((8, 2, 19, 13), outline=255, width=2)
        d.ellipse((7, 12, 20, 25), outline=255, width=2)

    def small_loop_nine(d: ImageDraw.ImageDraw) -> None:
        d.ellipse((10, 3, 18, 11), outline=255, width=3)  # a hole of a few pixels
        d.line([(17, 8), (16, 25)], fill=255, width=3)

    eight, nine = bitmap(eight_strokes), bitmap(small_loop_nine)
    assert strokes.hole_count(np.stack([seven(), ring(), eight, nine])).tolist() == [0, 1, 2, 1]
    # A thick pen fills the 9's small loop: the re-drawing reads as a 1 or a 7, so it is dropped
    # rather than kept under a label it no longer deserves. The ring keeps its hole.
    thick = strokes.Pen(width=(0.3, 0.3), pressure=0)
    _, labels = strokes.redraw_batch(np.stack([ring(), nine]), np.array([0, 9]), seed=0, pen=thick)
    assert labels.tolist() == [0]
