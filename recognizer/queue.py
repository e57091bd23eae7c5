"""The one way the domain sends a task: by its name, so `recognizer` never imports `worker`.

`worker/tasks.py` registers each task under the name below and takes the same keyword ids. A
broker outage never fails the caller: `send` logs it and answers False, and the row it concerns
stays queued for the sweepers (`requeue_stuck`, `requeue_stalled`), which send it again.
"""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

from django.db import DatabaseError

from digitsite.celery import app

log = logging.getLogger(__name__)

PREDICT_SUBMISSION = "recognizer.predict_submission"
SWEEP_STUCK_SUBMISSIONS = "recognizer.sweep_stuck_submissions"
SCORE_BATCH_CHUNK = "recognizer.score_batch_chunk"
SWEEP_STALLED_BATCHES = "recognizer.sweep_stalled_batches"
RETRAIN = "recognizer.retrain"

# One quick retry, then give up: a request must answer fast even when the broker is down.
RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2}

# How the tasks that write answers are acknowledged (worker/tasks.py applies it): only once done,
# so a worker lost mid-task leaves the message for another, and retried with backoff on database
# errors. Both such tasks are idempotent, so redelivery is safe. Every other task is acknowledged
# on receipt (Celery's default): a sweeper runs again on the next beat, and a half-done retrain
# must not run twice.
RELIABLE_DELIVERY: dict[str, Any] = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "autoretry_for": (DatabaseError,),
    "retry_backoff": True,
    "retry_backoff_max": 30,
    "max_retries": 5,
}


def send(task_name: str, **ids: Any) -> bool:
    """Send `task_name` with `ids` as keyword arguments; False when the broker is unreachable."""
    kwargs = {key: str(value) if isinstance(value, UUID) else value for key, value in ids.items()}
    try:
        # ignore_result: answers live in the database rows, so nothing is registered with the
        # result backend (which settings make one object for every thread). The reprs for logs
        # and monitoring are given: Celery's saferepr of plain ids cost 8% of a send.
        app.send_task(
            task_name,
            kwargs=kwargs,
            retry=True,
            retry_policy=RETRY_POLICY,
            ignore_result=True,
            argsrepr="()",
            kwargsrepr=repr(kwargs),
        )
    except Exception as exc:  # kombu raises several types for an unreachable broker
        log.warning("broker unreachable, %s %s left for the sweeper: %s", task_name, kwargs, exc)
        return False
    return True
