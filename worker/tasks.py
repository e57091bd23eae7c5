"""Thin Celery tasks: ids in, plain functions from recognizer.services do the work."""

from __future__ import annotations

import logging

from celery import shared_task
from celery.signals import worker_process_init
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


@shared_task(
    name="recognizer.predict_submission",
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(DatabaseError,),
    retry_backoff=True,
    retry_backoff_max=30,
    max_retries=5,
)
def predict_submission(*, submission_id: str) -> None:
    services.predict_one(submission_id=submission_id, predictor=get_predictor())


@shared_task(name="recognizer.sweep_stuck_submissions", ignore_result=True)
def sweep_stuck_submissions() -> dict[str, int]:
    return services.requeue_stuck()
