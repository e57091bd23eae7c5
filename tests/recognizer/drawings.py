"""Reviewed drawings for the learning-loop tests, and the made-up style the model must learn.

The style is a pen much thicker than MNIST's: each digit of MNIST's *training* split (never the
test split, which judges the model) is widened by grey dilation, drawn onto a 280x280 canvas as the
page would send it, and preprocessed by the serving code. The result is the input a worker sees.
"""

from __future__ import annotations

import random
import uuid
from functools import cache

import numpy as np
import torch
import torch.nn.functional as F
from django.utils import timezone

from ml.data import load_split
from ml.drawn import render_drawn
from ml.preprocess import preprocess_bytes
from recognizer.models import Submission

THICK_PEN_PX = 7  # dilation kernel on the 28x28 digit: the pen is ~6 px wider than MNIST's


@cache
def mnist_train() -> tuple[np.ndarray, np.ndarray]:
    """MNIST_DIR's training split: the full one, or the committed sample's first 7,000 digits."""
    split = load_split("train")
    return split.images, split.labels


def thick_pen(images: np.ndarray, kernel: int = THICK_PEN_PX) -> np.ndarray:
    """Grey dilation of N x 28 x 28 uint8 digits: the same strokes, drawn with a wider pen."""
    pixels = torch.from_numpy(np.array(images)).float().unsqueeze(1)
    wider = F.max_pool2d(pixels, kernel, stride=1, padding=kernel // 2)
    return wider.squeeze(1).to(torch.uint8).numpy()


def thick_pen_drawings(count: int, start: int = 0) -> tuple[list[bytes], np.ndarray, np.ndarray]:
    """(PNG canvases, the 28x28 inputs the service makes of them, labels) for `count` digits of
    MNIST's training split from index `start`."""
    images, labels = mnist_train()
    chosen = slice(start, start + count)
    pngs = [render_drawn(image, "large") for image in thick_pen(images[chosen])]
    inputs = np.stack([preprocess_bytes(png).image for png in pngs])
    return pngs, inputs, labels[chosen].copy()


def store_reviewed(
    pngs: list[bytes],
    inputs: np.ndarray,
    labels: np.ndarray,
    id_seed: int | None = None,
    **fields: object,
) -> list[Submission]:
    """Answered, labelled and reviewed submissions, as the admin's review leaves them. With
    `id_seed` the ids, and so the holdout, are the same on every run."""
    now = timezone.now()
    rng = random.Random(id_seed)
    rows = [
        Submission(
            **{
                "id": uuid.UUID(int=rng.getrandbits(128), version=4) if id_seed else uuid.uuid4(),
                "image": png,
                "content_type": "image/png",
                "model_input": inputs[i].tobytes(),
                "status": Submission.Status.DONE,
                "prediction": 0,
                "confidence": 0.5,
                "model_version": "v1",
                "correct_label": int(labels[i]),
                "labelled_at": now,
                "reviewed_label": int(labels[i]),
                "reviewed_at": now,
                **fields,
            }
        )
        for i, png in enumerate(pngs)
    ]
    return Submission.objects.bulk_create(rows)
