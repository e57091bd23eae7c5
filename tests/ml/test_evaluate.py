"""`python -m ml.evaluate` (ml/evaluate.py, ml/plots.py): the report, the drawn evaluation, plots.

The scoring is checked on tiny synthetic sets with a seeded, untrained network (no MNIST needed);
the command itself runs on MNIST's test split when it is present.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from ml import evaluate
from ml.calibration import Calibration
from ml.drawn import EVAL_STYLES, drawn_set
from ml.model import DigitNet
from ml.nondigits import nondigits_for_testing
from ml.predictor import Predictor
from tests.ml.test_strokes import ring, seven


@pytest.fixture
def untrained() -> DigitNet:
    torch.manual_seed(0)
    return DigitNet()


def test_scores_count_rejections_and_calibration(untrained):
    images = np.stack([seven(), ring()] * 10)
    labels = np.array([7, 0] * 10)
    everything = Predictor(model=untrained, device="cpu", calibration=Calibration(1.0, 0.0))
    nothing = Predictor(model=untrained, device="cpu", calibration=Calibration(1.0, 1.01))
    accepted = evaluate.evaluate_images(everything, images, labels)
    refused = evaluate.evaluate_images(nothing, images, labels)
    assert accepted["rejected"] == 0.0 and refused["rejected"] == 1.0
    assert accepted["n"] == 20 and sum(map(sum, accepted["confusion"])) == 20
    correct = sum(accepted["confusion"][d][d] for d in range(10))
    assert accepted["accuracy"] == round(correct / 20, 4)
    assert 0 <= accepted["ece"] <= 1
    outliers, _ = nondigits_for_testing(10)
    assert evaluate.evaluate_nondigits(nothing, outliers) == {"n": 10, "rejected": 1.0}


def test_the_drawn_evaluation_covers_every_style_and_is_the_same_each_run(untrained):
    images = np.stack([seven(), ring()])
    result = evaluate.evaluate_drawn(untrained, images, np.array([7, 0]))
    assert list(result) == [*EVAL_STYLES, "overall"]
    assert all(1 <= result[style]["n"] <= 2 for style in EVAL_STYLES)
    assert result["overall"]["n"] == sum(result[style]["n"] for style in EVAL_STYLES)
    for style in EVAL_STYLES:
        (first, kept), (again, _) = drawn_set(images, style), drawn_set(images, style)
        assert first.shape == (len(kept), 28, 28) and (first == again).all(), style


def test_the_human_summary_lists_every_set(untrained):
    result = {
        "accuracy": 0.99, "n": 10, "rejected": 0.01, "ece": 0.01,
        "drawn": {"pen thin": {"accuracy": 0.9, "n": 5, "rejected": 0.0, "ece": 0.02}},
        "nondigits": {"n": 7, "rejected": 0.95},
    }  # fmt: skip
    lines = evaluate.summary_lines(result)
    assert lines[1].startswith("MNIST test") and "99.00%" in lines[1]
    assert lines[2].startswith("drawn: pen thin") and "90.00%" in lines[2]
    assert lines[3].startswith("test non-digits") and "95.00%" in lines[3]


def test_report_and_plots(smoke_weights, tmp_path, capsys):
    plots = tmp_path / "plots"
    returned = evaluate.main(
        ["--weights", str(smoke_weights), "--limit", "200", "--plots", str(plots)]
        + ["--drawn", "--drawn-n", "5", "--nondigits-n", "30", "--card"]
    )
    captured = capsys.readouterr()
    printed = json.loads(captured.out)
    assert printed == returned
    assert "MNIST test" in captured.err
    assert printed["n"] == 200
    assert printed["parameters"] == 421_642
    assert set(printed["calibration"]) == {"temperature", "threshold", "reject_rate"}
    assert printed["nondigits"]["n"] == 30
    assert set(printed["drawn"]) == {*EVAL_STYLES, "overall"}
    assert 4 * len(EVAL_STYLES) <= printed["drawn"]["overall"]["n"] <= 5 * len(EVAL_STYLES)
    correct = sum(printed["confusion"][d][d] for d in range(10))
    assert printed["accuracy"] == round(correct / 200, 4)
    # --card: the report lands in the model card beside the weights, the training record kept.
    card = json.loads(smoke_weights.with_suffix(".json").read_text())
    assert card["evaluation"]["drawn"] == printed["drawn"] and card["epochs"] == 1

    for name in ("reliability", "mistakes", "rejected_digits", "confusion"):
        with Image.open(plots / f"{name}.png") as image:
            assert image.format == "PNG" and min(image.size) >= 100, name
    with (
        Image.open(plots / "rejected_nondigits.png") as rejected,
        Image.open(plots / "accepted_nondigits.png") as accepted,
    ):
        # Every test non-digit is in one grid or the other (eight to a row of 100 px).
        assert rejected.size[0] == accepted.size[0] == 8 * 84
