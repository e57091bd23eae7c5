"""Thin Celery tasks: ids in, plain functions from the domain do the work.

Each task is registered under the name the domain sends it by (recognizer/queue.py), so the
domain never imports this module; the delivery options of the tasks that write answers come from
there too.
"""

from __future__ import annotations

import logging

from celery import shared_task
from celery.signals import worker_process_init
from django.conf import settings

from recognizer import queue, retraining, services
from recognizer.batches import jobs, scoring
from worker.model_holder import get_predictor

log = logging.getLogger(__name__)


@worker_process_init.connect
def load_model_at_start(**_: object) -> None:
    # Loading takes well under a second; doing it here spares the first drawing the wait.
    try:
        get_predictor()
    except Exception:  # never keep the worker from starting; the first task will retry
        log.exception("could not preload the model")


@shared_task(name=queue.PREDICT_SUBMISSION, **queue.RELIABLE_DELIVERY)
def predict_submission(*, submission_id: str) -> None:
    services.predict_one(submission_id=submission_id, predictor=get_predictor())


@shared_task(name=queue.SWEEP_STUCK_SUBMISSIONS, ignore_result=True)
def sweep_stuck_submissions() -> dict[str, int]:
    return services.requeue_stuck()


@shared_task(
    name=queue.RETRAIN,
    ignore_result=True,
    # Minutes of training: its own limits, and no redelivery of a half-done run after a crash.
    acks_late=False,
    soft_time_limit=settings.RETRAIN_TIME_LIMIT,
    time_limit=settings.RETRAIN_TIME_LIMIT + 60,
)
def retrain(*, requested_by: str = "", dry_run: bool = False) -> None:
    command = f"admin: Retrain now ({requested_by})" if requested_by else "recognizer.retrain task"
    retraining.retrain(
        options=retraining.RetrainOptions(dry_run=dry_run, command=command), progress=log.info
    )


@shared_task(
    name=queue.SCORE_BATCH_CHUNK,
    ignore_result=True,
    # Only items still in flight are scored, so a redelivered chunk counts nothing twice.
    **queue.RELIABLE_DELIVERY,
    soft_time_limit=settings.BATCH_CHUNK_TIME_LIMIT,
    time_limit=settings.BATCH_CHUNK_TIME_LIMIT + 30,
)
def score_batch_chunk(*, batch_id: str, start: int, stop: int) -> None:
    scoring.score_chunk(batch_id=batch_id, start=start, stop=stop, predictor=get_predictor())


@shared_task(name=queue.SWEEP_STALLED_BATCHES, ignore_result=True)
def sweep_stalled_batches() -> dict[str, int]:
    return jobs.requeue_stalled()
