"""One request per drawing (POST ?wait=), and drawings sent at every pen-up (superseded)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from recognizer import answer_signal, queue, review
from recognizer.models import Submission
from tests.factories import FakePredictor, SubmissionFactory, data_url, digit_png, record_sent_tasks

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sent(monkeypatch, redis_url, settings) -> list[str]:
    settings.REDIS_URL = redis_url
    return record_sent_tasks(monkeypatch, queue.PREDICT_SUBMISSION, key="submission_id")


def post(body: dict, query: str = ""):
    return APIClient().post(f"/api/v1/submissions/{query}", body, format="json")


def test_post_with_wait_and_no_answer_in_time_is_202_as_without(sent):
    started = time.monotonic()
    response = post({"image": data_url(digit_png(3))}, "?wait=0.3")
    assert 0.3 <= time.monotonic() - started < 2
    assert response.status_code == 202
    assert set(response.json()) == {"id", "status", "url", "label_token"}
    assert sent == [response.json()["id"]]


def test_post_with_wait_returns_the_answer_the_moment_it_is_written(sent):
    def worker() -> None:
        # What the interactive worker does, from another thread: answer, commit, announce.
        from recognizer import services

        while not sent:
            time.sleep(0.01)
        time.sleep(0.2)
        services.predict_many(submission_ids=list(sent), predictor=FakePredictor(digit=5))
        connection.close()

    threading.Thread(target=worker).start()
    started = time.monotonic()
    with CaptureQueriesContext(connection) as queries:
        response = post({"image": data_url(digit_png(5))}, "?wait=5")
    assert response.status_code == 200, response.content
    # The answer came in the signal: the request stored the drawing and read nothing back.
    assert [q["sql"] for q in queries if q["sql"].lstrip().upper().startswith("SELECT")] == []
    assert time.monotonic() - started < 1.5  # woken by the signal, not by the 5 s deadline
    body = response.json()
    assert (body["status"], body["prediction"], body["model_version"]) == ("done", 5, "fake-v1")
    assert body["label_token"]
    get = APIClient().get(f"/api/v1/submissions/{body['id']}/").json()
    assert {k: v for k, v in body.items() if k != "label_token"} == get


@pytest.mark.parametrize("wait", ["soon", "nan", "inf"])
def test_a_bad_wait_on_post_is_refused_and_nothing_is_stored(sent, wait):
    response = post({"image": data_url(digit_png(3))}, f"?wait={wait}")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_wait"
    assert Submission.objects.count() == 0 and sent == []


def test_a_lost_signal_is_covered_by_the_recheck(sent, settings, monkeypatch):
    settings.WAIT_RECHECK_SECONDS = 0.2
    monkeypatch.setattr(
        answer_signal, "announce", lambda ids, payloads=None: None
    )  # the signal never comes
    created = post({"image": data_url(digit_png(2))}).json()
    from recognizer import services

    services.predict_many(submission_ids=[created["id"]], predictor=FakePredictor(digit=2))
    started = time.monotonic()
    body = APIClient().get(f"/api/v1/submissions/{created['id']}/?wait=5").json()
    assert body["status"] == "done" and time.monotonic() - started < 1


def test_each_pen_up_of_a_drawing_supersedes_the_earlier_ones(sent):
    drawing = "6f1c2f38-9a7e-4d55-9a57-0f0d8e3b1a11"
    first = post({"image": data_url(digit_png(1)), "drawing": drawing, "source": "page"}).json()
    second = post({"image": data_url(digit_png(4)), "drawing": drawing, "source": "page"}).json()
    other = post({"image": data_url(digit_png(7)), "source": "page"}).json()
    rows = {row.pk.hex: row for row in Submission.objects.all()}
    assert rows[first["id"].replace("-", "")].superseded
    assert not rows[second["id"].replace("-", "")].superseded
    assert not rows[other["id"].replace("-", "")].superseded
    assert len(sent) == 3  # kept and answered like any other


def test_a_superseded_drawing_is_reviewed_only_if_someone_labelled_it():
    unsure = {"status": "done", "prediction": 1, "confidence": 0.4}
    half = SubmissionFactory(superseded=True, **unsure)
    labelled = SubmissionFactory(superseded=True, correct_label=4, **unsure)
    whole = SubmissionFactory(**unsure)
    needing = set(Submission.objects.filter(review.needs_review_q()).values_list("pk", flat=True))
    assert needing == {labelled.pk, whole.pk}
    assert half.pk not in needing


def test_predict_many_scores_many_drawings_in_one_forward_pass(sent):
    rows = [SubmissionFactory(attempts=1) for _ in range(5)]
    done = SubmissionFactory(status="done", prediction=8, model_version="old")
    predictor = FakePredictor(digit=6)
    from recognizer import services

    answered = services.predict_many(
        submission_ids=[row.pk for row in rows] + [done.pk], predictor=predictor
    )
    assert predictor.calls == [(5, 28, 28)]
    assert len(answered) == 5
    assert {r.prediction for r in Submission.objects.filter(pk__in=[x.pk for x in rows])} == {6}
    done.refresh_from_db()
    assert (done.prediction, done.model_version) == (8, "old")
    # Run again (a redelivered batch): nothing changes, the network does not run.
    assert services.predict_many(submission_ids=[r.pk for r in rows], predictor=predictor) == []
    assert len(predictor.calls) == 1
    assert np.all(
        [r.status == "done" for r in Submission.objects.filter(pk__in=[x.pk for x in rows])]
    )
