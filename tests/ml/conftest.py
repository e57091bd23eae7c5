"""Shared fixtures for the ml/ tests: MNIST test digits, a smoke model, image encoders.

MNIST here is the committed sample (tests/mnist_sample.py) unless MNIST_DIR holds the full set.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ml.data import Split
from ml.drawn import render_drawn
from ml.train import TrainConfig, train
from tests.mnist_sample import sample_split


@pytest.fixture(scope="session")
def mnist_test() -> Split:
    """The first 2,000 MNIST test digits (the committed sample)."""
    return sample_split("test")


@pytest.fixture(scope="session")
def smoke_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Weights from one epoch on 1,500 images: loadable, not accurate (for plumbing, not scores)."""
    out = tmp_path_factory.mktemp("smoke") / "smoke.pth"
    threads = torch.get_num_threads()
    config = TrainConfig(
        epochs=1, limit=1500, val_size=500, canvas_pool=300, threads=1, evaluate_test=False, out=out
    )
    try:
        train(config, show_bar=False)
    finally:
        # train() sets the process-wide thread count; later tests should not inherit it.
        torch.set_num_threads(threads)
    return out


def encode(pixels: np.ndarray, format: str = "PNG", **options: object) -> bytes:
    """Image bytes for a uint8 array: H x W grey, H x W x 3 RGB or H x W x 4 RGBA."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format=format, **options)
    return buffer.getvalue()


@pytest.fixture
def png_bytes() -> Callable[..., bytes]:
    """`png_bytes(array, format="PNG", **save_options)` -> encoded bytes."""
    return encode


@pytest.fixture(scope="session")
def canvas(mnist_test: Split) -> np.ndarray:
    """280 x 280 uint8, dark ink on white: the first MNIST test digit (a 7), drawn large."""
    return np.asarray(Image.open(io.BytesIO(render_drawn(mnist_test.images[0], "large"))))
