"""Reading an uploaded ZIP without trusting it.

Python's zipfile believes an archive: it parses a central directory of any size into objects, it
inflates bzip2 and LZMA members without an output cap (893 bytes that claimed 1 KiB inflated to
1 GiB), and it stops a member at the size its header declares. This reader:

- bounds the central directory before reading it: the end record's entry count and directory size
  are checked, then the directory is walked record by record and the count checked again (the
  end record may lie about either);
- accepts only stored and deflate members (`unsupported_compression` otherwise, before anything is
  inflated);
- counts the bytes it inflates and stops one past the cap; a member that inflates past the size
  it declares is a lie, and the whole archive is refused.

The limits are arguments; recognizer/batches/parsing.py passes the settings.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

STORED, DEFLATED = 0, 8
ALLOWED_METHODS = {STORED: "stored", DEFLATED: "deflate"}

_EOCD = b"PK\x05\x06"
_EOCD64 = b"PK\x06\x06"
_EOCD64_LOCATOR = b"PK\x06\x07"
_CENTRAL = b"PK\x01\x02"
_LOCAL = b"PK\x03\x04"
_EOCD_SIZE, _CENTRAL_SIZE, _LOCAL_SIZE = 22, 46, 30
_MAX_COMMENT = 65535
_ZIP64_MARK = 0xFFFFFFFF
_READ_CHUNK = 64 * 1024


class ArchiveError(ValueError):
    """The archive as a whole is refused: a stable `code` and a message (the API maps the code to
    an HTTP status, recognizer/api/errors.py)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class MemberError(ValueError):
    """One member cannot be read (encrypted, corrupt, over the per-item cap): it fails alone."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass(frozen=True)
class Member:
    filename: str
    method: int
    flags: int
    crc: int
    compressed_size: int
    declared_size: int
    header_offset: int  # where its local header is, from the start of the stream

    def is_dir(self) -> bool:
        return self.filename.endswith("/")

    @property
    def encrypted(self) -> bool:
        return bool(self.flags & 0x1)


def read_directory(
    stream: io.IOBase, *, max_members: int, max_directory_bytes: int
) -> list[Member]:
    """Every entry of the central directory, after bounding it (`too_many_items`, 413)."""
    stream.seek(0, io.SEEK_END)
    size = stream.tell()
    tail_size = min(size, _EOCD_SIZE + _MAX_COMMENT)
    stream.seek(size - tail_size)
    tail = stream.read(tail_size)
    at = tail.rfind(_EOCD)
    if at < 0 or at + _EOCD_SIZE > len(tail):
        raise ArchiveError("invalid_file", "not a readable ZIP file: no end of central directory")
    eocd_pos = size - tail_size + at
    disk, cd_disk, _, entries, cd_size, cd_offset = struct.unpack("<HHHHII", tail[at + 4 : at + 20])
    directory_end = eocd_pos
    locator = at - 20
    if locator >= 0 and tail[locator : locator + 4] == _EOCD64_LOCATOR:
        (record_pos,) = struct.unpack("<Q", tail[locator + 8 : locator + 16])
        stream.seek(record_pos)
        record = stream.read(56)
        if len(record) != 56 or record[:4] != _EOCD64:
            raise ArchiveError("invalid_file", "not a readable ZIP file: bad ZIP64 end record")
        disk, cd_disk = struct.unpack("<II", record[16:24])
        entries, cd_size, cd_offset = struct.unpack("<QQQ", record[32:56])
        directory_end = record_pos
    if disk != 0 or cd_disk != 0:
        raise ArchiveError("invalid_file", "multi-volume ZIP files are not supported")
    if entries > max_members:
        raise ArchiveError(
            "too_many_items",
            f"the ZIP has {entries} entries; at most {max_members} are read",
        )
    if cd_size > max_directory_bytes:
        raise ArchiveError(
            "too_many_items",
            f"the ZIP's directory is {cd_size} bytes; at most {max_directory_bytes} are read",
        )
    # Data before the archive (a self-extractor's stub) shifts every offset the same way.
    shift = directory_end - cd_size - cd_offset
    if shift < 0:
        raise ArchiveError("invalid_file", "not a readable ZIP file: bad directory offset")
    stream.seek(cd_offset + shift)
    directory = stream.read(cd_size)
    if len(directory) != cd_size:
        raise ArchiveError("invalid_file", "not a readable ZIP file: truncated directory")
    return _walk(directory, shift=shift, max_members=max_members)


def _walk(directory: bytes, *, shift: int, max_members: int) -> list[Member]:
    members: list[Member] = []
    pos = 0
    while pos < len(directory):
        if directory[pos : pos + 4] != _CENTRAL or pos + _CENTRAL_SIZE > len(directory):
            raise ArchiveError("invalid_file", "not a readable ZIP file: bad directory entry")
        if len(members) >= max_members:
            raise ArchiveError(
                "too_many_items",
                f"the ZIP has more than {max_members} entries; at most {max_members} are read",
            )
        (flags, method, _, _, crc, csize, usize, name_len, extra_len, comment_len) = struct.unpack(
            "<HHHHIIIHHH", directory[pos + 8 : pos + 34]
        )
        (offset,) = struct.unpack("<I", directory[pos + 42 : pos + 46])
        name_start = pos + _CENTRAL_SIZE
        extra_start = name_start + name_len
        end = extra_start + extra_len + comment_len
        if end > len(directory):
            raise ArchiveError("invalid_file", "not a readable ZIP file: bad directory entry")
        raw_name = directory[name_start:extra_start]
        name = raw_name.decode("utf-8" if flags & 0x800 else "cp437", errors="replace")
        if _ZIP64_MARK in (csize, usize, offset):
            usize, csize, offset = _zip64_sizes(
                directory[extra_start : extra_start + extra_len], usize, csize, offset
            )
        members.append(
            Member(
                filename=name,
                method=method,
                flags=flags,
                crc=crc,
                compressed_size=csize,
                declared_size=usize,
                header_offset=offset + shift,
            )
        )
        pos = end
    return members


def _zip64_sizes(extra: bytes, usize: int, csize: int, offset: int) -> tuple[int, int, int]:
    """The real values of fields marked 0xFFFFFFFF, from the ZIP64 extra field (id 1), in order."""
    pos = 0
    while pos + 4 <= len(extra):
        kind, length = struct.unpack("<HH", extra[pos : pos + 4])
        body = extra[pos + 4 : pos + 4 + length]
        if kind == 1:
            values = [struct.unpack("<Q", body[i : i + 8])[0] for i in range(0, len(body) - 7, 8)]
            fields = [usize, csize, offset]
            for index, value in enumerate(fields):
                if value == _ZIP64_MARK:
                    if not values:
                        raise ArchiveError("invalid_file", "not a readable ZIP file: bad ZIP64")
                    fields[index] = values.pop(0)
            return fields[0], fields[1], fields[2]
        pos += 4 + length
    raise ArchiveError("invalid_file", "not a readable ZIP file: ZIP64 sizes missing")


def check_methods(members: list[Member]) -> None:
    """Only stored and deflate: refused before a byte is inflated (bzip2 and LZMA inflate without
    an output cap in zipfile, and nobody needs them for images, which are compressed already)."""
    for member in members:
        if member.method not in ALLOWED_METHODS and not member.is_dir():
            raise ArchiveError(
                "unsupported_compression",
                f"{member.filename[:100]}: compression method {member.method}; only stored and "
                "deflate members are accepted",
            )


def read_member(stream: io.IOBase, member: Member, *, limit: int) -> bytes:
    """The member's bytes, inflating at most `limit` + 1 of them.

    A member that declares more than `limit` fails alone without being inflated; one that
    inflates past what it declares is a lie, and the archive is refused (ArchiveError)."""
    name = member.filename[:100]
    if member.encrypted:
        raise MemberError("unreadable_member", f"cannot read {name}: it is encrypted")
    if member.declared_size > limit:
        raise MemberError(
            "image_too_large", f"{member.declared_size} bytes is over the limit of {limit} bytes"
        )
    stream.seek(member.header_offset)
    header = stream.read(_LOCAL_SIZE)
    if len(header) != _LOCAL_SIZE or header[:4] != _LOCAL:
        raise MemberError("unreadable_member", f"cannot read {name}: bad local header")
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    stream.seek(member.header_offset + _LOCAL_SIZE + name_len + extra_len)
    cap = member.declared_size + 1
    if member.method == STORED:
        data = stream.read(min(member.compressed_size, cap))
    else:
        data = _inflate(stream, member.compressed_size, cap, name)
    if len(data) > member.declared_size:
        raise ArchiveError(
            "invalid_file",
            f"{name} inflates past the {member.declared_size} bytes it declares: refused",
        )
    if len(data) < member.declared_size or zlib.crc32(data) != member.crc:
        raise MemberError("unreadable_member", f"cannot read {name}: truncated or bad CRC")
    return data


def _inflate(stream: io.IOBase, compressed_size: int, cap: int, name: str) -> bytes:
    inflater = zlib.decompressobj(-15)
    out = bytearray()
    left = compressed_size
    try:
        while left > 0 and len(out) < cap and not inflater.eof:
            chunk = stream.read(min(_READ_CHUNK, left))
            if not chunk:
                break
            left -= len(chunk)
            while chunk and len(out) < cap:
                out += inflater.decompress(chunk, cap - len(out))
                chunk = inflater.unconsumed_tail
    except zlib.error as exc:
        raise MemberError("unreadable_member", f"cannot read {name}: {exc}") from exc
    return bytes(out)
