"""The seed network, its checkpoints and the Predictor that serves them (ml/model.py & co.)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ml.checkpoint import file_sha256, load_checkpoint, save_checkpoint
from ml.model import NUM_CLASSES, DigitNet, DigitNetConfig, parameter_count
from ml.predictor import Predictor
from ml.preprocess import to_model_input


@pytest.mark.parametrize("batch", [1, 7])
def test_output_is_one_logit_per_class(batch):
    model = DigitNet().eval()
    assert model(torch.randn(batch, 1, 28, 28)).shape == (batch, NUM_CLASSES)


def test_parameter_count_is_the_seeds():
    assert parameter_count(DigitNet()) == 421_642


def test_checkpoint_round_trip_keeps_outputs_and_metadata(tmp_path):
    torch.manual_seed(0)
    model = DigitNet(DigitNetConfig(hidden=64)).eval()
    path = tmp_path / "model.pth"
    sha = save_checkpoint(model, path, meta={"note": "round trip"})
    assert sha == file_sha256(path)

    loaded, meta = load_checkpoint(path)
    assert meta == {"note": "round trip"}
    assert loaded.config == model.config  # the architecture comes from the file, not a guess
    assert not loaded.training
    inputs = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(inputs), model(inputs))


def test_predictor_returns_probabilities_from_the_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = DigitNet().eval()
    path = tmp_path / "model.pth"
    sha = save_checkpoint(model, path, meta={})
    predictor = Predictor(path, device="cpu")
    assert predictor.sha256 == sha

    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    probabilities = predictor.predict_images(images)
    assert probabilities.shape == (3, NUM_CLASSES)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    with torch.no_grad():
        expected = torch.softmax(model(to_model_input(images)), dim=1).numpy()
    np.testing.assert_allclose(probabilities, expected, atol=1e-6)
    # A single preprocessed tensor (1 x 28 x 28) is a batch of one.
    assert predictor.predict(to_model_input(images[0])[0]).shape == (1, NUM_CLASSES)
