"""MNIST from IDX files on disk (ml/data.py)."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from ml import data
from ml.data import (
    FILES,
    IdxError,
    MnistMissing,
    Split,
    load_extra,
    load_split,
    parse_idx,
    train_val_split,
)
from tests.mnist_sample import sample_split


def idx(array: np.ndarray, type_code: int = 0x08) -> bytes:
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(
        struct.pack(">I", n) for n in array.shape
    )
    return header + array.tobytes()


IMAGES = np.arange(3 * 28 * 28, dtype=np.uint64).reshape(3, 28, 28).astype(np.uint8)
LABELS = np.array([7, 2, 1], dtype=np.uint8)


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
def test_parse_idx_reads_uint8_images(compress):
    data = idx(IMAGES)
    parsed = parse_idx(gzip.compress(data) if compress else data)
    assert parsed.dtype == np.uint8
    np.testing.assert_array_equal(parsed, IMAGES)


def test_parse_idx_reads_big_endian_integers():
    values = np.array([1, -2, 70_000], dtype=">i4")
    np.testing.assert_array_equal(parse_idx(idx(values, 0x0C)), [1, -2, 70_000])


@pytest.mark.parametrize(
    "data",
    [
        idx(IMAGES)[:-1],  # body one byte short of what the header says
        idx(IMAGES) + b"\x00",  # one byte over
        idx(IMAGES)[:10],  # header cut off
        b"PK\x03\x04 a zip, not IDX",
        bytes([0, 0, 0x42, 1, 0, 0, 0, 1, 0]),  # unknown element type
    ],
    ids=["short", "long", "truncated-header", "not-idx", "bad-type"],
)
def test_parse_idx_refuses_malformed_files(data):
    with pytest.raises(IdxError):
        parse_idx(data)


def test_header_body_mismatch_is_an_idx_error():
    with pytest.raises(IdxError, match="header says"):
        parse_idx(idx(IMAGES)[:-1])


def test_mnist_dir_comes_from_the_environment(tmp_path, monkeypatch):
    images_file, labels_file = FILES["test"]
    (tmp_path / images_file).write_bytes(gzip.compress(idx(IMAGES)))
    (tmp_path / labels_file).write_bytes(gzip.compress(idx(LABELS)))
    monkeypatch.setenv("MNIST_DIR", str(tmp_path))
    split = load_split("test")
    np.testing.assert_array_equal(split.images, IMAGES)
    assert split.labels.dtype == np.int64
    assert split.labels.tolist() == [7, 2, 1]


def test_missing_mnist_says_exactly_where_to_put_it(tmp_path, monkeypatch):
    nowhere = tmp_path / "nowhere"
    monkeypatch.setenv("MNIST_DIR", str(nowhere))
    with pytest.raises(MnistMissing) as missing:
        load_split("train")
    message = str(missing.value)
    assert str(nowhere) in message and "MNIST_DIR" in message and "--download" in message
    assert all(name in message for pair in FILES.values() for name in pair)


def test_the_command_line_tools_exit_with_where_to_put_it_and_never_download_unasked(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("MNIST_DIR", str(tmp_path))
    monkeypatch.setattr(data, "download", lambda folder=None: pytest.fail("downloaded unasked"))
    with pytest.raises(SystemExit) as stopped:
        data.ensure_mnist()
    assert str(tmp_path) in str(stopped.value.code)


def test_download_fetches_each_missing_file_with_its_md5_trying_the_next_mirror(
    tmp_path, monkeypatch
):
    from torchvision.datasets import MNIST, utils

    train_images, train_labels = FILES["train"]
    (tmp_path / train_images).write_bytes(b"already here")
    calls = []

    def fake_download_url(url: str, root: str, filename: str, md5: str) -> None:
        calls.append((url, filename, md5))
        if url.startswith(MNIST.mirrors[0]) and filename == train_labels:
            raise OSError("mirror down")
        (tmp_path / filename).write_bytes(b"fetched")

    monkeypatch.setattr(utils, "download_url", fake_download_url)
    monkeypatch.setenv("MNIST_DIR", str(tmp_path))
    assert data.ensure_mnist(download_if_missing=True) == tmp_path
    md5 = dict(MNIST.resources)
    assert train_images not in {filename for _, filename, _ in calls}
    assert {(filename, digest) for _, filename, digest in calls} == {
        (name, md5[name]) for name in (train_labels, *FILES["test"])
    }
    assert [url for url, filename, _ in calls if filename == train_labels] == [
        f"{mirror}{train_labels}" for mirror in MNIST.mirrors[:2]
    ]
    assert data.missing_files(tmp_path) == []


@pytest.mark.usefixtures("requires_full_mnist")
def test_the_committed_sample_is_the_first_digits_of_each_split():
    for name in ("test", "train"):
        sample, full = sample_split(name), load_split(name)
        count = len(sample)
        assert np.array_equal(sample.images, full.images[:count])
        assert np.array_equal(sample.labels, full.labels[:count])


@pytest.mark.usefixtures("requires_full_mnist")
@pytest.mark.parametrize("name, size", [("train", 60_000), ("test", 10_000)])
def test_load_split_shapes(name, size):
    split = load_split(name)
    assert split.images.shape == (size, 28, 28)
    assert split.images.dtype == np.uint8
    assert split.labels.shape == (size,)
    assert set(np.unique(split.labels)) == set(range(10))


def test_validation_is_a_seeded_disjoint_slice_of_training():
    images = np.arange(100, dtype=np.uint8).reshape(100, 1, 1).repeat(28, 1).repeat(28, 2)
    split = Split(images, np.arange(100) % 10)
    train, val = train_val_split(split, val_size=20, seed=3)
    again, _ = train_val_split(split, val_size=20, seed=3)
    assert (len(train), len(val)) == (80, 20)
    seen_train = set(train.images[:, 0, 0].tolist())
    assert seen_train.isdisjoint(val.images[:, 0, 0].tolist())
    assert len(seen_train) == 80
    np.testing.assert_array_equal(train.images, again.images)


def test_load_extra_reads_an_npz_and_refuses_wrong_shapes(tmp_path):
    good = tmp_path / "good.npz"
    np.savez(good, images=IMAGES, labels=LABELS)
    extra = load_extra(good)
    assert len(extra) == 3
    assert extra.labels.dtype == np.int64
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.zeros((3, 32, 32), dtype=np.uint8), labels=LABELS)
    with pytest.raises(ValueError, match="28 x 28"):
        load_extra(bad)
