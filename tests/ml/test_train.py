"""`python -m ml.train`: a one-epoch smoke run on a small slice, and the distillation option."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ml import train
from ml.checkpoint import save_checkpoint
from ml.data import FILES
from ml.model import DigitNet, parameter_count
from ml.predictor import Predictor


def test_smoke_training_writes_loadable_weights_and_a_model_card(tmp_path, capsys, mnist_test):
    extra = tmp_path / "drawings.npz"
    # Stand-ins for collected drawings; the format, not the content, is what is under test.
    drawings = np.random.default_rng(0).integers(0, 256, (40, 28, 28), dtype=np.uint8)
    # The first five carry their pen strokes, so each is also re-drawn --stroke-copies times.
    seven = json.dumps([[[0.2, 0.2, 0], [0.8, 0.2, 10], [0.4, 0.9, 20]]])
    strokes = np.array([seven] * 5 + [""] * 35)
    np.savez(extra, images=drawings, labels=np.arange(40) % 10, strokes=strokes)
    out = tmp_path / "model.pth"
    threads = torch.get_num_threads()
    try:
        train.main(
            ["--epochs", "1", "--limit", "1500", "--threads", "1", "--no-test"]
            + ["--extra", str(extra), "--extra-weight", "2", "--out", str(out)]
            + ["--val-size", "500", "--canvas-pool", "300", "--stroke-copies", "2"]
        )
    finally:
        torch.set_num_threads(threads)

    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(summary) == {"test_accuracy", "val_accuracy", "training_seconds"}

    card = json.loads(out.with_suffix(".json").read_text())
    assert card["parameters"] == 421_642
    assert card["epochs"] == 1
    assert card["training_seconds"] > 0
    assert card["train_images"] == 1500
    assert card["extra_drawings"] == 40 + 5 * 2
    # 300 re-drawn, less those whose loops changed (ml/strokes.py: redraw_batch).
    assert 250 <= card["canvas_digits"] <= 300 and card["outlier_pool"] == 1500
    # Calibrated on the validation split and saved with the weights for serving.
    calibration = Predictor(out).calibration
    assert calibration.as_dict() == card["calibration"]
    assert 0.2 < calibration.temperature < 5 and 0 < calibration.threshold < 1
    assert set(card["validation"]) == {"mnist", "canvas", "nondigits"}
    assert [entry["epoch"] for entry in card["history"]] == [1]
    assert 0 <= card["history"][0]["val_accuracy"] <= 1
    assert sorted(card["data_sha256"]) == sorted(name for pair in FILES.values() for name in pair)
    assert all(len(digest) == 64 for digest in card["data_sha256"].values())
    assert "test_accuracy" not in card  # --no-test: the test split was not touched

    predictor = Predictor(out, device="cpu")
    assert predictor.sha256 == card["sha256"]
    assert parameter_count(predictor.model) == 421_642
    assert json.loads(predictor.meta["card"])["extra_drawings"] == 50
    probabilities = predictor.predict_images(mnist_test.images[:8])
    assert probabilities.shape == (8, 10)


def test_distillation_is_zero_only_where_the_student_answers_as_the_teacher():
    torch.manual_seed(0)
    teacher = DigitNet().eval()
    inputs = torch.randn(6, 1, 28, 28)
    with torch.no_grad():
        same = teacher(inputs)
    cpu = torch.device("cpu")
    assert train._distillation(same, teacher, inputs, 2.0, cpu).item() == pytest.approx(0, abs=1e-6)
    other = train._distillation(same.flip(1), teacher, inputs, 2.0, cpu)
    assert other.item() > 0.01
    # Gradients reach the student's logits (the teacher is frozen under no_grad).
    student = same.clone().flip(1).requires_grad_(True)
    train._distillation(student, teacher, inputs, 2.0, cpu).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    # A batch with no MNIST digit (all canvas digits) adds nothing.
    assert train._distillation(same[:0], teacher, inputs[:0], 2.0, cpu).item() == 0


def test_distillation_needs_starting_weights():
    with pytest.raises(ValueError, match="--init"):
        train._teacher(train.TrainConfig(distill_weight=1.0), DigitNet())
    assert train._teacher(train.TrainConfig(), DigitNet()) is None
    # A frozen copy of the starting weights: the student's training steps do not move it.
    student = DigitNet()
    teacher = train._teacher(train.TrainConfig(distill_weight=1.0, init=Path("w.pth")), student)
    assert teacher is not None and not teacher.training
    for mine, its in zip(teacher.parameters(), student.parameters(), strict=True):
        assert torch.equal(mine, its) and mine is not its and not mine.requires_grad


def test_a_distilled_fine_tune_runs_from_saved_weights(tmp_path, mnist_test):
    start = tmp_path / "start.pth"
    save_checkpoint(DigitNet(), start, meta={})
    out = tmp_path / "tuned.pth"
    threads = torch.get_num_threads()
    try:
        train.main(
            ["--epochs", "1", "--limit", "600", "--threads", "1", "--no-test", "--init", str(start)]
            + ["--distill-weight", "1", "--val-size", "300", "--canvas-pool", "100"]
            + ["--outlier-pool", "300", "--out", str(out)]
        )
    finally:
        torch.set_num_threads(threads)
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["recipe"]["distill_weight"] == 1.0 and card["recipe"]["init"] == str(start)
    assert Predictor(out, device="cpu").predict_images(mnist_test.images[:4]).shape == (4, 10)
