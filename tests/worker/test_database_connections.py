"""Workers keep their database connection between tasks, by Django's rules (worker/tasks.py)."""

from __future__ import annotations

import pytest
from celery.fixups.django import DjangoWorkerFixup
from celery.signals import task_prerun
from django.db import connection

from digitsite.celery import app
from worker.tasks import predict_submission


def send_task_prerun() -> None:
    task_prerun.send(
        sender=predict_submission, task_id="t", task=predict_submission, args=(), kwargs={}
    )


def run_task_signals(fixup: DjangoWorkerFixup) -> None:
    """What a worker does around a task, as far as database connections go: Celery's fixup
    (installed in every worker process) and the receivers of task_prerun."""
    fixup.on_task_prerun(sender=predict_submission)
    send_task_prerun()
    fixup.on_task_postrun(sender=predict_submission)


@pytest.mark.usefixtures("transactional_db")
def test_tasks_share_one_connection() -> None:
    fixup = DjangoWorkerFixup(app)
    connection.ensure_connection()
    opened = connection.connection
    for _ in range(5):
        run_task_signals(fixup)
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    assert connection.connection is opened


@pytest.mark.usefixtures("transactional_db")
def test_a_connection_an_error_left_unusable_is_replaced_before_the_next_task(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fixup = DjangoWorkerFixup(app)
    connection.ensure_connection()
    opened = connection.connection
    connection.errors_occurred = True  # as Django marks it after a DatabaseError
    monkeypatch.setattr(connection, "is_usable", lambda: False)
    run_task_signals(fixup)
    monkeypatch.undo()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    assert connection.connection is not None
    assert connection.connection is not opened


@pytest.mark.django_db
def test_a_task_run_inside_a_transaction_leaves_its_connection_alone() -> None:
    # pytest-django's `db` runs this test in a transaction, as an eager task may be run.
    connection.ensure_connection()
    opened = connection.connection
    send_task_prerun()
    assert connection.connection is opened
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
