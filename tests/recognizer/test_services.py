"""The submission domain without Celery: claiming, answering, failing, sweeping, labelling, and
waiting for an answer."""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pytest
import redis
from django.utils import timezone

from digitsite.celery import app as celery_app
from recognizer import answer_signal, answers, queue, services
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


def test_a_batch_answers_only_its_rows_still_in_flight_whatever_its_size():
    # Batches of several sizes in turn: the query is compiled once per size (and reused).
    for size in (3, 1, 3, 2):
        queued = SubmissionFactory.create_batch(size, queued_at=timezone.now())
        answered = SubmissionFactory(status="done", prediction=8, model_version="old")
        ids = [row.pk for row in queued] + [answered.pk, "00000000-0000-0000-0000-000000000002"]
        rows = services.predict_many(submission_ids=ids, predictor=FakePredictor(digit=5))
        assert sorted(str(row.pk) for row in rows) == sorted(str(row.pk) for row in queued)
        for row in queued:
            row.refresh_from_db()
            assert (row.status, row.prediction) == ("done", 5)
        answered.refresh_from_db()
        assert (answered.prediction, answered.model_version) == (8, "old")


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


# --- Waiting: the answer in the signal, or the row ----------------------------------------------


@pytest.fixture
def signal_redis(redis_url, settings) -> redis.Redis:
    """The answer signal on the tests' Redis; a client to look at what was announced."""
    settings.REDIS_URL = redis_url
    return redis.Redis.from_url(redis_url)


def in_flight(**fields) -> tuple[Submission, Submission]:
    """A submission in flight, and the instance a request waiting for it has loaded (as the API's
    view does)."""
    row = SubmissionFactory(queued_at=timezone.now(), **fields)
    return row, Submission.objects.defer("image", "strokes").get(pk=row.pk)


def shown(submission: Submission) -> dict:
    """The answered fields of an instance, each with its type: what a waiting request shows."""
    return {
        name: (type(getattr(submission, name)), getattr(submission, name))
        for name in services.ANSWERED_FIELDS
    }


def test_a_waiter_takes_the_answer_from_the_signal_without_reading_the_row(
    signal_redis, django_assert_num_queries
):
    scored, scored_waiting = in_flight()
    missing, missing_waiting = in_flight(model_input=None)
    services.predict_many(submission_ids=[scored.pk, missing.pk], predictor=FakePredictor(digit=3))
    for waiting in (scored_waiting, missing_waiting):
        with django_assert_num_queries(0):
            services.wait_for_answer(submission=waiting, seconds=2)
        # Exactly what reading the row gives, types included: aware datetimes, floats, the list.
        assert shown(waiting) == shown(Submission.objects.get(pk=waiting.pk))
    assert (scored_waiting.status, scored_waiting.prediction) == ("done", 3)
    assert len(scored_waiting.probabilities) == 10
    assert (missing_waiting.status, missing_waiting.error_code) == ("failed", "no_input")


def payload(**changes: object) -> str:
    """A well-formed answer as the signal carries it, with `changes`."""
    now = timezone.now().isoformat()
    values = {
        "status": "done",
        "prediction": 9,
        "confidence": 0.9,
        "probabilities": [0.01] * 9 + [0.9],
        "is_digit": True,
        "digit_score": 0.88,
        "model_version": "signal",
        "error_code": "",
        "error": "",
        "finished_at": now,
        "started_at": now,
    }
    return json.dumps({**values, **changes})


def test_a_well_formed_payload_is_the_answer(signal_redis, django_assert_num_queries):
    row, waiting = in_flight()
    answer_signal.announce([row.pk], [payload()])
    with django_assert_num_queries(0):
        services.wait_for_answer(submission=waiting, seconds=2)
    assert (waiting.status, waiting.prediction, waiting.model_version) == ("done", 9, "signal")


@pytest.mark.parametrize(
    "element",
    [
        None,
        "not json",
        "[1, 2]",
        json.dumps({"status": "done", "prediction": 9}),
        payload(finished_at="yesterday"),
        payload(prediction="nine"),
        payload(is_digit="perhaps"),
        payload(status="processing"),
        payload(something_else=1),
    ],
    ids=[
        "plain-token",
        "not-json",
        "not-an-object",
        "half-an-answer",
        "bad-datetime",
        "bad-integer",
        "bad-boolean",
        "not-finished",
        "unknown-field",
    ],
)
def test_a_plain_token_or_a_payload_it_cannot_use_means_reading_the_row(
    signal_redis, django_assert_num_queries, element
):
    row, waiting = in_flight()
    Submission.objects.filter(pk=row.pk).update(
        status="done", prediction=4, model_version="row", finished_at=timezone.now()
    )
    answer_signal.announce([row.pk], [element])  # None: the plain token
    with django_assert_num_queries(1):  # the row, once
        services.wait_for_answer(submission=waiting, seconds=2)
    assert (waiting.status, waiting.prediction, waiting.model_version) == ("done", 4, "row")
    assert shown(waiting) == shown(Submission.objects.get(pk=row.pk))


def test_when_another_run_answered_a_row_first_every_signal_is_a_plain_token(
    signal_redis, monkeypatch, django_assert_num_queries
):
    first, first_waiting = in_flight()
    second, second_waiting = in_flight()
    save_in_flight = answers.save_in_flight

    def another_run_commits_first(submissions, fields):
        # A redelivered message's run answered `second` between this run's read and its write.
        Submission.objects.filter(pk=second.pk, status__in=answers.IN_FLIGHT).update(
            status="done", prediction=1, model_version="other", finished_at=timezone.now()
        )
        return save_in_flight(submissions, fields)

    monkeypatch.setattr(answers, "save_in_flight", another_run_commits_first)
    services.predict_many(submission_ids=[first.pk, second.pk], predictor=FakePredictor(digit=3))
    for row in (first, second):
        assert signal_redis.lrange(answer_signal.key(row.pk), 0, -1) == [answer_signal.TOKEN]
    for waiting in (first_waiting, second_waiting):
        with django_assert_num_queries(1):  # each reads its row
            services.wait_for_answer(submission=waiting, seconds=2)
        assert shown(waiting) == shown(Submission.objects.get(pk=waiting.pk))
    # The row keeps the answer written first, and that is the one shown, never this run's.
    assert (second_waiting.prediction, second_waiting.model_version) == (1, "other")
    assert (first_waiting.prediction, first_waiting.model_version) == (3, "fake-v1")


def test_a_redelivered_run_announces_nothing(signal_redis):
    row, _ = in_flight()
    services.predict_many(submission_ids=[row.pk], predictor=FakePredictor(digit=3))
    announced = signal_redis.lrange(answer_signal.key(row.pk), 0, -1)
    assert services.predict_many(submission_ids=[row.pk], predictor=FakePredictor(digit=5)) == []
    assert signal_redis.lrange(answer_signal.key(row.pk), 0, -1) == announced
    assert json.loads(announced[0])["prediction"] == 3


def test_an_answer_json_would_not_give_back_goes_as_a_plain_token():
    row = SubmissionFactory.build(status="done", confidence=0.5, finished_at=timezone.now())
    assert json.loads(services._answer_payload(row, services.ANSWERED_FIELDS))["confidence"] == 0.5
    # SQLite stores NaN as NULL: the waiter must read the row rather than take NaN from the signal.
    row.confidence = float("nan")
    assert services._answer_payload(row, services.ANSWERED_FIELDS) is None
