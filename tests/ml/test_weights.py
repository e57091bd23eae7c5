"""The shipped weights (ml/digit_model.pth) and their model card: the accuracy the service promises.

These fail, not skip, when the weights are missing: the service is not done without them.
"""

from __future__ import annotations

import json

import pytest
import torch

from ml.drawn import DRAWN_STYLES, render_drawn
from ml.evaluate import DEFAULT_WEIGHTS
from ml.model import parameter_count
from ml.predictor import Predictor
from ml.preprocess import preprocess_bytes

WEIGHTS = DEFAULT_WEIGHTS


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    if not WEIGHTS.exists():
        pytest.fail(f"{WEIGHTS} is missing: train it with `python -m ml.train` (see README)")
    return Predictor(WEIGHTS)


def test_scores_99_percent_on_the_first_1000_test_images(predictor, mnist_test):
    probabilities = predictor.predict_images(mnist_test.images[:1000])
    accuracy = (probabilities.argmax(axis=1) == mnist_test.labels[:1000]).mean()
    assert accuracy >= 0.99


@pytest.mark.parametrize("style", sorted(DRAWN_STYLES))
def test_drawn_digits_are_recognised(predictor, mnist_test, style):
    # Re-drawn onto a 280x280 canvas as a browser sends it, then preprocessed as served.
    images, labels = mnist_test.images[:300], mnist_test.labels[:300]
    inputs = torch.stack([preprocess_bytes(render_drawn(image, style)).tensor for image in images])
    wrong = int((predictor.predict(inputs).argmax(axis=1) != labels).sum())
    assert wrong <= 3, f"{style}: {wrong} of 300 wrong (99% allows 3)"


def test_model_card_describes_these_weights(predictor):
    card = json.loads(WEIGHTS.with_suffix(".json").read_text())
    assert card["sha256"] == predictor.sha256
    assert card["parameters"] == parameter_count(predictor.model) == 421_642
    assert card["test"]["n"] == 10_000
    assert card["test_accuracy"] >= 0.996
