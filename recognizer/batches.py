"""Batch jobs: many images in one request, scored in chunks on the `batch` queue.

The request only unpacks and checks the container (a JSON list, multipart files, a ZIP, a `.npy`
array or an IDX file, told apart by their first bytes, never by their names) and stores every item
as a Submission (source "batch") in bulk. The worker preprocesses and scores a chunk of items with
one model call and writes the answers in bulk, so one bad item fails alone with its reason while
the rest are answered.

A chunk is a range of `batch_index` values and carries only ids through the broker. It is
idempotent: it scores only items still queued (or left `processing` by a worker that died), and the
job's counters grow by exactly the rows it moved, so a redelivered chunk never counts twice.

Cancelling marks every item still `queued` as `failed` with error_code "cancelled" (so results and
counters add up to the total); a chunk already running finishes its own items.
"""

from __future__ import annotations

import csv
import io
import logging
import struct
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Max
from django.utils import timezone
from PIL import Image

from ml.data import IdxError, parse_idx
from ml.preprocess import PreprocessError, preprocess_array, preprocess_bytes
from recognizer.models import BatchJob, Submission
from recognizer.services import (
    SubmissionError,
    decode_base64_image,
    prediction_from_probabilities,
    sniff_content_type,
)

log = logging.getLogger(__name__)

# Array items are stored as a lossless 8-bit PNG of the row (so the admin shows them like any
# image); this content type tells the worker to run them through `preprocess_array`.
ARRAY_CONTENT_TYPE = "image/png; source=array"

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_NPY_MAGIC = b"\x93NUMPY"
_GZIP_MAGIC = b"\x1f\x8b"
_IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp")


@dataclass
class Item:
    """One image of a job as the request stored it; `error_code` set: refused before scoring."""

    name: str
    data: bytes
    content_type: str = ""
    error_code: str = ""
    error: str = ""


# --- Reading a request --------------------------------------------------------------------------


def too_many_items_error(count: int | None = None) -> SubmissionError:
    got = f" (got {count})" if count is not None else ""
    return SubmissionError(
        "too_many_items",
        f"a batch holds at most {settings.BATCH_MAX_ITEMS} images{got}",
        status=413,
    )


def too_large_error() -> SubmissionError:
    return SubmissionError(
        "batch_too_large",
        f"a batch holds at most {settings.BATCH_MAX_BYTES} bytes",
        status=413,
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
        raise SubmissionError("invalid", "send either `images` files or one `file`, not both")
    if len(containers) > 1:
        raise SubmissionError("invalid", "send one `file` per batch")
    if containers:
        upload = containers[0]
        return items_from_file(stream=upload, filename=upload.name or "")
    if uploads:
        return items_from_uploads(uploads=uploads)
    images = data.get("images") if hasattr(data, "get") else None
    if images is None:
        raise SubmissionError(
            "required",
            'send JSON {"images": [{"name": ..., "image": ...}]}, multipart `images` files '
            "or a multipart `file` (ZIP, .npy or IDX)",
        )
    if not isinstance(images, list):
        raise SubmissionError("invalid", "images must be a list of {name, image} objects")
    return items_from_json(images=images)


def _check_count(count: int) -> None:
    if count == 0:
        raise SubmissionError("empty_batch", "the batch holds no images")
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
    _check_count(len(images))
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
        except SubmissionError as exc:
            items.append(Item(name, b"", error_code=exc.code, error=exc.message))
            continue
        budget.take(len(image))
        items.append(Item(name, image, sniff_content_type(image)))
    return items


def items_from_uploads(*, uploads: list) -> list[Item]:
    _check_count(len(uploads))
    items = []
    for upload in uploads:
        name = (upload.name or "")[:255]
        if upload.size > settings.MAX_IMAGE_BYTES:
            # Not read at all: the item fails alone, the others go on.
            items.append(Item(name, b"", error_code="image_too_large", error=_too_big(upload.size)))
            continue
        image = upload.read()
        items.append(Item(name, image, sniff_content_type(image)))
    return items


def _too_big(size: int) -> str:
    return f"{size} bytes is over the limit of {settings.MAX_IMAGE_BYTES} bytes per image"


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
            raise SubmissionError("invalid_file", f"not a readable IDX file: {exc}") from exc
        return items_from_array(pixels=pixels, filename=filename)
    if sniff_content_type(data) in _IMAGE_TYPES:
        if len(data) > settings.MAX_IMAGE_BYTES:
            raise SubmissionError("image_too_large", _too_big(len(data)), status=413)
        return [Item(filename[:255], data, sniff_content_type(data))]
    raise SubmissionError(
        "unsupported_file",
        "file must be a ZIP of images, a .npy array or an IDX file (optionally gzipped)",
        status=415,
    )


def _gunzip(data: bytes) -> bytes:
    """Decompress with the job's byte cap, so a gzip bomb stops at BATCH_MAX_BYTES."""
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(data, settings.BATCH_MAX_BYTES + 1)
    except zlib.error as exc:
        raise SubmissionError("invalid_file", f"the gzip data is corrupt: {exc}") from exc
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
        raise SubmissionError(
            "too_many_items",
            f"the ZIP has {entries} entries; at most {settings.BATCH_ZIP_MAX_MEMBERS} are read",
            status=413,
        )
    try:
        archive = zipfile.ZipFile(stream)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as exc:
        raise SubmissionError("invalid_file", f"not a readable ZIP file: {exc}") from exc
    with archive:
        members = [info for info in archive.infolist() if not _skipped_member(info)]
        if len(archive.infolist()) > settings.BATCH_ZIP_MAX_MEMBERS:
            raise SubmissionError("too_many_items", "the ZIP has too many entries", status=413)
        _check_count(len(members))
        budget = _ByteBudget()
        return [_zip_item(archive, info, budget) for info in members]


def _zip_item(archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: _ByteBudget) -> Item:
    name = info.filename[:255]
    if info.file_size > settings.MAX_IMAGE_BYTES:
        return Item(name, b"", error_code="image_too_large", error=_too_big(info.file_size))
    try:
        with archive.open(info) as member:
            # Never trust the header's size: read at most one byte past each cap. The job's budget
            # bounds the total a ZIP bomb can make us inflate.
            data = member.read(min(settings.MAX_IMAGE_BYTES, max(budget.left, 0)) + 1)
    except (zipfile.BadZipFile, RuntimeError, NotImplementedError, OSError, EOFError) as exc:
        # Encrypted, an unsupported compression, a bad CRC: this member fails alone.
        return Item(name, b"", error_code="unreadable_member", error=f"cannot read {name}: {exc}")
    if len(data) > settings.MAX_IMAGE_BYTES:
        return Item(name, b"", error_code="image_too_large", error=_too_big(len(data)))
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
        raise SubmissionError("invalid_file", f"not a readable .npy file: {exc}") from exc
    if dtype.hasobject or dtype.kind not in "biuf":
        raise SubmissionError("invalid_array", f"array values must be numbers, not {dtype}")
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    offset = stream.tell()
    if len(data) - offset != count * dtype.itemsize:
        raise SubmissionError(
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
        raise SubmissionError(
            "invalid_array",
            f"expected N x H x W images (or N x 784), got shape {tuple(pixels.shape)}",
        )
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype == np.bool_:
        return pixels.astype(np.uint8) * 255
    is_float = pixels.dtype.kind == "f"
    if is_float and not np.isfinite(pixels).all():
        raise SubmissionError("invalid_array", "the array holds NaN or infinite values")
    low, high = float(pixels.min()), float(pixels.max())
    if low < 0 or high > 255:
        raise SubmissionError("invalid_array", "pixel values must be in 0-255 or 0.0-1.0")
    if is_float:
        return np.rint(pixels * 255.0 if high <= 1.0 else pixels).astype(np.uint8)
    return pixels.astype(np.uint8)


def items_from_array(*, pixels: np.ndarray, filename: str = "") -> list[Item]:
    # Counted before any conversion, so an oversized array is refused without copying it.
    _check_count(pixels.shape[0] if pixels.ndim else 1)
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


# --- Creating a job -----------------------------------------------------------------------------


def create_job(*, owner: object, items: list[Item]) -> BatchJob:
    """Store the job and its items in one transaction; chunks are enqueued once it commits."""
    _check_count(len(items))
    now = timezone.now()
    refused = sum(1 for item in items if item.error_code)
    finished = refused == len(items)
    with transaction.atomic():
        job = BatchJob.objects.create(
            owner=owner,
            total=len(items),
            failed_count=refused,
            status=BatchJob.Status.DONE if finished else BatchJob.Status.QUEUED,
            finished_at=now if finished else None,
        )
        Submission.objects.bulk_create(
            [
                Submission(
                    source=Submission.Source.BATCH,
                    owner=owner,
                    batch=job,
                    batch_index=index,
                    name=item.name,
                    image=item.data,
                    content_type=item.content_type,
                    status=Submission.Status.FAILED
                    if item.error_code
                    else Submission.Status.QUEUED,
                    error_code=item.error_code,
                    error=item.error,
                    queued_at=now,
                    finished_at=now if item.error_code else None,
                )
                for index, item in enumerate(items)
            ],
            batch_size=500,
        )
        size = settings.BATCH_CHUNK_SIZE
        starts = sorted(
            {index // size * size for index, item in enumerate(items) if not item.error_code}
        )
        job_id = job.pk
        transaction.on_commit(lambda: enqueue_chunks(batch_id=job_id, starts=starts))
    return job


def enqueue_chunks(*, batch_id: UUID | str, starts: Iterable[int]) -> int:
    """Send one task per chunk; the count sent. A broker outage leaves the items queued for the
    stalled-batch sweeper instead of failing the request that stored them."""
    from worker.tasks import score_batch_chunk

    size = settings.BATCH_CHUNK_SIZE
    sent = 0
    for start in starts:
        try:
            score_batch_chunk.apply_async(
                kwargs={"batch_id": str(batch_id), "start": start, "stop": start + size},
                retry=True,
                retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.2},
            )
        except Exception as exc:  # kombu raises several types for an unreachable broker
            log.warning("broker unreachable, batch %s left for the sweeper: %s", batch_id, exc)
            break
        sent += 1
    return sent


# --- Scoring a chunk (the worker) ---------------------------------------------------------------


@dataclass(frozen=True)
class ChunkResult:
    done: int = 0
    failed: int = 0


IN_FLIGHT = (Submission.Status.QUEUED, Submission.Status.PROCESSING)


def model_input_for(*, image: bytes, content_type: str) -> np.ndarray:
    """The 28x28 uint8 image the model sees, through the one canonical preprocessing."""
    if content_type == ARRAY_CONTENT_TYPE:
        with Image.open(io.BytesIO(image)) as png:
            return preprocess_array(np.asarray(png)).image
    return preprocess_bytes(image).image


def score_chunk(*, batch_id: UUID | str, start: int, stop: int, predictor: object) -> ChunkResult:
    """Preprocess the chunk's items one by one, run the model once on all that survived, write
    every answer with bulk updates and add to the job's counters in the same transaction.

    `predictor` is anything with `predict_images(uint8 N x 28 x 28) -> N x 10` and a `version`.
    """
    now = timezone.now()
    chunk = Submission.objects.filter(
        batch_id=batch_id, batch_index__gte=start, batch_index__lt=stop
    )
    # A chunk that killed its worker this many times is given up rather than tried for ever.
    given_up = chunk.filter(
        status__in=IN_FLIGHT, attempts__gte=settings.MAX_PREDICTION_ATTEMPTS
    ).update(
        status=Submission.Status.FAILED,
        error_code="gave_up",
        error=f"not scored after {settings.MAX_PREDICTION_ATTEMPTS} attempts",
        finished_at=now,
    )
    claimed = chunk.filter(status__in=IN_FLIGHT).update(
        status=Submission.Status.PROCESSING, started_at=now, attempts=F("attempts") + 1
    )
    if claimed:
        BatchJob.objects.filter(pk=batch_id, status=BatchJob.Status.QUEUED).update(
            status=BatchJob.Status.RUNNING
        )
    items = list(
        chunk.filter(status=Submission.Status.PROCESSING)
        .only("pk", "image", "content_type")
        .order_by("batch_index")
    )

    scored: list[Submission] = []
    inputs: list[np.ndarray] = []
    failed: list[Submission] = []
    for item in items:
        try:
            inputs.append(model_input_for(image=bytes(item.image), content_type=item.content_type))
            scored.append(item)
        except PreprocessError as exc:
            _fail(item, exc.code, str(exc))
            failed.append(item)
        except Exception as exc:  # one odd file must not sink the chunk (and loop on redelivery)
            log.exception("batch item %s could not be preprocessed", item.pk)
            _fail(item, "invalid_image", f"the image could not be read: {exc}")
            failed.append(item)

    if scored:
        probabilities = predictor.predict_images(np.stack(inputs))
        finished_at = timezone.now()
        for item, image, row in zip(scored, inputs, probabilities, strict=True):
            answer = prediction_from_probabilities(row)
            item.status = Submission.Status.DONE
            item.prediction = answer.digit
            item.confidence = answer.confidence
            item.probabilities = answer.probabilities
            item.model_version = predictor.version
            item.model_input = image.tobytes()
            item.finished_at = finished_at

    with transaction.atomic():
        done_count = update_processing(scored, DONE_FIELDS)
        failed_count = update_processing(failed, FAILED_FIELDS) + given_up
        if done_count or failed_count:
            add_progress(batch_id=batch_id, done=done_count, failed=failed_count)
    return ChunkResult(done=done_count, failed=failed_count)


DONE_FIELDS = [
    "status",
    "prediction",
    "confidence",
    "probabilities",
    "model_version",
    "model_input",
    "finished_at",
]
FAILED_FIELDS = ["status", "error_code", "error", "finished_at"]


def update_processing(items: list[Submission], fields: list[str]) -> int:
    """Write `fields` of every item still `processing`, in one executemany; the rows changed.

    Only rows this run still holds change and count, so a duplicate run that finished first is
    never counted twice. This is QuerySet.bulk_update's job, done without its per-row CASE WHEN
    expressions: those took 60% of a chunk's time (more than preprocessing and the model together)
    and held SQLite's write lock long enough to delay people's drawings. Values go through each
    field's own get_db_prep_save, so SQLite and PostgreSQL get what the ORM would send.
    """
    if not items:
        return 0
    meta = Submission._meta
    quote = connection.ops.quote_name
    columns = [meta.get_field(name) for name in fields]
    pk, status = meta.pk, meta.get_field("status")
    sql = (
        f"UPDATE {quote(meta.db_table)} SET "
        + ", ".join(f"{quote(field.column)} = %s" for field in columns)
        + f" WHERE {quote(pk.column)} = %s AND {quote(status.column)} = %s"
    )
    rows = [
        [field.get_db_prep_save(getattr(item, field.attname), connection) for field in columns]
        + [pk.get_db_prep_value(item.pk, connection), Submission.Status.PROCESSING.value]
        for item in items
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)
        # sqlite3 and psycopg both sum the rows changed over an executemany.
        return cursor.rowcount


def _fail(item: Submission, code: str, message: str) -> None:
    item.status = Submission.Status.FAILED
    item.error_code = code
    item.error = message[:2000]
    item.finished_at = timezone.now()


def add_progress(*, batch_id: UUID | str, done: int, failed: int) -> None:
    """Add to the counters in the database (F expressions: concurrent chunks never lose a count)
    and finish the job when every item is answered."""
    jobs = BatchJob.objects.filter(pk=batch_id)
    jobs.update(done_count=F("done_count") + done, failed_count=F("failed_count") + failed)
    jobs.filter(
        status__in=[BatchJob.Status.QUEUED, BatchJob.Status.RUNNING],
        done_count__gte=F("total") - F("failed_count"),
    ).update(status=BatchJob.Status.DONE, finished_at=timezone.now())


# --- Cancelling, sweeping -----------------------------------------------------------------------


def cancel_job(*, job: BatchJob) -> BatchJob:
    """Fail every item not yet started with error_code "cancelled"; a chunk already running
    finishes its own items. Cancelling a cancelled job is a no-op; a finished one is a 409."""
    if job.status == BatchJob.Status.CANCELLED:
        return job
    if job.status == BatchJob.Status.DONE:
        raise SubmissionError("already_done", "the job has finished; nothing to cancel", status=409)
    now = timezone.now()
    with transaction.atomic():
        cancelled = job.items.filter(status=Submission.Status.QUEUED).update(
            status=Submission.Status.FAILED,
            error_code="cancelled",
            error="the job was cancelled before this item was scored",
            finished_at=now,
        )
        BatchJob.objects.filter(pk=job.pk).update(
            failed_count=F("failed_count") + cancelled,
            status=BatchJob.Status.CANCELLED,
            finished_at=now,
        )
    job.refresh_from_db()
    return job


def requeue_stalled(*, now: object = None) -> dict[str, int]:
    """Send again the chunks of jobs where nothing happened for BATCH_STALL_SECONDS: the broker
    was down when the job was stored, or a chunk's worker died or hit its time limit.

    Chunks are idempotent, so a job merely waiting behind others loses nothing but a few no-op
    tasks, and marking its items re-queued keeps that to one round per BATCH_STALL_SECONDS.
    """
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.BATCH_STALL_SECONDS)
    jobs = BatchJob.objects.filter(
        status__in=[BatchJob.Status.QUEUED, BatchJob.Status.RUNNING], created_at__lt=cutoff
    ).values_list("pk", flat=True)
    requeued = 0
    size = settings.BATCH_CHUNK_SIZE
    for batch_id in jobs[:100]:
        pending = Submission.objects.filter(batch_id=batch_id, status__in=IN_FLIGHT)
        marks = Submission.objects.filter(batch_id=batch_id).aggregate(
            queued=Max("queued_at"), started=Max("started_at"), finished=Max("finished_at")
        )
        if any(at is not None and at >= cutoff for at in marks.values()):
            continue
        starts = sorted(
            {index // size * size for index in pending.values_list("batch_index", flat=True)}
        )
        if not starts:
            add_progress(batch_id=batch_id, done=0, failed=0)  # counters complete: close it
            continue
        pending.update(queued_at=now)
        requeued += enqueue_chunks(batch_id=batch_id, starts=starts)
    return {"chunks": requeued}


# --- Reading results ----------------------------------------------------------------------------

RESULT_FIELDS = (
    "batch_index",
    "name",
    "status",
    "prediction",
    "confidence",
    "probabilities",
    "error_code",
    "error",
)


def result_row(values: dict) -> dict:
    return {
        "index": values["batch_index"],
        "name": values["name"],
        "status": values["status"],
        "prediction": values["prediction"],
        "confidence": values["confidence"],
        "probabilities": values["probabilities"],
        "error_code": values["error_code"],
        "error": values["error"],
    }


def results_page(*, job: BatchJob, after: int, limit: int) -> tuple[list[dict], int | None]:
    """Up to `limit` results with index > `after`, in index order, and the `after` of the next
    page (None on the last). Keyset paging on (batch, batch_index): every page costs the same."""
    rows = list(
        job.items.filter(batch_index__gt=after)
        .order_by("batch_index")
        .values(*RESULT_FIELDS)[: limit + 1]
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return [result_row(row) for row in rows], (rows[-1]["batch_index"] if more else None)


CSV_HEADER = [
    "index",
    "name",
    "status",
    "prediction",
    "confidence",
    *[f"p{digit}" for digit in range(10)],
    "error_code",
    "error",
]


class _Line:
    """A file-like that hands back what csv.writer wrote, one line at a time."""

    def write(self, value: str) -> str:
        return value


def csv_lines(*, job: BatchJob) -> Iterator[str]:
    """The results as CSV lines, read from the database in slices so memory stays flat."""
    writer = csv.writer(_Line())
    yield writer.writerow(CSV_HEADER)
    rows = job.items.order_by("batch_index").values_list(*RESULT_FIELDS)
    for index, name, status, prediction, confidence, probabilities, code, error in rows.iterator(
        chunk_size=2000
    ):
        yield writer.writerow(
            [
                index,
                name,
                status,
                "" if prediction is None else prediction,
                "" if confidence is None else confidence,
                *(probabilities or [""] * 10),
                code,
                error,
            ]
        )
