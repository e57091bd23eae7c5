"""Reading a batch request into items, with no database: a JSON list, multipart files, or one
`file` holding a ZIP, a `.npy` array or an IDX file, told apart by their first bytes, never by
their names.

Every count and size is checked before the work it bounds: the body against BATCH_MAX_BYTES, the
ZIP's entries before its directory is read, each member before it is inflated, a .npy header
against the bytes that follow. One bad image becomes an Item with an `error_code` and fails alone;
a bad container refuses the whole request with a DomainError.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from PIL import Image

from ml.data import IdxError, parse_idx
from recognizer.errors import DomainError
from recognizer.images import (
    IMAGE_TYPES,
    decode_base64_image,
    image_too_large,
    over_image_limit,
    sniff_content_type,
)

# Array items are stored as a lossless 8-bit PNG of the row (so the admin shows them like any
# image); this content type tells the worker to run them through `preprocess_array`.
ARRAY_CONTENT_TYPE = "image/png; source=array"

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


def check_body_size(*, content_length: int) -> None:
    """Refuse an oversized body from its Content-Length, before a byte of it is parsed."""
    if content_length > settings.BATCH_MAX_BYTES:
        raise too_large_error()


def parse_request(*, data: Mapping, files: Mapping) -> list[Item]:
    """The items of a batch request: JSON `{"images": [{"name", "image"}, ...]}`, multipart
    repeated `images` files, or multipart `file` holding a ZIP, a .npy array or an IDX file."""
    uploads = files.getlist("images") if hasattr(files, "getlist") else []
    containers = files.getlist("file") if hasattr(files, "getlist") else []
    if uploads and containers:
        raise DomainError("invalid", "send either `images` files or one `file`, not both")
    if len(containers) > 1:
        raise DomainError("invalid", "send one `file` per batch")
    if containers:
        upload = containers[0]
        return items_from_file(stream=upload, filename=upload.name or "")
    if uploads:
        return items_from_uploads(uploads=uploads)
    images = data.get("images") if hasattr(data, "get") else None
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
        items.append(Item(name, image, sniff_content_type(image)))
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
        image = upload.read()
        items.append(Item(name, image, sniff_content_type(image)))
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
        return [Item(filename[:255], data, sniff_content_type(data))]
    raise DomainError(
        "unsupported_file",
        "file must be a ZIP of images, a .npy array or an IDX file (optionally gzipped)",
    )


def _gunzip(data: bytes) -> bytes:
    """Decompress with the job's byte cap, so a gzip bomb stops at BATCH_MAX_BYTES."""
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(data, settings.BATCH_MAX_BYTES + 1)
    except zlib.error as exc:
        raise DomainError("invalid_file", f"the gzip data is corrupt: {exc}") from exc
    if len(out) > settings.BATCH_MAX_BYTES:
        raise too_large_error()
    return out


# --- ZIP ----------------------------------------------------------------------------------------


def _zip_entry_count(stream: io.IOBase) -> int | None:
    """Entries the ZIP's end record announces, read before zipfile parses the central directory
    (whose objects for a million tiny entries would fill the web process's memory)."""
    stream.seek(0, io.SEEK_END)
    size = stream.tell()
    tail_size = min(size, 22 + 65535)
    stream.seek(size - tail_size)
    tail = stream.read(tail_size)
    stream.seek(0)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        return None
    (entries,) = struct.unpack("<H", tail[at + 10 : at + 12])
    locator = at - 20
    if locator >= 0 and tail[locator : locator + 4] == b"PK\x06\x07":
        # ZIP64: the real count is in the ZIP64 end record the locator points to.
        (record_offset,) = struct.unpack("<Q", tail[locator + 8 : locator + 16])
        stream.seek(record_offset)
        record = stream.read(56)
        stream.seek(0)
        if record[:4] == b"PK\x06\x06" and len(record) == 56:
            (entries,) = struct.unpack("<Q", record[32:40])
    return entries


def _skipped_member(info: zipfile.ZipInfo) -> bool:
    """Folders and the metadata that macOS and Windows put into archives are not images."""
    base = info.filename.rsplit("/", 1)[-1]
    return (
        info.is_dir()
        or info.filename.startswith("__MACOSX/")
        or base.startswith(".")
        or base.lower() in ("thumbs.db", "desktop.ini")
    )


def items_from_zip(*, stream: io.IOBase) -> list[Item]:
    entries = _zip_entry_count(stream)
    if entries is not None and entries > settings.BATCH_ZIP_MAX_MEMBERS:
        raise DomainError(
            "too_many_items",
            f"the ZIP has {entries} entries; at most {settings.BATCH_ZIP_MAX_MEMBERS} are read",
        )
    try:
        archive = zipfile.ZipFile(stream)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as exc:
        raise DomainError("invalid_file", f"not a readable ZIP file: {exc}") from exc
    with archive:
        members = [info for info in archive.infolist() if not _skipped_member(info)]
        if len(archive.infolist()) > settings.BATCH_ZIP_MAX_MEMBERS:
            raise DomainError("too_many_items", "the ZIP has too many entries")
        check_count(len(members))
        budget = _ByteBudget()
        return [_zip_item(archive, info, budget) for info in members]


def _zip_item(archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: _ByteBudget) -> Item:
    name = info.filename[:255]
    if over_image_limit(info.file_size):
        return _too_large_item(name, info.file_size)
    try:
        with archive.open(info) as member:
            # Never trust the header's size: read at most one byte past each cap. The job's budget
            # bounds the total a ZIP bomb can make us inflate.
            data = member.read(min(settings.MAX_IMAGE_BYTES, max(budget.left, 0)) + 1)
    except (zipfile.BadZipFile, RuntimeError, NotImplementedError, OSError, EOFError) as exc:
        # Encrypted, an unsupported compression, a bad CRC: this member fails alone.
        return Item(name, b"", error_code="unreadable_member", error=f"cannot read {name}: {exc}")
    if over_image_limit(len(data)):
        return _too_large_item(name, len(data))
    budget.take(len(data))
    return Item(name, data, sniff_content_type(data))


# --- Arrays (.npy, IDX) -------------------------------------------------------------------------


def _parse_npy(data: bytes) -> np.ndarray:
    """A .npy file without pickles, checking the header's shape against the bytes that follow
    before anything is allocated (np.load would allocate whatever the header claims)."""
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
    except (ValueError, SyntaxError, OSError) as exc:
        raise DomainError("invalid_file", f"not a readable .npy file: {exc}") from exc
    if dtype.hasobject or dtype.kind not in "biuf":
        raise DomainError("invalid_array", f"array values must be numbers, not {dtype}")
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    offset = stream.tell()
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
    prefix = filename.rsplit("/", 1)[-1][:200]
    return [
        Item(f"{prefix}[{index}]" if prefix else str(index), array_png(image), ARRAY_CONTENT_TYPE)
        for index, image in enumerate(images)
    ]


def array_png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    # Level 1: ten thousand small rows encode in well under a second; the PNG stays lossless.
    Image.fromarray(np.ascontiguousarray(image), mode="L").save(
        buffer, format="PNG", compress_level=1
    )
    return buffer.getvalue()
