"""Reviewed drawings as data: the frozen holdout, the training part, the export for ml.train.

A drawing's `model_input` is used as it is: it is the output of ml/preprocess.py for that drawing,
made once at submit time by the same code that serves, and it is the 28x28 image the reviewer saw
beside the drawing when labelling it. Running the preprocessing again on the original bytes would
give the same pixels at a cost, and different ones only after the preprocessing itself changed,
which would call for a new version of it, not a quiet rewrite of old inputs.

The holdout is frozen by id: a drawing is in it when a hash of its UUID, mod 100, is below
HOLDOUT_PERCENT. It never depends on when a retrain runs or on what else is in the database, so a
holdout drawing is never trained on by any version (as long as HOLDOUT_PERCENT stays the same).
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db.models import QuerySet

from ml.data import Split
from recognizer.models import Submission


def in_holdout(submission_id: uuid.UUID | str) -> bool:
    """Whether a drawing belongs to the frozen holdout. Hashed rather than read off the UUID so
    that time-ordered ids (UUIDv1/v7) spread as evenly as random ones."""
    raw = uuid.UUID(str(submission_id)).bytes
    bucket = int.from_bytes(hashlib.sha256(raw).digest()[:8], "big") % 100
    return bucket < settings.HOLDOUT_PERCENT


@dataclass(frozen=True)
class Drawings:
    ids: list[str]
    images: np.ndarray  # N x 28 x 28 uint8, white on black, as the model sees them
    labels: np.ndarray  # N int64

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def split(self) -> Split:
        return Split(self.images, self.labels)

    @classmethod
    def empty(cls) -> Drawings:
        return cls([], np.zeros((0, 28, 28), dtype=np.uint8), np.zeros(0, dtype=np.int64))


def reviewed_submissions() -> QuerySet:
    """Submissions a reviewer gave a label to and did not exclude, oldest first."""
    return Submission.objects.filter(
        reviewed_label__isnull=False, excluded=False, model_input__isnull=False
    ).order_by("created_at", "id")


def reviewed_drawings(*, holdout: bool | None) -> Drawings:
    """The reviewed drawings: only the holdout (True), only the training part (False), or all."""
    ids, images, labels = [], [], []
    rows = reviewed_submissions().values_list("id", "reviewed_label", "model_input")
    for submission_id, label, model_input in rows.iterator(chunk_size=500):
        if holdout is not None and in_holdout(submission_id) != holdout:
            continue
        pixels = bytes(model_input)
        if len(pixels) != 28 * 28:
            continue
        ids.append(str(submission_id))
        images.append(np.frombuffer(pixels, dtype=np.uint8).reshape(28, 28))
        labels.append(label)
    return Drawings(
        ids=ids,
        images=np.stack(images) if images else np.zeros((0, 28, 28), dtype=np.uint8),
        labels=np.asarray(labels, dtype=np.int64),
    )


def export_drawings(*, path: Path, include_holdout: bool = False) -> int:
    """Write the reviewed drawings as .npz (images N x 28 x 28 uint8, labels, ids), the format
    `python -m ml.train --extra` reads. The holdout is left out unless asked for, so a model
    trained on the file can still be judged on it."""
    drawings = reviewed_drawings(holdout=None if include_holdout else False)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:  # a file object: np.savez would append .npz to a bare name
        np.savez_compressed(
            f, images=drawings.images, labels=drawings.labels, ids=np.asarray(drawings.ids)
        )
    return len(drawings)
