from __future__ import annotations

import pytest

from recognizer import queue
from tests.factories import record_sent_tasks


@pytest.fixture
def chunks(monkeypatch) -> list[dict]:
    """The batch chunk tasks that would have gone to the broker."""
    return record_sent_tasks(monkeypatch, queue.SCORE_BATCH_CHUNK)
