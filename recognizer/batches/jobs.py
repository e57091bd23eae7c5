"""A batch job's life on the web side: stored with its items, its chunks sent, cancelled, and
sent again by the stalled-job sweeper. The worker's half is recognizer/batches/scoring.py."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from uuid import UUID

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.models import F, Max
from django.utils import timezone

from recognizer import answers, queue
from recognizer.batches.parsing import Item, check_count
from recognizer.errors import DomainError
from recognizer.models import BatchJob, Submission

if TYPE_CHECKING:
    from django.contrib.auth.models import User


def create_job(*, owner: User, items: list[Item]) -> BatchJob:
    """Store the job and its items in one transaction; chunks are enqueued once it commits."""
    check_count(len(items))
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
        insert_items(
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
            ]
        )
        starts = chunk_starts(index for index, item in enumerate(items) if not item.error_code)
        job_id = job.pk
        transaction.on_commit(lambda: enqueue_chunks(batch_id=job_id, starts=starts))
    return job


def insert_items(items: list[Submission]) -> None:
    """Insert new rows with one executemany: QuerySet.bulk_create's job without its compilation
    of every value into SQL (field_as_sql for each of 32 columns of each row), which was 60% of
    storing a 2,000-item job while the batch workers waited for it to commit. Values go through
    each field's own pre_save and get_db_prep_save, so every database gets what the ORM would
    send. No signals, as with bulk_create."""
    if not items:
        return
    meta = Submission._meta
    fields = meta.local_concrete_fields
    # The connection itself, not django.db.connection: that proxy finds this thread's
    # connection again on every use, which cost more than the values (two uses per value).
    db = connections[DEFAULT_DB_ALIAS]
    quote = db.ops.quote_name
    sql = (
        f"INSERT INTO {quote(meta.db_table)} "
        f"({', '.join(quote(answers.column_name(field)) for field in fields)}) "
        f"VALUES ({', '.join(['%s'] * len(fields))})"
    )
    rows = [
        [field.get_db_prep_save(field.pre_save(item, True), db) for field in fields]
        for item in items
    ]
    with db.cursor() as cursor:
        cursor.executemany(sql, rows)
    for item in items:
        item._state.adding = False
        item._state.db = db.alias


def chunk_starts(indexes: Iterable[int]) -> list[int]:
    """The first index of every chunk (BATCH_CHUNK_SIZE items) holding one of `indexes`."""
    size = settings.BATCH_CHUNK_SIZE
    return sorted({index // size * size for index in indexes})


def enqueue_chunks(*, batch_id: UUID | str, starts: Iterable[int]) -> int:
    """Send one task per chunk; the count sent. A broker outage leaves the items queued for the
    stalled-batch sweeper instead of failing the request that stored them."""
    size = settings.BATCH_CHUNK_SIZE
    sent = 0
    for start in starts:
        stop = start + size
        if not queue.send(queue.SCORE_BATCH_CHUNK, batch_id=batch_id, start=start, stop=stop):
            break
        sent += 1
    return sent


def add_progress(*, batch_id: UUID | str, done: int, failed: int) -> None:
    """Add to the counters in the database (F expressions: concurrent chunks never lose a count)
    and finish the job when every item is answered."""
    jobs = BatchJob.objects.filter(pk=batch_id)
    jobs.update(done_count=F("done_count") + done, failed_count=F("failed_count") + failed)
    jobs.filter(
        status__in=[BatchJob.Status.QUEUED, BatchJob.Status.RUNNING],
        done_count__gte=F("total") - F("failed_count"),
    ).update(status=BatchJob.Status.DONE, finished_at=timezone.now())


def cancel_job(*, job: BatchJob) -> BatchJob:
    """Fail every item not yet started with error_code "cancelled"; a chunk already running
    finishes its own items. Cancelling a cancelled job is a no-op; a finished one is refused."""
    if job.status == BatchJob.Status.CANCELLED:
        return job
    if job.status == BatchJob.Status.DONE:
        raise DomainError("already_done", "the job has finished; nothing to cancel")
    with transaction.atomic():
        cancelled = job.items.filter(status=Submission.Status.QUEUED).update(
            **answers.failure_values(
                code="cancelled", message="the job was cancelled before this item was scored"
            )
        )
        BatchJob.objects.filter(pk=job.pk).update(
            failed_count=F("failed_count") + cancelled,
            status=BatchJob.Status.CANCELLED,
            finished_at=timezone.now(),
        )
    job.refresh_from_db()
    return job


def requeue_stalled(*, now: datetime | None = None) -> dict[str, int]:
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
    for batch_id in jobs[:100]:
        pending = Submission.objects.filter(batch_id=batch_id, status__in=answers.IN_FLIGHT)
        marks = Submission.objects.filter(batch_id=batch_id).aggregate(
            queued=Max("queued_at"), started=Max("started_at"), finished=Max("finished_at")
        )
        if any(at is not None and at >= cutoff for at in marks.values()):
            continue
        starts = chunk_starts(
            index for index in pending.values_list("batch_index", flat=True) if index is not None
        )
        if not starts:
            add_progress(batch_id=batch_id, done=0, failed=0)  # counters complete: close it
            continue
        pending.update(queued_at=now)
        requeued += enqueue_chunks(batch_id=batch_id, starts=starts)
    return {"chunks": requeued}
