"""MNIST from the IDX files on disk, and the IDX format itself.

The folder defaults to `../shared/datasets/mnist/` beside the project and is overridden by the
`MNIST_DIR` environment variable. Nothing is downloaded unless asked: `download()` (the
`--download` of `ml.train` and `ml.evaluate`) fetches the four files through torchvision's
downloader, which checks each file's MD5. The t10k split is the test set: evaluate on it, never
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
_IDX_TYPES: dict[int, np.dtype] = {
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


class MnistMissing(FileNotFoundError):
    """The MNIST IDX files are not in the folder; the message says where to put them."""


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


def missing_files(folder: Path | None = None) -> list[str]:
    """The MNIST files not in `folder` (MNIST_DIR's by default); empty when all four are there."""
    folder = folder or mnist_dir()
    return [name for pair in FILES.values() for name in pair if not (folder / name).is_file()]


def where_to_put_mnist(folder: Path | None = None) -> str:
    """What a user reads when MNIST is missing: which files, where, and the two ways to get them."""
    folder = folder or mnist_dir()
    names = ", ".join(name for pair in FILES.values() for name in pair)
    return (
        f"MNIST not found in {folder.resolve()}: put the four IDX files ({names}) there, or set "
        "MNIST_DIR to a folder that holds them, or fetch them (about 11 MB, MD5-checked) with "
        "`.venv/bin/python -m ml.train --download` (or `-m ml.evaluate --download`)"
    )


def download(folder: Path | None = None) -> Path:
    """Fetch the missing MNIST files into `folder` through torchvision's downloader, which tries
    its mirrors in turn and checks each file's MD5; the folder. Only on an explicit request."""
    from torchvision.datasets import MNIST
    from torchvision.datasets.utils import download_url

    folder = folder or mnist_dir()
    folder.mkdir(parents=True, exist_ok=True)
    md5 = dict(MNIST.resources)
    for name in missing_files(folder):
        errors = []
        for mirror in MNIST.mirrors:
            try:
                download_url(f"{mirror}{name}", root=str(folder), filename=name, md5=md5[name])
                break
            except (OSError, RuntimeError) as exc:  # URLError is an OSError; a bad MD5 a Runtime
                errors.append(f"{mirror}: {exc}")
        else:
            raise MnistMissing(f"could not download {name}: " + "; ".join(errors))
    return folder


def ensure_mnist(*, download_if_missing: bool = False) -> Path:
    """MNIST_DIR's folder when it holds MNIST; fetched first with `download_if_missing`; else
    SystemExit with where to put it (for the command-line tools)."""
    folder = mnist_dir()
    if missing_files(folder) and download_if_missing:
        download(folder)
    if missing_files(folder):
        raise SystemExit(where_to_put_mnist(folder))
    return folder


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
        raise MnistMissing(where_to_put_mnist(folder)) from exc
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
