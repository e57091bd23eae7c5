"""The submission domain without Celery: claiming, answering, failing, sweeping, labelling."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone

from digitsite.celery import app as celery_app
from recognizer import answers, queue, services
from recognizer.models import Submission
from tests.factories import FakePredictor, SubmissionFactory, record_sent_tasks

pytestmark = pytest.mark.django_db


def test_predict_one_writes_the_answer_back():
    submission = SubmissionFactory(queued_at=timezone.now())
    predictor = FakePredictor(digit=3)
    services.predict_one(submission_id=submission.pk, predictor=predictor)
    submission.refresh_from_db()
    assert submission.status == "done"
    assert submission.prediction == 3
    assert submission.confidence == pytest.approx(0.91)
    assert len(submission.probabilities) == 10
    assert submission.model_version == "fake-v1"
    assert submission.started_at is not None and submission.finished_at is not None
    assert submission.is_digit is True
    assert submission.digit_score == pytest.approx((0.91 - 0.1) / 0.9, abs=1e-4)


def test_a_drawing_that_is_not_a_digit_is_still_answered_and_says_so():
    submission = SubmissionFactory(queued_at=timezone.now())
    services.predict_one(submission_id=submission.pk, predictor=FakePredictor(4, flat=True))
    submission.refresh_from_db()
    # Done, with its closest digit and probabilities, and marked as not looking like a digit.
    assert (submission.status, submission.prediction) == ("done", 4)
    assert len(submission.probabilities) == 10
    assert submission.is_digit is False
    assert submission.digit_score == pytest.approx((0.145 - 0.1) / 0.9, abs=1e-4)


def test_predict_one_on_an_answered_submission_does_not_run_the_network():
    submission = SubmissionFactory(status="done", prediction=8, model_version="old")
    predictor = FakePredictor(digit=3)
    assert services.predict_one(submission_id=submission.pk, predictor=predictor) is None
    submission.refresh_from_db()
    assert (submission.prediction, submission.model_version, predictor.calls) == (8, "old", [])


def test_predict_one_on_a_deleted_submission_is_a_no_op():
    missing = "00000000-0000-0000-0000-000000000001"
    assert services.predict_one(submission_id=missing, predictor=FakePredictor()) is None


def test_a_late_duplicate_cannot_overwrite_an_answer():
    submission = SubmissionFactory(status="processing")
    Submission.objects.filter(pk=submission.pk).update(status="done", prediction=1)
    answers.answer(
        submission,
        probabilities=np.eye(10, dtype=np.float32)[7],
        model_version="late",
        digit_threshold=0.5,
    )
    assert answers.save_in_flight([submission], answers.ANSWER_FIELDS) == 0
    submission.refresh_from_db()
    assert (submission.prediction, submission.model_version) == (1, "")


def test_sweeper_requeues_stuck_ones_and_gives_up_after_the_attempt_limit(monkeypatch, settings):
    sent = record_sent_tasks(monkeypatch, queue.PREDICT_SUBMISSION, key="submission_id")
    settings.STUCK_AFTER_SECONDS = 30
    settings.MAX_PREDICTION_ATTEMPTS = 3
    long_ago = timezone.now() - timedelta(minutes=5)
    stuck = SubmissionFactory(status="queued", queued_at=long_ago, attempts=1)
    lost = SubmissionFactory(status="processing", queued_at=long_ago, attempts=1)
    hopeless = SubmissionFactory(status="queued", queued_at=long_ago, attempts=3)
    fresh = SubmissionFactory(status="queued", queued_at=timezone.now(), attempts=1)
    done = SubmissionFactory(status="done", queued_at=long_ago, attempts=1)

    assert services.requeue_stuck() == {"requeued": 2, "given_up": 1}
    assert sorted(sent) == sorted([str(stuck.pk), str(lost.pk)])
    hopeless.refresh_from_db()
    assert (hopeless.status, hopeless.error_code) == ("failed", "gave_up")
    for untouched in (fresh, done):
        before = untouched.status
        untouched.refresh_from_db()
        assert untouched.status == before
    lost.refresh_from_db()
    assert (lost.status, lost.attempts) == ("queued", 2)


def test_the_sweeper_never_requeues_a_row_answered_while_it_runs(monkeypatch, settings):
    settings.STUCK_AFTER_SECONDS = 30
    long_ago = timezone.now() - timedelta(minutes=5)
    rows = [SubmissionFactory(status="queued", queued_at=long_ago, attempts=1) for _ in range(2)]
    sent = []

    def enqueue(*, submission_id):
        # While the sweeper sends the first, a worker answers the other (read as stuck already).
        if not sent:
            Submission.objects.exclude(pk=submission_id).update(status="done", prediction=4)
        sent.append(submission_id)
        return True

    monkeypatch.setattr(services, "enqueue", enqueue)
    assert services.requeue_stuck() == {"requeued": 1, "given_up": 0}
    answered = Submission.objects.exclude(pk=sent[0]).get()
    assert (answered.status, answered.prediction, len(sent)) == ("done", 4, 1)
    assert {row.pk for row in rows} == {sent[0], answered.pk}


def test_enqueue_with_the_broker_down_keeps_the_submission_queued(monkeypatch):
    def unreachable(*_, **__):
        raise ConnectionRefusedError("broker down")

    monkeypatch.setattr(celery_app, "send_task", unreachable)
    submission = SubmissionFactory(status="queued")
    assert services.enqueue(submission_id=submission.pk) is False
    submission.refresh_from_db()
    assert submission.status == "queued"
    assert submission.attempts == 1


def test_wait_for_answer_returns_at_once_when_done(settings):
    submission = SubmissionFactory(status="done", prediction=2)
    started = timezone.now()
    assert services.wait_for_answer(submission=submission, seconds=5).status == "done"
    assert timezone.now() - started < timedelta(seconds=1)


def test_wait_for_answer_gives_up_after_the_cap(settings):
    settings.MAX_WAIT_SECONDS = 0.2
    submission = SubmissionFactory(status="queued")
    started = timezone.now()
    assert services.wait_for_answer(submission=submission, seconds=30).status == "queued"
    assert timezone.now() - started < timedelta(seconds=2)
