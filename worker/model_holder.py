"""The model a worker process holds: loaded once, on first use or at process start, never per task.

`get_predictor()` is cheap on every call: one indexed read of the active ModelVersion row (well
under a millisecond, beside the row writes a prediction makes anyway), compared with the one in
memory; it reloads only when they differ. So a promotion reaches every running worker at its very
next task, with no restart, no broadcast to miss and no cache to go stale.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from django.conf import settings

from ml.predictor import Predictor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ActiveModel:
    version: str
    weights: Path
    sha256: str = ""


def active_model() -> ActiveModel:
    """The version that should answer now (recognizer.model_registry's active ModelVersion)."""
    from recognizer import model_registry

    row = model_registry.active_row()
    if row is None:  # the very first call: registers the shipped weights as v1
        version = model_registry.active_version()
        row = (version.name, version.weights_path, version.sha256)
    name, weights, sha256 = row
    return ActiveModel(version=name, weights=Path(weights), sha256=sha256)


class ServingPredictor:
    """A Predictor with the version name that answers are recorded under."""

    def __init__(self, model: ActiveModel) -> None:
        self.model = model
        self.version = model.version
        if settings.WORKER_TORCH_THREADS:
            torch.set_num_threads(settings.WORKER_TORCH_THREADS)
        self.predictor = Predictor(model.weights, device=settings.MODEL_DEVICE or None)
        if model.sha256 and self.predictor.sha256 != model.sha256:
            # Answer anyway (refusing would stop the service), but loudly: the file was replaced.
            log.error(
                "weights of %s changed on disk: %s has sha256 %s, registered %s",
                model.version,
                model.weights,
                self.predictor.sha256,
                model.sha256,
            )

    @property
    def digit_threshold(self) -> float:
        return self.predictor.calibration.threshold

    def predict_images(self, images: np.ndarray) -> np.ndarray:
        return self.predictor.predict_images(images)


_lock = threading.Lock()
_held: ServingPredictor | None = None


def get_predictor() -> ServingPredictor:
    global _held
    wanted = active_model()
    # The whole record, not only the name: a test database reuses names for other weights.
    if _held is not None and _held.model == wanted:
        return _held
    with _lock:
        if _held is None or _held.model != wanted:
            log.info("loading model %s from %s", wanted.version, wanted.weights)
            try:
                from recognizer import model_registry

                # A no-op unless the file is missing and the shipped weights are its bytes.
                model_registry.restore_shipped_weights(
                    name=wanted.version, weights_path=str(wanted.weights), sha256=wanted.sha256
                )
                _held = ServingPredictor(wanted)
            except Exception:
                if _held is None:
                    raise
                # A promoted file this worker cannot read (a models folder not shared with the
                # trainer, say) must not stop the answers: keep the held model, under its own name.
                log.exception("could not load %s; answering with %s", wanted.version, _held.version)
    return _held


def forget_predictor() -> None:
    """Drop the held model (tests; a reload on the next call)."""
    global _held
    with _lock:
        _held = None
