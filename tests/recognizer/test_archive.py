"""The ZIP reader on its own: what it believes of an archive (nothing it has not counted)."""

from __future__ import annotations

import io
import zipfile
import zlib

import pytest

from recognizer import archive
from tests.recognizer.api import payloads

MEMBERS = {"a/1.png": b"one" * 100, "2.png": b"two", "empty/": b""}


def python_zip(compression: int = zipfile.ZIP_DEFLATED, **options: object) -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as written:
        for name, data in MEMBERS.items():
            with written.open(name, "w", **options) as member:
                member.write(data)
    buffer.seek(0)
    return buffer


def directory(stream: io.BytesIO, max_members: int = 100) -> list[archive.Member]:
    return archive.read_directory(stream, max_members=max_members, max_directory_bytes=1 << 20)


@pytest.mark.parametrize("zip64", [False, True])
@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_reads_what_zipfile_writes(compression, zip64):
    stream = python_zip(compression, force_zip64=zip64)
    members = directory(stream)
    assert [m.filename for m in members] == list(MEMBERS)
    assert [m.declared_size for m in members] == [len(d) for d in MEMBERS.values()]
    assert members[2].is_dir()
    archive.check_methods(members)
    for member in members:
        assert archive.read_member(stream, member, limit=1000) == MEMBERS[member.filename]


def test_utf8_names():
    stream = io.BytesIO()
    with zipfile.ZipFile(stream, "w") as written:
        written.writestr("чертёж/семь.png", b"x")
    assert directory(stream)[0].filename == "чертёж/семь.png"


def test_the_end_record_count_is_checked_before_the_directory_is_read():
    stream = io.BytesIO(payloads.zip_with_entries(3, announce=50_000))
    with pytest.raises(archive.ArchiveError) as caught:
        directory(stream)
    assert caught.value.code == "too_many_items"


def test_the_directory_is_counted_while_walked():
    stream = io.BytesIO(payloads.zip_with_entries(101, announce=1))
    with pytest.raises(archive.ArchiveError) as caught:
        directory(stream, max_members=100)
    assert caught.value.code == "too_many_items"
    assert len(directory(io.BytesIO(payloads.zip_with_entries(100, announce=1)))) == 100


def test_the_directory_size_is_bounded_before_it_is_read():
    data = payloads.zip_with_entries(10)
    with pytest.raises(archive.ArchiveError) as caught:
        archive.read_directory(io.BytesIO(data), max_members=100, max_directory_bytes=100)
    assert caught.value.code == "too_many_items"


@pytest.mark.parametrize("method", [12, 14, 99])
def test_only_stored_and_deflate(method):
    members = directory(io.BytesIO(payloads.zip_archive([{"name": "a", "data": b"x",
                                                          "method": method}])))  # fmt: skip
    with pytest.raises(archive.ArchiveError) as caught:
        archive.check_methods(members)
    assert caught.value.code == "unsupported_compression"


def test_inflation_stops_one_byte_past_the_declared_size():
    raw = payloads.deflate_zeros(payloads.GiB)
    stream = io.BytesIO(
        payloads.zip_archive([{"name": "a", "data": raw, "method": 8, "declared": 1024}])
    )
    (member,) = directory(stream)
    with pytest.raises(archive.ArchiveError) as caught:
        archive.read_member(stream, member, limit=2048)
    assert caught.value.code == "invalid_file" and "declares" in caught.value.message


def test_a_member_declared_over_the_limit_is_not_inflated():
    stream = io.BytesIO(payloads.zip_archive([{"name": "a", "data": b"garbage", "method": 8,
                                               "declared": 10**9}]))  # fmt: skip
    (member,) = directory(stream)
    with pytest.raises(archive.MemberError) as caught:
        archive.read_member(stream, member, limit=1000)
    assert caught.value.code == "image_too_large"


@pytest.mark.parametrize(
    "member",
    [
        {"name": "locked", "data": b"x", "flags": 1},
        {"name": "bad-crc", "data": b"hello", "crc": 1},
        {"name": "short", "data": b"hello", "declared": 10},
        {"name": "corrupt", "data": b"\xff" * 20, "method": 8, "declared": 5},
    ],
    ids=lambda m: m["name"],
)
def test_unreadable_members_fail_alone(member):
    stream = io.BytesIO(payloads.zip_archive([member]))
    (entry,) = directory(stream)
    with pytest.raises(archive.MemberError) as caught:
        archive.read_member(stream, entry, limit=1000)
    assert caught.value.code == "unreadable_member"


def test_a_deflated_member_round_trips():
    data = bytes(range(256)) * 10
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    raw = compressor.compress(data) + compressor.flush()
    stream = io.BytesIO(payloads.zip_archive([{"name": "a", "data": raw, "method": 8,
                                               "crc": zlib.crc32(data),
                                               "declared": len(data)}]))  # fmt: skip
    (member,) = directory(stream)
    assert archive.read_member(stream, member, limit=len(data)) == data


@pytest.mark.parametrize("data", [b"", b"PK\x05\x06", b"PK\x03\x04" + bytes(100), bytes(30)])
def test_not_a_zip(data):
    with pytest.raises(archive.ArchiveError) as caught:
        directory(io.BytesIO(data))
    assert caught.value.code == "invalid_file"
