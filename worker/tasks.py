"""Thin Celery tasks: ids in, plain functions from recognizer.services do the work."""

from __future__ import annotations

import logging

from celery import shared_task
from celery.signals import worker_process_init
from django.conf import settings
from django.db import DatabaseError

from recognizer import services
from worker.model_holder import get_predictor

log = logging.getLogger(__name__)


@worker_process_init.connect
def load_model_at_start(**_: object) -> None:
    # Loading takes well under a second; doing it here spares the first drawing the wait.
    try:
        get_predictor()
    except Exception:  # never keep the worker from starting; the first task will retry
        log.exception("could not preload the model")


# Tasks that write answers: acknowledged only once done (a worker lost mid-task leaves the message
# for another), retried with backoff on database errors. Both are idempotent, so redelivery is safe.
RELIABLE = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "autoretry_for": (DatabaseError,),
    "retry_backoff": True,
    "retry_backoff_max": 30,
    "max_retries": 5,
}


@shared_task(name="recognizer.predict_submission", **RELIABLE)
def predict_submission(*, submission_id: str) -> None:
    services.predict_one(submission_id=submission_id, predictor=get_predictor())


@shared_task(name="recognizer.sweep_stuck_submissions", ignore_result=True)
def sweep_stuck_submissions() -> dict[str, int]:
    return services.requeue_stuck()


@shared_task(
    name="recognizer.retrain",
    ignore_result=True,
    # Minutes of training: its own limits, and no redelivery of a half-done run after a crash.
    acks_late=False,
    soft_time_limit=settings.RETRAIN_TIME_LIMIT,
    time_limit=settings.RETRAIN_TIME_LIMIT + 60,
)
def retrain(*, requested_by: str = "", dry_run: bool = False) -> None:
    from recognizer import retraining

    command = f"admin: Retrain now ({requested_by})" if requested_by else "recognizer.retrain task"
    retraining.retrain(
        options=retraining.RetrainOptions(dry_run=dry_run, command=command), progress=log.info
    )


@shared_task(
    name="recognizer.score_batch_chunk",
    ignore_result=True,
    **RELIABLE,  # only items still queued are scored, so a redelivered chunk counts nothing twice
    soft_time_limit=settings.BATCH_CHUNK_TIME_LIMIT,
    time_limit=settings.BATCH_CHUNK_TIME_LIMIT + 30,
)
def score_batch_chunk(*, batch_id: str, start: int, stop: int) -> None:
    from recognizer import batches

    batches.score_chunk(batch_id=batch_id, start=start, stop=stop, predictor=get_predictor())


@shared_task(name="recognizer.sweep_stalled_batches", ignore_result=True)
def sweep_stalled_batches() -> dict[str, int]:
    from recognizer import batches

    return batches.requeue_stalled()
