"""What an attacker sends: images that lie about their size, archive bombs, absurd array headers,
deep JSON; and a measure of what they cost (peak RSS of a process during a request).

Each builder makes its payload in a fraction of a second and holds little memory, so a test can
measure the server's cost and not its own.
"""

from __future__ import annotations

import base64
import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

MiB = 1024 * 1024
GiB = 1024 * MiB


# --- Measuring --------------------------------------------------------------------------------


class PeakRSS:
    """Growth of a process's peak resident memory over a `with` block, in bytes.

    Linux keeps the peak (VmHWM) and lets its owner reset it (clear_refs 5), so the figure is the
    real peak during the block, however brief, not a sample."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.growth = 0

    def _status(self, field: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(field)

    def __enter__(self) -> PeakRSS:
        from tests.conftest import require

        clear_refs = Path(f"/proc/{self.pid}/clear_refs")
        require(clear_refs.exists(), "measuring peak RSS needs Linux's /proc/PID/clear_refs")
        clear_refs.write_text("5")
        self.before = self._status("VmRSS")
        return self

    def __exit__(self, *exc: object) -> None:
        self.growth = self._status("VmHWM") - self.before

    @property
    def mib(self) -> float:
        return self.growth / MiB


# --- Images -----------------------------------------------------------------------------------


def digit_png(size: int = 280) -> bytes:
    """A drawn "7", dark ink on white, as the page sends it (no MNIST needed)."""
    image = Image.new("L", (size, size), 255)
    pen = ImageDraw.Draw(image)
    s = size / 280
    pen.line([(70 * s, 60 * s), (210 * s, 60 * s), (120 * s, 230 * s)], fill=0, width=int(18 * s))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(data: bytes, kind: str = "png") -> str:
    return f"data:image/{kind};base64," + base64.b64encode(data).decode()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def huge_png(width: int, height: int) -> bytes:
    """A valid all-black 8-bit greyscale PNG of any size, a few hundred KB for 13000x13000."""
    row = b"\x00" * (1 + width)
    compressor = zlib.compressobj(6)
    rows_per_step = max(1, (4 * MiB) // len(row))
    idat = bytearray()
    for start in range(0, height, rows_per_step):
        idat += compressor.compress(row * min(rows_per_step, height - start))
    idat += compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", bytes(idat))
        + _png_chunk(b"IEND", b"")
    )


def png_claiming(width: int, height: int) -> bytes:
    """A PNG header that claims width x height, with no pixel data behind it."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IEND", b"")


def blank_webp(side: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (side, side), 255).save(buffer, format="WEBP", lossless=True, quality=0)
    return buffer.getvalue()


def gif_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (28, 28), 255).save(buffer, format="GIF")
    return buffer.getvalue()


# --- Archives ---------------------------------------------------------------------------------


def deflate_zeros(size: int) -> bytes:
    """Raw deflate of `size` zero bytes (size a multiple of 16 MiB), made in well under a second:
    after a full flush the compressor's state resets, so equal chunks compress to equal bytes."""
    chunk = 16 * MiB
    assert size % chunk == 0
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    piece = compressor.compress(bytes(chunk)) + compressor.flush(zlib.Z_FULL_FLUSH)
    return piece * (size // chunk) + compressor.flush()


# bz2.compress(bytes(2**30)): 1 GiB of zeros in 785 bytes. It takes 16 s to make (and 9 s to
# inflate), so it is kept here; a test checks that it inflates past 64 MiB.
BZIP2_GIB_OF_ZEROS = base64.b64decode(
    "QlpoOTFBWSZTWQ4J4t8BX45AAMAAAAggADCATUZCoCWpCoCXMUFZJlNZDgni3wFfjkAAwAAACCAAMIBNRkKgJakK"
    "gJcxQVkmU1kOCeLfAV+OQADAAAAIIAAwgE1GQqAlqQqAlzFBWSZTWQ4J4t8BX45AAMAAAAggADCATUZCoCWpCoCX"
    "MUFZJlNZDgni3wFfjkAAwAAACCAAMIBNRkKgJakKgJcxQVkmU1kOCeLfAV+OQADAAAAIIAAwgE1GQqAlqQqAlzFB"
    "WSZTWQ4J4t8BX45AAMAAAAggADCATUZCoCWpCoCXMUFZJlNZDgni3wFfjkAAwAAACCAAMIBNRkKgJakKgJcxQVkm"
    "U1kOCeLfAV+OQADAAAAIIAAwgE1GQqAlqQqAlzFBWSZTWQ4J4t8BX45AAMAAAAggADCATUZCoCWpCoCXMUFZJlNZ"
    "Dgni3wFfjkAAwAAACCAAMIBNRkKgJakKgJcxQVkmU1kOCeLfAV+OQADAAAAIIAAwgE1GQqAlqQqAlzFBWSZTWQ4J"
    "4t8BX45AAMAAAAggADCATUZCoCWpCoCXMUFZJlNZDgni3wFfjkAAwAAACCAAMIBNRkKgJakKgJcxQVkmU1kOCeLf"
    "AV+OQADAAAAIIAAwgE1GQqAlqQqAlzFBWSZTWQ4J4t8BX45AAMAAAAggADCATUZCoCWpCoCXMUFZJlNZDgni3wFf"
    "jkAAwAAACCAAMIBNRkKgJakKgJcxQVkmU1kOCeLfAV+OQADAAAAIIAAwgE1GQqAlqQqAlzFBWSZTWQ4J4t8BX45A"
    "AMAAAAggADCATUZCoCWpCoCXMUFZJlNZDgni3wFfjkAAwAAACCAAMIBNRkKgJakKgJcxQVkmU1kOCeLfAV+OQADA"
    "AAAIIAAwgE1GQqAlqQqAlzFBWSZTWQ4J4t8BX45AAMAAAAggADCATUZCoCWpCoCXMUFZJlNZDgni3wFfjkAAwAAA"
    "CCAAMIBNRkKgJakKgJcxQVkmU1lIfF/JAIpSyADAAAAEAAggADDMBSmmkSJDYUSJDxdyRThQkPaI5AI="
)


def zip_archive(members: list[dict], *, comment: bytes = b"") -> bytes:
    """A ZIP written by hand, so that it can lie. Each member: name, data (as stored in the
    archive), method (0 stored, 8 deflate, 12 bzip2, 14 LZMA), crc, declared (size), flags."""
    out = bytearray()
    directory = bytearray()
    for member in members:
        name = member["name"].encode()
        data = member["data"]
        method = member.get("method", 0)
        flags = member.get("flags", 0)
        crc = member.get("crc", zlib.crc32(data) if method == 0 else 0)
        declared = member.get("declared", len(data))
        offset = len(out)
        out += struct.pack(
            "<4sHHHHHIIIHH", b"PK\x03\x04", 20, flags, method, 0, 0, crc, len(data), declared,
            len(name), 0,
        ) + name + data  # fmt: skip
        directory += struct.pack(
            "<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, flags, method, 0, 0, crc, len(data),
            declared, len(name), 0, 0, 0, 0, 0, offset,
        ) + name  # fmt: skip
    end = struct.pack(
        "<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(members), len(members), len(directory), len(out),
        len(comment),
    )  # fmt: skip
    return bytes(out + directory + end + comment)


def zip_with_entries(count: int, *, announce: int | None = None) -> bytes:
    """`count` tiny stored entries; the end record announces `announce` of them (a lie if given)."""
    archive = zip_archive([{"name": f"{i}.png", "data": b""} for i in range(count)])
    if announce is None:
        return archive
    end = archive[-22:]
    end = end[:8] + struct.pack("<HH", announce, announce) + end[12:]
    return archive[:-22] + end


def lzma_zip_member(size: int) -> bytes:
    """The bytes of a zipfile-style LZMA member (4-byte header + properties + raw LZMA1)."""
    import lzma

    filters = [{"id": lzma.FILTER_LZMA1, "preset": 0}]
    props = lzma._encode_filter_properties(filters[0])  # zipfile writes the same header
    compressor = lzma.LZMACompressor(lzma.FORMAT_RAW, filters=filters)
    chunk = bytes(16 * MiB)
    body = b"".join(compressor.compress(chunk) for _ in range(size // (16 * MiB)))
    return struct.pack("<BBH", 9, 4, len(props)) + props + body + compressor.flush()


# --- Arrays -----------------------------------------------------------------------------------


def npy_with_header(shape_text: str, body: bytes = b"", dtype: str = "|u1") -> bytes:
    """A .npy file whose header says anything, e.g. shape '(4294967296, 4294967296)'."""
    header = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': {shape_text}, }}"
    header = header.ljust(118) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + body


def npy_of(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def idx_with_dims(dims: list[int], body: bytes = b"", type_code: int = 0x08) -> bytes:
    return bytes([0, 0, type_code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims) + body


# --- JSON -------------------------------------------------------------------------------------


def nested_list(depth: int) -> str:
    return "[" * depth + "]" * depth


def gzip_of_raw_deflate(raw: bytes, size: int) -> bytes:
    """A gzip member around a raw deflate stream that inflates to `size` bytes (CRC left 0)."""
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + raw + struct.pack("<II", 0, size % 2**32)
