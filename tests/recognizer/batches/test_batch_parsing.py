"""Reading a batch request into items, with no database (no django_db mark: a query would fail).

What the API answers for each refusal (its HTTP status) is tested in tests/recognizer/api.
"""

from __future__ import annotations

import gzip
import io
import zipfile

import numpy as np
import pytest
from django.test import override_settings

from recognizer.batches import parsing
from recognizer.errors import DomainError
from tests.factories import data_url, digit_png, mnist_digit, npy
from tests.mnist_sample import idx
from tests.recognizer.batch_helpers import lying_npy, make_zip


def read(data: bytes, name: str = "digits.bin") -> list[parsing.Item]:
    return parsing.items_from_file(stream=io.BytesIO(data), filename=name)


def stored_pixels(item: parsing.Item) -> np.ndarray:
    """An array row as stored: numbers, no image codec in the way."""
    assert item.content_type == parsing.ARRAY_CONTENT_TYPE
    return parsing.array_from_npy(item.data)


def test_zip_members_in_archive_order_without_folders_or_metadata():
    archive = make_zip(
        {
            "digits/": b"",
            "digits/b.png": digit_png(2),
            "digits/a.png": digit_png(5),
            "__MACOSX/digits/._a.png": b"resource fork",
            "digits/.DS_Store": b"finder",
            "digits/Thumbs.db": b"windows",
            "digits/readme.txt": b"hello",
        },
        compression=zipfile.ZIP_DEFLATED,
    )
    items = read(archive, "anything.dat")
    assert [item.name for item in items] == ["digits/b.png", "digits/a.png", "digits/readme.txt"]
    assert items[1].data == digit_png(5)
    assert [item.content_type for item in items][:2] == ["image/png", "image/png"]


def test_npy_array_is_recognised_by_content_and_stored_losslessly():
    pixels = np.stack([mnist_digit(d) for d in (0, 1, 2)])
    items = read(npy(pixels), "looks-like-a.png")
    assert [item.name for item in items] == [
        "looks-like-a.png[0]",
        "looks-like-a.png[1]",
        "looks-like-a.png[2]",
    ]
    assert {item.content_type for item in items} == {parsing.ARRAY_CONTENT_TYPE}
    for item, row in zip(items, pixels, strict=True):
        # A PNG, so the admin's thumbnail shows it; lossless, so the worker sees the array's row.
        assert np.array_equal(stored_pixels(item), row)


@pytest.mark.parametrize(
    "convert",
    [
        lambda a: a.astype(np.float32) / 255.0,
        lambda a: a.astype(np.int64),
        lambda a: a.reshape(len(a), 784),
        lambda a: a[:, None],
        lambda a: a > 127,
    ],
    ids=["float-0-1", "int64", "flat-784", "n-1-h-w", "bool"],
)
def test_npy_dtypes_and_shapes(convert):
    pixels = np.stack([mnist_digit(4), mnist_digit(9)])
    converted = convert(pixels)
    stored = np.stack([stored_pixels(item) for item in read(npy(converted))])
    expected = converted.astype(np.uint8) * 255 if converted.dtype == np.bool_ else pixels
    assert np.abs(stored.astype(int) - expected).max() <= 1


@pytest.mark.parametrize("gzipped", [False, True], ids=["idx", "idx-gz"])
def test_idx_file_as_mnist_ships_it(gzipped):
    pixels = np.stack([mnist_digit(d) for d in range(4)])
    data = idx(pixels)
    items = read(gzip.compress(data) if gzipped else data, "t10k.idx")
    assert [item.name for item in items] == [f"t10k.idx[{i}]" for i in range(4)]
    assert np.array_equal(stored_pixels(items[3]), pixels[3])


def test_a_single_image_as_file_is_a_one_item_job():
    assert [(item.name, item.data) for item in read(digit_png(6), "six.png")] == [
        ("six.png", digit_png(6))
    ]


def test_zip_member_over_the_image_cap_fails_alone():
    archive = make_zip(
        {"bomb.png": bytes(50 * 1024 * 1024), "ok.png": digit_png(8)}, zipfile.ZIP_DEFLATED
    )
    bomb, ok = read(archive)
    assert (bomb.error_code, bomb.data) == ("image_too_large", b"")
    assert (ok.error_code, ok.data) == ("", digit_png(8))


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"just some bytes that are no container", "unsupported_file"),
        (b"PK\x03\x04 a truncated zip", "invalid_file"),
        (lying_npy(), "invalid_file"),
        (npy(np.array([{"a": 1}], dtype=object)), "invalid_array"),
        (npy(np.full((1, 28, 28), 300, np.int32)), "invalid_array"),
        (npy(np.full((1, 28, 28), np.nan, np.float32)), "invalid_array"),
        (npy(np.zeros((28, 28, 3, 2), np.uint8)), "invalid_array"),
        (idx(np.arange(5, dtype=np.uint8)), "invalid_array"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x02", "invalid_file"),
        (b"\x1f\x8b not really gzip", "invalid_file"),
        (make_zip({"folder/": b""}), "empty_batch"),
    ],
    ids=[
        "unknown-bytes",
        "truncated-zip",
        "npy-header-lies",
        "npy-objects",
        "values-over-255",
        "nan",
        "wrong-shape",
        "idx-labels",
        "idx-truncated",
        "bad-gzip",
        "zip-without-files",
    ],
)
def test_a_bad_container_is_refused_with_a_code_and_message(payload, code):
    with pytest.raises(DomainError) as refused:
        read(payload)
    assert refused.value.code == code
    assert refused.value.message


def test_a_bad_json_item_fails_alone():
    items = parsing.items_from_json(
        images=[
            {"name": "good", "image": data_url(digit_png(1))},
            {"name": "not-base64", "image": "@@@"},
            {"name": "no-image"},
            "not an object",
        ]
    )
    assert [(item.name, item.error_code) for item in items] == [
        ("good", ""),
        ("not-base64", "invalid_base64"),
        ("no-image", "invalid"),
        ("", "invalid"),
    ]
    assert all(item.error for item in items[1:])


@override_settings(BATCH_MAX_ITEMS=3)
def test_too_many_items_is_refused_before_any_is_converted():
    with pytest.raises(DomainError) as refused:
        read(npy(np.zeros((4, 28, 28), np.uint8)))
    assert refused.value.code == "too_many_items"
    assert "3" in refused.value.message


@override_settings(BATCH_MAX_BYTES=3 * 1024 * 1024)
def test_zip_bomb_stops_at_the_byte_cap():
    zeros = bytes(1024 * 1024 + 1)  # each member under MAX_IMAGE_BYTES, all together over the cap
    archive = make_zip({f"{i}.png": zeros for i in range(4)}, zipfile.ZIP_DEFLATED)
    with pytest.raises(DomainError) as refused:
        read(archive)
    assert refused.value.code == "batch_too_large"
