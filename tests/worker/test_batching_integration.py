"""Dynamic batching in a real interactive worker: many drawings, one forward pass, one commit;
and the guarantee the tasks that write answers keep: a worker killed mid-batch loses nothing.

The sweeper never runs in these tests (no beat), so every answer here came through the broker's
own redelivery, not through the safety net."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest
from rest_framework.test import APIClient

from recognizer import queue
from recognizer.models import Submission
from tests.factories import SubmissionFactory, data_url, digit_png

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def stored_drawings(count: int) -> list[str]:
    """`count` queued submissions with real model inputs (digits 0-9 in turn), not yet sent."""
    from ml.preprocess import preprocess_bytes

    inputs = [preprocess_bytes(digit_png(d)).image.tobytes() for d in range(10)]
    return [str(SubmissionFactory(model_input=inputs[i % 10], attempts=1).pk) for i in range(count)]


def wait_all_answered(ids: list[str], timeout: float = 60) -> list[Submission]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = list(Submission.objects.filter(pk__in=ids))
        if all(row.status == "done" for row in rows) and len(rows) == len(ids):
            return rows
        time.sleep(0.2)
    states = sorted(Submission.objects.filter(pk__in=ids).values_list("status", flat=True))
    raise AssertionError(f"not all {len(ids)} answered in {timeout}s: {states}")


def pool_children(worker) -> list[psutil.Process]:
    return psutil.Process(worker.process.pid).children(recursive=True)


def test_drawings_queued_together_are_answered_in_shared_forward_passes(live_worker):
    ids = stored_drawings(48)
    # The worker is frozen while they are sent, so that all 48 wait in the queue at once.
    os.kill(live_worker.process.pid, signal.SIGSTOP)
    try:
        for pk in ids:
            queue.send(queue.PREDICT_SUBMISSION, submission_id=pk)
    finally:
        os.kill(live_worker.process.pid, signal.SIGCONT)
    rows = wait_all_answered(ids)
    # One batch claims its drawings with one UPDATE: they share started_at.
    batches = {row.started_at for row in rows}
    assert len(batches) < len(ids) / 2, f"{len(batches)} batches for {len(ids)} drawings"
    assert [row.prediction for row in sorted(rows, key=lambda r: ids.index(str(r.pk)))] == [
        i % 10 for i in range(len(ids))
    ]


def test_post_with_wait_answers_the_drawing_in_the_same_request(live_worker):
    started = time.monotonic()
    response = APIClient().post(
        "/api/v1/submissions/?wait=10", {"image": data_url(digit_png(7))}, format="json"
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["status"], body["prediction"]) == ("done", 7)
    assert response["Location"] == body["url"]
    assert time.monotonic() - started < 5


def test_a_pool_process_killed_mid_batch_loses_no_drawing(live_worker):
    """The batch is handed to the pool process, which is frozen and then killed: its messages go
    back to the queue at once (worker/batching.py) and the next process answers them."""
    (child,) = pool_children(live_worker)
    os.kill(child.pid, signal.SIGSTOP)
    try:
        ids = stored_drawings(20)
        for pk in ids:
            queue.send(queue.PREDICT_SUBMISSION, submission_id=pk)
        time.sleep(1.0)  # the batch is buffered and dispatched to the frozen process
    finally:
        os.kill(child.pid, signal.SIGKILL)
    wait_all_answered(ids, timeout=45)
    assert all(process.pid != child.pid for process in pool_children(live_worker))


def test_a_whole_worker_killed_with_a_batch_in_hand_loses_no_drawing(live_worker, worker_factory):
    """Main process and pool killed at once (SIGKILL, no goodbye): the unacknowledged messages
    stay with the broker and a new worker is given them once their visibility timeout passes."""
    live_worker.stop()  # so that the doomed worker takes the messages
    env = {"CELERY_VISIBILITY_TIMEOUT": "3"}
    doomed = worker_factory("interactive", "doomed", extra_env=env)
    try:
        (child,) = pool_children(doomed)
        os.kill(child.pid, signal.SIGSTOP)
        ids = stored_drawings(20)
        for pk in ids:
            queue.send(queue.PREDICT_SUBMISSION, submission_id=pk)
        time.sleep(1.0)
        os.killpg(doomed.process.pid, signal.SIGKILL)
        doomed.process.wait()
        assert Submission.objects.filter(pk__in=ids, status="done").count() == 0
        heir = worker_factory("interactive", "heir", extra_env=env)
        try:
            wait_all_answered(ids, timeout=60)
        finally:
            heir.stop()
    finally:
        live_worker.start()
