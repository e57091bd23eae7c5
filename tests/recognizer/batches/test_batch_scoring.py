"""Scoring a chunk (the worker's half of a batch job), without Celery: one model call per chunk,
bad items fail alone, a redelivered chunk counts nothing twice, a hopeless chunk is given up."""

from __future__ import annotations

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.test import override_settings

from ml.preprocess import preprocess_array
from recognizer.batches import jobs, parsing, scoring
from recognizer.models import BatchJob, Submission
from tests.factories import FakePredictor, mnist_digit
from tests.recognizer.batch_helpers import items_of, mixed_job, score_all

pytestmark = pytest.mark.django_db


@pytest.fixture
def owner() -> object:
    return get_user_model().objects.create_user("alice")


def test_a_chunk_runs_the_model_once_and_bad_items_fail_alone(owner):
    job_id = mixed_job(owner)
    predictor = score_all(job_id)
    assert predictor.calls == [(2, 28, 28)], "one model call for the chunk's good items"
    seven, corrupt, blank, two = items_of(job_id)
    for item in (seven, two):
        assert (item.status, item.prediction, item.model_version) == ("done", 7, "fake-v1")
        assert item.confidence == pytest.approx(0.91)
        assert len(item.probabilities) == 10
        assert len(bytes(item.model_input)) == 784
        assert item.started_at <= item.finished_at
    assert (corrupt.status, corrupt.error_code) == ("failed", "invalid_image")
    assert (blank.status, blank.error_code) == ("failed", "empty_drawing")
    job = BatchJob.objects.get(pk=job_id)
    assert (job.status, job.done_count, job.failed_count) == ("done", 2, 2)
    assert job.finished_at is not None


def test_array_items_go_through_preprocess_array_and_never_through_pillow(owner, monkeypatch):
    from PIL import Image

    def no_pil(*args: object, **kwargs: object) -> None:
        raise AssertionError("an array item went through Pillow")

    monkeypatch.setattr(Image, "open", no_pil)
    monkeypatch.setattr(Image, "fromarray", no_pil)
    pixels = np.stack([mnist_digit(5), np.zeros((28, 28), np.uint8)])
    items = parsing.items_from_array(pixels=pixels)
    job_id = jobs.create_job(owner=owner, items=items).pk
    predictor = score_all(job_id)
    assert predictor.calls == [(1, 28, 28)]
    digit, blank = items_of(job_id)
    assert digit.status == "done"
    expected = preprocess_array(pixels[0]).image
    assert np.array_equal(
        np.frombuffer(bytes(digit.model_input), np.uint8).reshape(28, 28), expected
    )
    assert (blank.status, blank.error_code) == ("failed", "empty_drawing")


@override_settings(BATCH_CHUNK_SIZE=2)
def test_a_redelivered_chunk_counts_nothing_twice(owner):
    job_id = mixed_job(owner)
    predictor = FakePredictor()
    scoring.score_chunk(batch_id=job_id, start=0, stop=2, predictor=predictor)
    first = {item.pk: item.finished_at for item in items_of(job_id)}
    again = scoring.score_chunk(batch_id=job_id, start=0, stop=2, predictor=predictor)
    assert (again.done, again.failed) == (0, 0)
    assert len(predictor.calls) == 1
    job = BatchJob.objects.get(pk=job_id)
    assert (job.status, job.done_count, job.failed_count) == ("running", 1, 1)
    assert {item.pk: item.finished_at for item in items_of(job_id)} == first


def test_items_left_processing_by_a_dead_worker_are_scored_once(owner):
    job_id = mixed_job(owner)
    Submission.objects.filter(batch_id=job_id).update(status="processing", attempts=1)
    score_all(job_id)
    job = BatchJob.objects.get(pk=job_id)
    assert (job.status, job.done_count + job.failed_count) == ("done", 4)


def test_a_chunk_that_keeps_killing_workers_is_given_up(owner, settings):
    job_id = mixed_job(owner)
    Submission.objects.filter(batch_id=job_id).update(
        status="processing", attempts=settings.MAX_PREDICTION_ATTEMPTS
    )
    predictor = score_all(job_id)
    assert predictor.calls == []
    assert {item.error_code for item in items_of(job_id)} == {"gave_up"}
    assert BatchJob.objects.get(pk=job_id).status == "done"
