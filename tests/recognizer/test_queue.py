"""Sending a task: by name, with the ids as keyword arguments, surviving a broker outage; and the
domain never importing the worker."""

from __future__ import annotations

import ast
import logging
import uuid
from pathlib import Path

from digitsite.celery import app as celery_app
from recognizer import queue

RECOGNIZER = Path(queue.__file__).resolve().parent


def test_send_uses_the_tasks_name_and_ids_as_keyword_arguments(monkeypatch):
    sent = []
    monkeypatch.setattr(
        celery_app, "send_task", lambda name, **options: sent.append((name, options))
    )
    batch_id = uuid.uuid4()
    assert queue.send(queue.SCORE_BATCH_CHUNK, batch_id=batch_id, start=0, stop=64) is True
    ((name, options),) = sent
    assert name == "recognizer.score_batch_chunk"
    assert options["kwargs"] == {"batch_id": str(batch_id), "start": 0, "stop": 64}
    assert options["retry_policy"] == queue.RETRY_POLICY


def test_send_with_the_broker_down_logs_and_answers_false(monkeypatch, caplog):
    def unreachable(*_, **__):
        raise ConnectionRefusedError("broker down")

    monkeypatch.setattr(celery_app, "send_task", unreachable)
    with caplog.at_level(logging.WARNING, logger="recognizer.queue"):
        assert queue.send(queue.RETRAIN, requested_by="staff") is False
    assert "broker unreachable" in caplog.text


def test_every_name_the_domain_sends_is_a_registered_task_with_its_delivery_options():
    import worker.tasks  # noqa: F401 - registers the tasks (tests may import the worker)

    names = [
        queue.PREDICT_SUBMISSION,
        queue.SWEEP_STUCK_SUBMISSIONS,
        queue.SCORE_BATCH_CHUNK,
        queue.SWEEP_STALLED_BATCHES,
        queue.RETRAIN,
    ]
    for name in names:
        assert name in celery_app.tasks, name
    for name in (queue.PREDICT_SUBMISSION, queue.SCORE_BATCH_CHUNK):
        task = celery_app.tasks[name]
        assert (task.acks_late, task.reject_on_worker_lost) == (True, True), name
    assert celery_app.tasks[queue.RETRAIN].acks_late is False


def test_the_domain_never_imports_the_worker():
    offenders = []
    for path in RECOGNIZER.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            if any(module == "worker" or module.startswith("worker.") for module in modules):
                offenders.append(f"{path.relative_to(RECOGNIZER.parent)}:{node.lineno}")
    assert offenders == []
