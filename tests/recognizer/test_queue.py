"""Sending a task: by name, with the ids as keyword arguments, surviving a broker outage.
(That the domain never imports the worker is tests/test_layers.py's.)"""

from __future__ import annotations

import logging
import uuid

from digitsite.celery import app as celery_app
from recognizer import queue


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
