"""Through real parts: the API in this process, a real broker (Redis or the embedded Valkey) and a
real `celery worker` process on the same test database (SQLite, or PostgreSQL with DATABASE_URL)."""

from __future__ import annotations

import time

import pytest
from rest_framework.test import APIClient

from recognizer.models import Submission
from tests.conftest import WORKER_STUCK_AFTER, use_broker
from tests.factories import data_url, digit_png
from worker.tasks import predict_submission, sweep_stuck_submissions

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def submit(png: bytes) -> dict:
    response = APIClient().post("/api/v1/submissions/", {"image": data_url(png)}, format="json")
    assert response.status_code == 202, response.content
    return response.json()


def wait_done(submission_id: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = APIClient().get(f"/api/v1/submissions/{submission_id}/?wait=2").json()
        if body["status"] in ("done", "failed"):
            return body
    raise AssertionError(f"{submission_id} not answered in {timeout}s: {body}")


@pytest.mark.parametrize(("digit", "style"), [(7, "large"), (2, "small"), (0, "offcentre")])
def test_a_drawing_is_answered_with_the_right_digit(live_worker, digit, style):
    created = submit(digit_png(digit, style))
    body = wait_done(created["id"])
    assert body["status"] == "done"
    assert body["prediction"] == digit
    assert body["confidence"] > 0.5
    assert len(body["probabilities"]) == 10
    assert abs(sum(body["probabilities"]) - 1) < 1e-3
    assert body["model_version"]
    assert body["queued_at"] <= body["started_at"] <= body["finished_at"]


def test_label_after_the_answer(live_worker):
    created = submit(digit_png(4))
    body = wait_done(created["id"])
    response = APIClient().post(
        f"/api/v1/submissions/{body['id']}/label/",
        {"correct_label": 9, "label_token": created["label_token"]},
        format="json",
    )
    assert response.status_code == 200
    assert Submission.objects.get(pk=body["id"]).correct_label == 9


def test_a_redelivered_task_for_a_done_submission_does_nothing(live_worker):
    first = wait_done(submit(digit_png(6))["id"])
    answered = Submission.objects.get(pk=first["id"])
    Submission.objects.filter(pk=answered.pk).update(model_version="marker-from-first-answer")

    predict_submission.apply_async(kwargs={"submission_id": first["id"]})
    # One worker process takes tasks in order: once a later drawing is answered, the duplicate
    # has been handled too.
    wait_done(submit(digit_png(1))["id"])

    again = Submission.objects.get(pk=first["id"])
    assert again.model_version == "marker-from-first-answer"
    assert again.finished_at == answered.finished_at


def test_broker_down_at_submit_time_then_the_sweeper_completes_it(live_worker, redis_url):
    use_broker("redis://127.0.0.1:1/0")  # nothing listens there
    try:
        started = time.monotonic()
        created = submit(digit_png(3))
        assert time.monotonic() - started < 10, "a dead broker must not hold the request"
    finally:
        use_broker(redis_url)
    assert Submission.objects.get(pk=created["id"]).status == "queued"

    time.sleep(WORKER_STUCK_AFTER + 0.5)
    sweep_stuck_submissions.apply_async()  # what beat sends every SWEEP_EVERY_SECONDS
    body = wait_done(created["id"])
    assert body["status"] == "done"
    assert body["prediction"] == 3


def test_readiness_follows_the_worker(live_worker, settings):
    settings.READINESS_CACHE_SECONDS = 0  # every probe checks again
    client = APIClient()
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz", HTTP_ACCEPT="application/json").status_code == 200

    live_worker.stop()
    try:
        response = client.get("/readyz", HTTP_ACCEPT="application/json")
        assert response.status_code == 503
        assert client.get("/healthz").status_code == 200
    finally:
        live_worker.start()
    assert client.get("/readyz", HTTP_ACCEPT="application/json").status_code == 200


def test_metrics_are_exposed(live_worker):
    submit(digit_png(5))
    metrics = APIClient().get("/metrics")
    assert metrics.status_code == 200
    assert b"django_http_requests_total_by_view_transport_method_total" in metrics.content
