"""MNIST from the IDX files on disk (never downloaded), and the IDX format itself.

The folder defaults to `../shared/datasets/mnist/` beside the project and is overridden by the
`MNIST_DIR` environment variable. The t10k split is the test set: evaluate on it, never
train, tune or select on it; validation comes out of the training split.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MNIST_DIR = PROJECT_ROOT.parent / "shared" / "datasets" / "mnist"

FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

# IDX type codes (the third byte of the magic number) to numpy dtypes, all big-endian.
_IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


# Images are 3-D, labels 1-D; the format allows 255 dimensions, numpy holds at most 64.
MAX_IDX_DIMENSIONS = 4


class IdxError(ValueError):
    pass


def parse_idx(data: bytes) -> np.ndarray:
    """Parse IDX bytes (gzipped or not) into an array of the shape its header gives."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise IdxError("not an IDX file")
    dtype = _IDX_TYPES.get(data[2])
    ndim = data[3]
    if dtype is None or ndim == 0:
        raise IdxError("unknown IDX element type or no dimensions")
    if ndim > MAX_IDX_DIMENSIONS:
        raise IdxError(f"{ndim} dimensions; at most {MAX_IDX_DIMENSIONS} are read")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxError("truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    # Python integers: numpy's int64 product wraps (65536**4 is 0), which would pass an empty body.
    expected = math.prod(shape) * dtype.itemsize
    if len(data) - header != expected:
        raise IdxError(f"IDX body holds {len(data) - header} bytes, header says {expected}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def mnist_dir() -> Path:
    return Path(os.environ.get("MNIST_DIR", DEFAULT_MNIST_DIR))


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # N x 28 x 28 uint8
    labels: np.ndarray  # N int64

    def __len__(self) -> int:
        return len(self.labels)


def load_split(name: str, folder: Path | None = None) -> Split:
    """Load 'train' (60,000) or 'test' (10,000) as uint8 images and int64 labels."""
    folder = folder or mnist_dir()
    images_file, labels_file = FILES[name]
    try:
        images = parse_idx((folder / images_file).read_bytes())
        labels = parse_idx((folder / labels_file).read_bytes()).astype(np.int64)
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"MNIST not found in {folder}: set MNIST_DIR to the folder with the IDX files"
        ) from exc
    return Split(images=images, labels=labels)


def train_val_split(train: Split, val_size: int, seed: int) -> tuple[Split, Split]:
    """Hold out `val_size` training images, chosen by a seeded permutation."""
    order = np.random.default_rng(seed).permutation(len(train))
    val_idx, train_idx = order[:val_size], order[val_size:]
    return (
        Split(train.images[train_idx], train.labels[train_idx]),
        Split(train.images[val_idx], train.labels[val_idx]),
    )


def checksums(folder: Path | None = None) -> dict[str, str]:
    """SHA-256 of each MNIST file, for the model card."""
    folder = folder or mnist_dir()
    names = [name for pair in FILES.values() for name in pair]
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in names}


def load_extra(path: Path) -> Split:
    """Extra labelled 28x28 drawings: an .npz with `images` (N x 28 x 28 uint8) and `labels` (N)."""
    with np.load(path) as archive:
        images = np.asarray(archive["images"], dtype=np.uint8)
        labels = np.asarray(archive["labels"], dtype=np.int64)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise ValueError(f"{path}: expected images N x 28 x 28 and N labels")
    return Split(images, labels)
