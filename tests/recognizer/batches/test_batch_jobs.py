"""A batch job's life without HTTP: stored with its items, chunks sent after commit, cancelled,
and sent again by the stalled-job sweeper."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import override_settings
from django.utils import timezone

from digitsite.celery import app as celery_app
from recognizer.batches import jobs, parsing, scoring
from recognizer.errors import DomainError
from recognizer.models import BatchJob, Submission
from tests.factories import FakePredictor, data_url, digit_png
from tests.recognizer.batch_helpers import items_of, mixed_job

pytestmark = pytest.mark.django_db


@pytest.fixture
def owner() -> object:
    return get_user_model().objects.create_user("alice")


@override_settings(BATCH_CHUNK_SIZE=2)
def test_a_job_is_stored_with_refused_items_counted_and_chunks_sent_after_commit(
    owner, chunks, django_capture_on_commit_callbacks
):
    items = [
        parsing.Item("a", digit_png(1), "image/png"),
        parsing.Item("b", b"", error_code="invalid", error="refused"),
        parsing.Item("c", digit_png(2), "image/png"),
    ]
    with django_capture_on_commit_callbacks(execute=True):
        job = jobs.create_job(owner=owner, items=items)
    assert (job.status, job.total, job.failed_count) == ("queued", 3, 1)
    assert [(item.status, item.error_code) for item in items_of(job.pk)] == [
        ("queued", ""),
        ("failed", "invalid"),
        ("queued", ""),
    ]
    # Chunk 0 holds a and b, chunk 2 holds c: both have an item to score.
    assert chunks == [
        {"batch_id": str(job.pk), "start": 0, "stop": 2},
        {"batch_id": str(job.pk), "start": 2, "stop": 4},
    ]


def test_with_the_broker_down_the_job_is_stored_and_left_for_the_sweeper(
    owner, monkeypatch, django_capture_on_commit_callbacks
):
    def unreachable(*_, **__):
        raise ConnectionRefusedError("broker down")

    monkeypatch.setattr(celery_app, "send_task", unreachable)
    with django_capture_on_commit_callbacks(execute=True):
        job = jobs.create_job(owner=owner, items=[parsing.Item("a", digit_png(1), "image/png")])
    assert [item.status for item in items_of(job.pk)] == ["queued"]
    assert jobs.enqueue_chunks(batch_id=job.pk, starts=[0]) == 0


@override_settings(BATCH_CHUNK_SIZE=2)
def test_cancel_fails_the_queued_items_and_counts_them(owner):
    job_id = mixed_job(owner)
    scoring.score_chunk(batch_id=job_id, start=0, stop=2, predictor=FakePredictor())
    job = jobs.cancel_job(job=BatchJob.objects.get(pk=job_id))
    assert (job.status, job.done_count, job.failed_count) == ("cancelled", 1, 3)
    assert [item.error_code for item in items_of(job_id)] == [
        "",
        "invalid_image",
        "cancelled",
        "cancelled",
    ]
    with pytest.raises(DomainError) as refused:
        jobs.cancel_job(job=BatchJob.objects.create(owner=owner, status="done"))
    assert refused.value.code == "already_done"


@override_settings(BATCH_CHUNK_SIZE=2, BATCH_STALL_SECONDS=60)
def test_the_sweeper_sends_a_stalled_jobs_chunks_again_once(owner, chunks):
    job_id = mixed_job(owner)
    fresh = str(
        jobs.create_job(
            owner=owner, items=parsing.items_from_json(images=[{"image": data_url(digit_png(1))}])
        ).pk
    )
    later = timezone.now() + timedelta(seconds=120)
    # The fresh job was sent 30 s before `later`: waiting, not stalled.
    BatchJob.objects.filter(pk=fresh).update(created_at=later - timedelta(seconds=30))
    Submission.objects.filter(batch_id=fresh).update(queued_at=later - timedelta(seconds=30))
    assert jobs.requeue_stalled(now=later) == {"chunks": 2}
    assert {c["batch_id"] for c in chunks} == {job_id}, f"{fresh} has not waited long enough"
    assert jobs.requeue_stalled(now=later) == {"chunks": 0}


def test_the_sweeper_closes_a_job_whose_counters_are_complete(owner, chunks):
    job_id = mixed_job(owner)
    Submission.objects.filter(batch_id=job_id).update(status="failed", error_code="x")
    BatchJob.objects.filter(pk=job_id).update(
        failed_count=4, created_at=timezone.now() - timedelta(hours=1)
    )
    Submission.objects.filter(batch_id=job_id).update(queued_at=timezone.now() - timedelta(hours=1))
    assert jobs.requeue_stalled() == {"chunks": 0}
    assert BatchJob.objects.get(pk=job_id).status == "done"
    assert chunks == []


def test_items_are_stored_as_the_orm_stores_them(owner):
    """insert_items writes what Django's bulk_create would: every column, defaults included."""
    job = BatchJob.objects.create(owner=owner, total=2)
    now = timezone.now()

    def item(index: int) -> Submission:
        return Submission(
            source=Submission.Source.BATCH,
            owner=owner,
            batch=job,
            batch_index=index,
            name=f"{index}.png",
            image=digit_png(index),
            content_type="image/png",
            strokes={"strokes": [[[0, 0], [1, 1]]]},
            queued_at=now,
        )

    ours, orms = item(0), item(1)
    jobs.insert_items([ours])
    Submission.objects.bulk_create([orms])
    assert not ours._state.adding
    columns = [f.attname for f in Submission._meta.concrete_fields]
    differ = {"id", "created_at", "batch_index", "name", "image"}
    stored = {row["batch_index"]: row for row in Submission.objects.values(*columns)}
    assert {k: v for k, v in stored[0].items() if k not in differ} == {
        k: v for k, v in stored[1].items() if k not in differ
    }
    assert stored[0]["id"] == ours.pk and bytes(stored[0]["image"]) == digit_png(0)
    assert stored[0]["created_at"] == ours.created_at and ours.created_at >= now
    assert stored[0]["strokes"] == {"strokes": [[[0, 0], [1, 1]]]}
