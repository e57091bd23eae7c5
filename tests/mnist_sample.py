"""MNIST for the tests on any clone: the committed sample, and the full set when it is there.

tests/fixtures/mnist_sample.npz (made by tests/fixtures/make_mnist_sample.py) holds the first
2,000 test and 7,000 training digits, unchanged. Tests that need real digits read it directly.
When MNIST_DIR (default ../shared/datasets/mnist) lacks the full set, `use_sample_unless_full()`
writes the sample as IDX files into a temporary folder and points MNIST_DIR at it, so the
training, retraining and evaluation plumbing runs on it too; tests that need all of MNIST ask for
the `requires_full_mnist` fixture and skip (in CI: fail) with where to put it.
"""

from __future__ import annotations

import gzip
import os
import struct
from functools import cache
from pathlib import Path

import numpy as np

from ml.data import FILES, Split, missing_files, mnist_dir

SAMPLE = Path(__file__).resolve().parent / "fixtures" / "mnist_sample.npz"

# Set by use_sample_unless_full(): the folder MNIST_DIR named when the session began, and whether
# it held the full set.
asked_dir = mnist_dir()
full_mnist = False


@cache
def sample_split(name: str) -> Split:
    """The sample's 'test' (2,000) or 'train' (7,000) digits as a Split."""
    with np.load(SAMPLE) as archive:
        images = archive[f"{name}_images"]
        labels = archive[f"{name}_labels"].astype(np.int64)
    return Split(images=images, labels=labels)


def idx(array: np.ndarray) -> bytes:
    """uint8 `array` as the bytes of an IDX file (MNIST's format), uncompressed."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += b"".join(struct.pack(">I", size) for size in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(folder: Path) -> Path:
    """The sample as the four gzipped IDX files ml.data reads."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, (images_file, labels_file) in FILES.items():
        split = sample_split(name)
        (folder / images_file).write_bytes(gzip.compress(idx(split.images), mtime=0))
        (folder / labels_file).write_bytes(gzip.compress(idx(split.labels), mtime=0))
    return folder


def use_sample_unless_full(scratch: Path) -> bool:
    """Point MNIST_DIR at the sample (written under `scratch`) unless it holds the full set;
    whether it does."""
    global asked_dir, full_mnist
    asked_dir = mnist_dir()
    full_mnist = not missing_files(asked_dir)
    if not full_mnist:
        os.environ["MNIST_DIR"] = str(write_idx(scratch / "mnist-sample"))
    return full_mnist
