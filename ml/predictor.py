"""Load the weights once and answer batches of 28x28 inputs: the one inference path.

The worker, the benchmarks, `ml.evaluate` and the retrain gate all predict through `Predictor`, so
the temperature and the digit threshold saved with the weights are applied the same way everywhere.
Inputs are normalised once, by `ml.preprocess.to_model_input`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ml.calibration import Calibration, digit_scores
from ml.checkpoint import file_sha256, load_checkpoint
from ml.model import DigitNet
from ml.preprocess import to_model_input

BATCH = 1000


def best_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass(frozen=True)
class Answers:
    """What the network says about N drawings."""

    probabilities: np.ndarray  # N x 10 float32, temperature-scaled
    digit_score: np.ndarray  # N float, 0..1: how digit-like (see ml/calibration.py)
    is_digit: np.ndarray  # N bool: digit_score >= the calibrated threshold

    @property
    def prediction(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)


@torch.inference_mode()
def logits_of(model: DigitNet, inputs: torch.Tensor, batch: int = BATCH) -> torch.Tensor:
    """Raw logits (N x 10, on the CPU) for normalised N x 1 x 28 x 28 inputs, in chunks."""
    if model.training:  # eval() walks every module: a tenth of a batch of one's forward pass
        model.eval()
    device = next(model.parameters()).device
    if inputs.ndim == 3:
        inputs = inputs.unsqueeze(1)
    chunks = [
        model(inputs[i : i + batch].to(device, non_blocking=True)).float().cpu()
        for i in range(0, len(inputs), batch)
    ]
    return torch.cat(chunks) if chunks else torch.zeros(0, 10)


class Predictor:
    """A network in eval mode on the best device, with the weights' SHA-256 to name its version."""

    def __init__(
        self,
        weights: Path | str | None = None,
        device: str | torch.device | None = None,
        *,
        model: DigitNet | None = None,
        calibration: Calibration | None = None,
    ) -> None:
        """Load `weights`; or wrap an in-memory `model` (training's validation, tests)."""
        self.device = torch.device(device) if device else best_device()
        self.weights: Path | None = None
        self.sha256 = ""
        self.meta: dict = {}
        if model is not None:
            self.model = model.to(self.device).eval()
        else:
            if weights is None:
                raise ValueError("Predictor needs weights or a model")
            self.weights = Path(weights)
            self.model, self.meta = load_checkpoint(self.weights, self.device)
            self.sha256 = file_sha256(self.weights)
        self.calibration = calibration or Calibration.from_meta(self.meta)

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        return logits_of(self.model, inputs)

    def answer(self, inputs: torch.Tensor) -> Answers:
        """Calibrated probabilities, digit scores and verdicts for normalised inputs."""
        scaled = self.logits(inputs) / self.calibration.temperature
        probabilities = torch.softmax(scaled, dim=1).numpy().astype(np.float32)
        scores = digit_scores(probabilities)
        return Answers(probabilities, scores, scores >= self.calibration.threshold)

    def answer_images(self, images: np.ndarray) -> Answers:
        """The same for uint8 28x28 images (the preprocessing's `image`), N x 28 x 28."""
        return self.answer(to_model_input(images))

    def predict(self, inputs: torch.Tensor) -> np.ndarray:
        """Calibrated probabilities (N x 10, float32) for normalised N x 1 x 28 x 28 inputs."""
        return self.answer(inputs).probabilities

    def predict_images(self, images: np.ndarray) -> np.ndarray:
        """Calibrated probabilities for uint8 28x28 images (the preprocessing's `image`), N x 10."""
        return self.answer_images(images).probabilities
