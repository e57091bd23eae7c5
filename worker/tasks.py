"""Thin Celery tasks: ids in, plain functions from the domain do the work.

Each task is registered under the name the domain sends it by (recognizer/queue.py), so the
domain never imports this module; the delivery options of the tasks that write answers come from
there too.
"""

from __future__ import annotations

import logging
import time

from celery import shared_task
from celery.signals import task_prerun, worker_process_init
from celery_batches import SimpleRequest
from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection

from recognizer import queue, retraining, services
from recognizer.batches import jobs, scoring
from worker.batching import ReliableBatches
from worker.model_holder import get_predictor

log = logging.getLogger(__name__)


@worker_process_init.connect
def load_model_at_start(**_: object) -> None:
    # Loading takes well under a second; doing it here spares the first drawing the wait.
    try:
        get_predictor()
    except Exception:  # never keep the worker from starting; the first task will retry
        log.exception("could not preload the model")


@task_prerun.connect
def keep_usable_database_connections(**_: object) -> None:
    # Django's rule between two requests, applied between two tasks: a connection is kept for
    # CONN_MAX_AGE and closed sooner if an error left it unusable (a database restart, say).
    # Celery's own rule, to close every connection around every task, is switched off in
    # settings (CELERY_DB_REUSE_MAX): reconnecting for each batch cost the interactive worker
    # 0.5 ms of CPU on SQLite, and 1 ms of CPU and 5 ms of wall time on PostgreSQL.
    _close_old_connections()


def _close_old_connections() -> None:
    # Never inside a transaction, which a task run eagerly (a test's, say) may be called in:
    # Django would close the connection under it. A worker runs every task outside one.
    if not connection.in_atomic_block:
        close_old_connections()


@shared_task(
    name=queue.PREDICT_SUBMISSION,
    base=ReliableBatches,
    # Whatever is queued, up to INTERACTIVE_BATCH_SIZE drawings, or what came within
    # INTERACTIVE_BATCH_WAIT_SECONDS of the first: one forward pass, one commit.
    flush_every=settings.INTERACTIVE_BATCH_SIZE,
    flush_interval=settings.INTERACTIVE_BATCH_WAIT_SECONDS,
    # Acknowledged once answered; requeued at once if the process dies (ReliableBatches).
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def predict_submission(requests: list[SimpleRequest]) -> None:
    ids = [request.kwargs["submission_id"] for request in requests]
    # Database errors are retried here with backoff (a batch cannot use Celery's per-message
    # retry); after the last try the submissions stay in flight for the sweeper.
    for delay in (0.1, 0.3, 1.0, 3.0, None):
        try:
            services.predict_many(submission_ids=ids, predictor=get_predictor())
            return
        except DatabaseError:
            if delay is None:
                raise
            log.warning("database error on a batch of %d, again in %.1f s", len(ids), delay)
            time.sleep(delay)
            _close_old_connections()  # the next try reconnects if the error broke it


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
