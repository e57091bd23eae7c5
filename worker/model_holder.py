"""The model a worker process holds: loaded once, on first use or at process start, never per task.

`get_predictor()` is cheap on every call: it compares the active version's name with the one in
memory and reloads only when they differ, which is how a promotion reaches running workers.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings

from ml.predictor import Predictor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ActiveModel:
    version: str
    weights: Path


def active_model() -> ActiveModel:
    """The version that should answer now."""
    from ml.checkpoint import file_sha256

    weights = Path(settings.MODEL_WEIGHTS)
    return ActiveModel(version=f"seed-{file_sha256(weights)[:8]}", weights=weights)


class ServingPredictor:
    """A Predictor with the version name that answers are recorded under."""

    def __init__(self, model: ActiveModel) -> None:
        self.version = model.version
        self.predictor = Predictor(model.weights, device=settings.MODEL_DEVICE or None)

    def predict_images(self, images: np.ndarray) -> np.ndarray:
        return self.predictor.predict_images(images)


_lock = threading.Lock()
_held: ServingPredictor | None = None


def get_predictor() -> ServingPredictor:
    global _held
    wanted = active_model()
    if _held is not None and _held.version == wanted.version:
        return _held
    with _lock:
        if _held is None or _held.version != wanted.version:
            log.info("loading model %s from %s", wanted.version, wanted.weights)
            _held = ServingPredictor(wanted)
    return _held


def forget_predictor() -> None:
    """Drop the held model (tests; a reload on the next call)."""
    global _held
    with _lock:
        _held = None
