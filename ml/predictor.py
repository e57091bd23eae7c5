"""Load the weights once and answer batches of 28x28 inputs (the worker and benchmarks hold one)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ml.checkpoint import file_sha256, load_checkpoint
from ml.preprocess import to_model_input


def best_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Predictor:
    """A network in eval mode on the best device, with the weights' SHA-256 to name its version."""

    def __init__(self, weights: Path | str, device: str | torch.device | None = None) -> None:
        self.weights = Path(weights)
        self.device = torch.device(device) if device else best_device()
        self.model, self.meta = load_checkpoint(self.weights, self.device)
        self.sha256 = file_sha256(self.weights)

    @torch.inference_mode()
    def predict(self, inputs: torch.Tensor) -> np.ndarray:
        """Probabilities (N x 10, float32) for normalised N x 1 x 28 x 28 inputs."""
        if inputs.ndim == 3:
            inputs = inputs.unsqueeze(1)
        logits = self.model(inputs.to(self.device, non_blocking=True))
        return torch.softmax(logits, dim=1).float().cpu().numpy()

    def predict_images(self, images: np.ndarray) -> np.ndarray:
        """Probabilities for uint8 28x28 images (the preprocessing's `image`), N x 10."""
        return self.predict(to_model_input(images))
