"""Reading a batch request into items, with no database: a JSON list, multipart files, or one
`file` holding a ZIP, a `.npy` array or an IDX file, told apart by their first bytes, never by
their names.

Every count and size is checked before the work it bounds: the body against BATCH_MAX_BYTES, the
ZIP's directory before it is read and each member while it is inflated (recognizer/archive.py), a
.npy or IDX header before anything is allocated, each image's pixels from its header on arrival.
One bad image becomes an Item with an `error_code` and fails alone; a bad container refuses the
whole request with a DomainError.
"""

from __future__ import annotations

import ast
import io
import math
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.utils.datastructures import MultiValueDict

from ml.data import IdxError, parse_idx
from ml.preprocess import PreprocessError, open_image
from recognizer import archive
from recognizer.errors import DomainError
from recognizer.images import (
    IMAGE_TYPES,
    decode_base64_image,
    image_too_large,
    over_image_limit,
    sniff_content_type,
)
from recognizer.limits import image_limits

# Array items are stored as numbers, each row a small .npy (uint8, its own shape): no image codec on
# the way in or out, and the worker frames a whole chunk of them at once (`preprocess_arrays`).
ARRAY_CONTENT_TYPE = "application/x-npy"

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_NPY_MAGIC = b"\x93NUMPY"
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass
class Item:
    """One image of a job as the request stored it; `error_code` set: refused before scoring."""

    name: str
    data: bytes
    content_type: str = ""
    error_code: str = ""
    error: str = ""


def _too_large_item(name: str, size: int) -> Item:
    error = image_too_large(size)
    return Item(name, b"", error_code=error.code, error=error.message)


def image_item(name: str, data: bytes) -> Item:
    """An image as it arrives: its format and its pixels checked from its header (nothing is
    decoded), so a 13000x13000 PNG of a few hundred KB is refused here, never stored, never
    decoded by the worker or the admin."""
    try:
        with open_image(data, limits=image_limits()):
            pass
    except PreprocessError as exc:
        return Item(name, b"", error_code=exc.code, error=str(exc))
    return Item(name, data, sniff_content_type(data))


# --- Reading a request --------------------------------------------------------------------------


def too_many_items_error(count: int | None = None) -> DomainError:
    got = f" (got {count})" if count is not None else ""
    return DomainError(
        "too_many_items",
        f"a batch holds at most {settings.BATCH_MAX_ITEMS} images{got}",
    )


def too_large_error() -> DomainError:
    return DomainError(
        "batch_too_large",
        f"a batch holds at most {settings.BATCH_MAX_BYTES} bytes",
    )


def parse_request(*, data: object, files: MultiValueDict) -> list[Item]:
    """The items of a batch request: JSON `{"images": [{"name", "image"}, ...]}`, multipart
    repeated `images` files, or multipart `file` holding a ZIP, a .npy array or an IDX file."""
    uploads = files.getlist("images")
    containers = files.getlist("file")
    if uploads and containers:
        raise DomainError("invalid", "send either `images` files or one `file`, not both")
    if len(containers) > 1:
        raise DomainError("invalid", "send one `file` per batch")
    if containers:
        upload = containers[0]
        return items_from_file(stream=upload, filename=upload.name or "")
    if uploads:
        return items_from_uploads(uploads=uploads)
    images = data.get("images") if isinstance(data, Mapping) else None
    if images is None:
        raise DomainError(
            "required",
            'send JSON {"images": [{"name": ..., "image": ...}]}, multipart `images` files '
            "or a multipart `file` (ZIP, .npy or IDX)",
        )
    if not isinstance(images, list):
        raise DomainError("invalid", "images must be a list of {name, image} objects")
    return items_from_json(images=images)


def check_count(count: int) -> None:
    if count == 0:
        raise DomainError("empty_batch", "the batch holds no images")
    if count > settings.BATCH_MAX_ITEMS:
        raise too_many_items_error(count)


class _ByteBudget:
    """The bytes a job's images may take once decoded or unpacked (BATCH_MAX_BYTES)."""

    def __init__(self) -> None:
        self.left = settings.BATCH_MAX_BYTES

    def take(self, size: int) -> None:
        self.left -= size
        if self.left < 0:
            raise too_large_error()


def items_from_json(*, images: list) -> list[Item]:
    check_count(len(images))
    budget = _ByteBudget()
    items = []
    for index, entry in enumerate(images):
        name = ""
        if isinstance(entry, dict):
            name = str(entry.get("name") or "")[:255]
            value = entry.get("image")
        else:
            value = None
        if not isinstance(value, str):
            items.append(
                Item(name, b"", error_code="invalid", error=f"item {index}: image must be a string")
            )
            continue
        try:
            image = decode_base64_image(value)
        except DomainError as exc:
            items.append(Item(name, b"", error_code=exc.code, error=exc.message))
            continue
        budget.take(len(image))
        items.append(image_item(name, image))
    return items


def items_from_uploads(*, uploads: list) -> list[Item]:
    check_count(len(uploads))
    items = []
    for upload in uploads:
        name = (upload.name or "")[:255]
        if over_image_limit(upload.size):
            # Not read at all: the item fails alone, the others go on.
            items.append(_too_large_item(name, upload.size))
            continue
        items.append(image_item(name, upload.read()))
    return items


def items_from_file(*, stream: io.IOBase, filename: str = "") -> list[Item]:
    """A ZIP of images, a .npy array, an IDX file (either may be gzipped) or one image."""
    head = stream.read(8)
    stream.seek(0)
    if head.startswith(_ZIP_MAGIC):
        return items_from_zip(stream=stream)
    data = stream.read(settings.BATCH_MAX_BYTES + 1)
    if len(data) > settings.BATCH_MAX_BYTES:
        raise too_large_error()
    if data.startswith(_GZIP_MAGIC):
        data = _gunzip(data)
    if data.startswith(_NPY_MAGIC):
        return items_from_array(pixels=_parse_npy(data), filename=filename)
    if data[:2] == b"\x00\x00":
        try:
            pixels = parse_idx(data)
        except IdxError as exc:
            raise DomainError("invalid_file", f"not a readable IDX file: {exc}") from exc
        return items_from_array(pixels=pixels, filename=filename)
    if sniff_content_type(data) in IMAGE_TYPES:
        if over_image_limit(len(data)):
            raise image_too_large(len(data))
        item = image_item(filename[:255], data)
        if item.error_code:
            raise DomainError(item.error_code, item.error)
        return [item]
    raise DomainError(
        "unsupported_file",
        "file must be a ZIP of images, a .npy array or an IDX file (optionally gzipped)",
    )


def _gunzip(data: bytes) -> bytes:
    """Decompress within the job's byte cap. A first pass only counts what the data inflates to,
    in small pieces it throws away, so a gzip bomb is refused at the cap having held next to
    nothing; only data that fits is inflated again, to keep."""
    cap = settings.BATCH_MAX_BYTES
    counter = zlib.decompressobj(wbits=31)
    size = 0
    pending = data
    try:
        while pending and not counter.eof:
            size += len(counter.decompress(pending, _GUNZIP_PIECE))
            pending = counter.unconsumed_tail
            if size > cap:
                raise too_large_error()
        return zlib.decompressobj(wbits=31).decompress(data, cap + 1)
    except zlib.error as exc:
        raise DomainError("invalid_file", f"the gzip data is corrupt: {exc}") from exc


_GUNZIP_PIECE = 1024 * 1024


# --- ZIP ----------------------------------------------------------------------------------------

# The central directory is read into memory: on average an entry may take this many bytes.
ZIP_DIRECTORY_BYTES_PER_MEMBER = 1024


def _skipped_member(member: archive.Member) -> bool:
    """Folders and the metadata that macOS and Windows put into archives are not images."""
    base = member.filename.rsplit("/", 1)[-1]
    return (
        member.is_dir()
        or member.filename.startswith("__MACOSX/")
        or base.startswith(".")
        or base.lower() in ("thumbs.db", "desktop.ini")
    )


def items_from_zip(*, stream: io.IOBase) -> list[Item]:
    """Only stored and deflate members; the directory bounded before it is read; every member
    inflated to at most one byte past its cap, and the job's total within BATCH_MAX_BYTES."""
    limit = settings.BATCH_ZIP_MAX_MEMBERS
    try:
        members = archive.read_directory(
            stream,
            max_members=limit,
            max_directory_bytes=limit * ZIP_DIRECTORY_BYTES_PER_MEMBER,
        )
        members = [member for member in members if not _skipped_member(member)]
        archive.check_methods(members)
        check_count(len(members))
        budget = _ByteBudget()
        return [_zip_item(stream, member, budget) for member in members]
    except archive.ArchiveError as exc:
        raise DomainError(exc.code, exc.message) from exc


def _zip_item(stream: io.IOBase, member: archive.Member, budget: _ByteBudget) -> Item:
    name = member.filename[:255]
    if over_image_limit(member.declared_size):
        return _too_large_item(name, member.declared_size)  # never inflated
    if member.declared_size > budget.left:
        raise too_large_error()
    try:
        data = archive.read_member(stream, member, limit=settings.MAX_IMAGE_BYTES)
    except archive.MemberError as exc:
        # Encrypted, corrupt, a bad CRC: this member fails alone.
        return Item(name, b"", error_code=exc.code, error=exc.message)
    budget.take(len(data))
    return image_item(name, data)


# --- Arrays (.npy, IDX) -------------------------------------------------------------------------


# At most N x 1 x H x W; numpy itself refuses more than 64 dimensions, and a header is short.
NPY_MAX_DIMENSIONS = 4
NPY_MAX_HEADER_BYTES = 4096


def _parse_npy(data: bytes) -> np.ndarray:
    """A .npy file without pickles, its header checked before anything is allocated: at most
    NPY_MAX_DIMENSIONS non-negative whole dimensions whose product (in Python integers, which do
    not wrap) matches the bytes that follow. np.load would allocate whatever the header claims."""
    if len(data) < 10 or data[6] not in (1, 2, 3):
        raise DomainError("invalid_file", "not a readable .npy file: bad magic or version")
    if data[6] == 1:
        (header_len,) = struct.unpack("<H", data[8:10])
        start = 10
    else:
        (header_len,) = struct.unpack("<I", data[8:12])
        start = 12
    if header_len > NPY_MAX_HEADER_BYTES or start + header_len > len(data):
        raise DomainError("invalid_file", f"not a readable .npy file: header of {header_len} bytes")
    try:
        header = ast.literal_eval(data[start : start + header_len].decode("latin1"))
        shape, fortran = header["shape"], header["fortran_order"]
        dtype = np.lib.format.descr_to_dtype(header["descr"])
    except (ValueError, SyntaxError, TypeError, KeyError, OverflowError, RecursionError) as exc:
        raise DomainError("invalid_file", f"not a readable .npy file: {exc}") from exc
    if (
        not isinstance(shape, tuple)
        or len(shape) > NPY_MAX_DIMENSIONS
        or not all(type(size) is int and size >= 0 for size in shape)
        or not isinstance(fortran, bool)
    ):
        raise DomainError(
            "invalid_array",
            f"the shape must be at most {NPY_MAX_DIMENSIONS} non-negative whole numbers, "
            f"not {str(shape)[:100]}",
        )
    if dtype.hasobject or dtype.kind not in "biuf":
        raise DomainError("invalid_array", f"array values must be numbers, not {dtype}")
    count = math.prod(shape)
    offset = start + header_len
    if len(data) - offset != count * dtype.itemsize:
        raise DomainError(
            "invalid_file",
            f".npy header says {count * dtype.itemsize} bytes, the file holds {len(data) - offset}",
        )
    array = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    return array.reshape(shape, order="F" if fortran else "C")


def as_images(pixels: np.ndarray) -> np.ndarray:
    """N x H x W uint8 grayscale from N x H x W, N x 1 x H x W or N x 784 (flat 28x28) numbers in
    0-255 or 0.0-1.0, as a whole array (so a blank row stays blank)."""
    if pixels.ndim == 4 and pixels.shape[1] == 1:
        pixels = pixels[:, 0]
    elif pixels.ndim == 2 and pixels.shape[1] == 28 * 28:
        pixels = pixels.reshape(-1, 28, 28)
    if pixels.ndim != 3 or min(pixels.shape[1:], default=0) < 1:
        raise DomainError(
            "invalid_array",
            f"expected N x H x W images (or N x 784), got shape {tuple(pixels.shape)}",
        )
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype == np.bool_:
        return pixels.astype(np.uint8) * 255
    is_float = pixels.dtype.kind == "f"
    if is_float and not np.isfinite(pixels).all():
        raise DomainError("invalid_array", "the array holds NaN or infinite values")
    low, high = float(pixels.min()), float(pixels.max())
    if low < 0 or high > 255:
        raise DomainError("invalid_array", "pixel values must be in 0-255 or 0.0-1.0")
    if is_float:
        return np.rint(pixels * 255.0 if high <= 1.0 else pixels).astype(np.uint8)
    return pixels.astype(np.uint8)


def items_from_array(*, pixels: np.ndarray, filename: str = "") -> list[Item]:
    # Counted before any conversion, so an oversized array is refused without copying it.
    check_count(pixels.shape[0] if pixels.ndim else 1)
    images = as_images(pixels)
    try:
        image_limits().check(images.shape[2], images.shape[1])
    except PreprocessError as exc:
        raise DomainError(exc.code, str(exc)) from exc
    prefix = filename.rsplit("/", 1)[-1][:200]
    return [
        Item(f"{prefix}[{index}]" if prefix else str(index), array_npy(image), ARRAY_CONTENT_TYPE)
        for index, image in enumerate(images)
    ]


def array_npy(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(image, dtype=np.uint8), allow_pickle=False)
    return buffer.getvalue()


def array_from_npy(data: bytes) -> np.ndarray:
    """An item stored by `array_npy`, back as its H x W uint8 array (never a pickle)."""
    return np.load(io.BytesIO(data), allow_pickle=False)
