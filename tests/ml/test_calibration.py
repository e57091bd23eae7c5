"""Temperature scaling, the digit score and threshold, ECE (ml/calibration.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ml import calibration


def sampled(temperature: float, n: int = 20_000, seed: int = 0):
    """Logits and labels drawn from softmax(logits / temperature): that T is the true one."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 10, generator=generator) * 4
    probs = torch.softmax(logits / temperature, dim=1)
    labels = torch.multinomial(probs, 1, generator=generator).squeeze(1)
    return logits, labels


@pytest.mark.parametrize("true_t", [0.7, 1.0, 2.5])
def test_temperature_fitting_finds_the_temperature_the_labels_came_from(true_t):
    logits, labels = sampled(true_t)
    assert calibration.fit_temperature(logits, labels) == pytest.approx(true_t, rel=0.08)


def test_ece_is_small_when_calibrated_and_large_when_overconfident():
    logits, labels = sampled(2.0)
    labels = labels.numpy()
    calibrated = calibration.softmax(logits, 2.0)
    overconfident = calibration.softmax(logits, 0.5)
    assert calibration.expected_calibration_error(calibrated, labels) < 0.02
    assert calibration.expected_calibration_error(overconfident, labels) > 0.1
    table = calibration.reliability(calibrated, labels)
    assert sum(row["n"] for row in table) == len(labels)
    assert all(row["low"] <= row["confidence"] <= row["high"] for row in table)


def test_digit_score_is_zero_for_flat_and_one_for_certain_answers():
    flat = np.full((1, 10), 0.1)
    certain = np.eye(10)[:1]
    half = np.array([[0.55, 0.45] + [0.0] * 8])
    scores = calibration.digit_scores(np.concatenate([flat, certain, half]))
    assert scores == pytest.approx([0.0, 1.0, 0.5])


def test_the_threshold_turns_away_the_asked_share_of_digits():
    scores = np.random.default_rng(0).uniform(0, 1, 100_000)
    threshold = calibration.fit_threshold(scores, reject_rate=0.01)
    assert (scores < threshold).mean() == pytest.approx(0.01, abs=0.001)


def test_weights_without_a_calibration_reject_nothing():
    default = calibration.Calibration.from_meta({})
    assert default.temperature == 1.0 and default.threshold == 0.0
    saved = {"calibration": {"temperature": 1.3, "threshold": 0.4, "reject_rate": 0.01, "x": 1}}
    loaded = calibration.Calibration.from_meta(saved)
    assert (loaded.temperature, loaded.threshold, loaded.reject_rate) == (1.3, 0.4, 0.01)
