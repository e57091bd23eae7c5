"""The answer signal: a waiting request wakes on the worker's Redis token, not by polling the row,
and the row stays the record when a signal is lost."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from recognizer import answer_signal

pytestmark = pytest.mark.integration


@pytest.fixture
def signal(redis_url, settings):
    settings.REDIS_URL = redis_url
    settings.WAIT_RECHECK_SECONDS = 5.0
    return answer_signal


def test_a_waiter_wakes_when_the_answer_is_announced_not_at_its_recheck(signal):
    submission = uuid.uuid4()
    state = {"done": False, "reads": 0}

    def finished() -> bool:
        state["reads"] += 1
        return state["done"]

    def answer_later() -> None:
        time.sleep(0.3)
        state["done"] = True
        signal.announce([submission])

    threading.Thread(target=answer_later).start()
    started = time.monotonic()
    assert signal.wait(submission, 4.0, finished)
    assert 0.25 <= time.monotonic() - started < 1.0  # the recheck would have been at 5 s
    assert state["reads"] == 1  # once, after the signal: no polling


def test_an_answer_announced_before_anyone_waits_is_seen_at_once_by_every_waiter(signal):
    submission = uuid.uuid4()
    state = {"done": False}
    signal.announce([submission])
    state["done"] = True
    woke = []

    def waiter() -> None:
        reads = []

        def finished_after_one_read() -> bool:
            # The first read says "not yet" (a row read just before the commit): the token decides.
            reads.append(1)
            return len(reads) > 1 and state["done"]

        started = time.monotonic()
        woke.append(
            (signal.wait(submission, 3.0, finished_after_one_read), time.monotonic() - started)
        )

    threads = [threading.Thread(target=waiter) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [ok for ok, _ in woke] == [True] * 3
    assert max(seconds for _, seconds in woke) < 0.5


def test_a_lost_signal_costs_one_recheck_and_no_answer(signal, settings):
    settings.WAIT_RECHECK_SECONDS = 0.2
    state = {"done": False}
    threading.Timer(0.1, lambda: state.update(done=True)).start()  # answered, never announced
    started = time.monotonic()
    assert signal.wait(uuid.uuid4(), 3.0, lambda: state["done"])
    assert time.monotonic() - started < 0.6


def test_a_wait_ends_at_its_deadline_without_an_answer(signal):
    started = time.monotonic()
    assert not signal.wait(uuid.uuid4(), 0.3, lambda: False)
    assert 0.3 <= time.monotonic() - started < 1.0


def test_without_redis_the_waiter_reads_the_row_instead(signal, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    settings.WAIT_RECHECK_SECONDS = 0.2
    state = {"done": False}
    threading.Timer(0.3, lambda: state.update(done=True)).start()
    assert signal.wait(uuid.uuid4(), 3.0, lambda: state["done"])
    signal.announce([uuid.uuid4()])  # the worker's side does not raise either
