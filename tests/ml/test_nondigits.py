"""Synthetic non-digits (ml/nondigits.py): every family drawn, seeded, train and test apart."""

from __future__ import annotations

import numpy as np

from ml import nondigits


def test_every_family_and_glyph_draws_and_is_preprocessed():
    rng = np.random.default_rng(0)
    tables = [nondigits.LETTERS, nondigits.SYMBOLS, nondigits.SHAPES]
    for table in tables:
        for name, lines in table.items():
            image = nondigits.to_28(nondigits.draw_strokes(lines, nondigits.TRAIN_PEN, rng))
            assert image is not None and image.shape == (28, 28), name
            assert (image > 128).sum() >= 20, name
    for name, make in nondigits.GENERATED.items():
        image = nondigits.to_28(nondigits.draw_strokes(make(rng), nondigits.TRAIN_PEN, rng))
        assert image is not None and (image > 128).sum() >= 20, name


def test_the_mix_covers_letters_symbols_shapes_and_scribbles():
    images, names = nondigits.nondigits(300, seed=1)
    assert images.shape == (300, 28, 28) and images.dtype == np.uint8
    assert set(names) & set(nondigits.LETTERS)
    assert set(names) & set(nondigits.SYMBOLS)
    assert set(names) & set(nondigits.SHAPES)
    assert set(names) & set(nondigits.GENERATED)


def test_seeded_and_training_never_sees_a_test_image():
    first, _ = nondigits.nondigits_for_testing(50)
    again, _ = nondigits.nondigits_for_testing(50)
    train, _ = nondigits.nondigits_for_training(200)
    assert (first == again).all()
    flat_train = {image.tobytes() for image in train}
    assert not any(image.tobytes() in flat_train for image in first)


def test_no_letter_that_reads_as_a_digit_is_in_the_set():
    assert not set(nondigits.LETTERS) & set("OoIlSZBGqgTLJb")
