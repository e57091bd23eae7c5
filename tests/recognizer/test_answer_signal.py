"""The answer signal: a waiting request wakes on the worker's Redis element (the answer, or a token
that says "read the row"), not by polling the row, and the row stays the record when a signal is
lost."""

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

    def finished(element) -> bool:
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

        def finished_after_one_read(element) -> bool:
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
    assert signal.wait(uuid.uuid4(), 3.0, lambda element: state["done"])
    assert time.monotonic() - started < 0.6


def test_a_wait_ends_at_its_deadline_without_an_answer(signal):
    started = time.monotonic()
    assert not signal.wait(uuid.uuid4(), 0.3, lambda element: False)
    assert 0.3 <= time.monotonic() - started < 1.0


def test_without_redis_the_waiter_reads_the_row_instead(signal, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    settings.WAIT_RECHECK_SECONDS = 0.2
    state = {"done": False}
    threading.Timer(0.3, lambda: state.update(done=True)).start()
    elements = []
    assert signal.wait(uuid.uuid4(), 3.0, lambda element: elements.append(element) or state["done"])
    assert set(elements) == {None}  # no element: the waiter reads the row each time
    # The worker's side does not raise either.
    signal.announce([uuid.uuid4()], ['{"status":"done"}'])


def handed_over(signal, submission: uuid.UUID) -> list:
    """The elements a wait for `submission` hands to its `finished`, up to the first (or 1 s)."""
    seen: list = []
    signal.wait(submission, 1.0, lambda element: seen.append(element) or element is not None)
    return seen


def test_the_waiter_is_handed_the_element_announced_a_payload_or_the_plain_token(signal):
    answered, tokened, plain = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    signal.announce([answered, tokened], ['{"status":"done"}', None])
    signal.announce([plain])  # no payloads at all
    for submission, expected in (
        (answered, b'{"status":"done"}'),
        (tokened, signal.TOKEN),
        (plain, b"1"),  # the token is the `1` it always was
    ):
        assert handed_over(signal, submission) == [expected]


def test_every_waiter_is_handed_the_payload_and_it_stays_for_the_next(signal):
    submission = uuid.uuid4()
    signal.announce([submission], ['{"prediction":4}'])
    for _ in range(3):
        assert handed_over(signal, submission) == [b'{"prediction":4}']


def test_a_recheck_without_a_signal_hands_over_nothing(signal, settings):
    settings.WAIT_RECHECK_SECONDS = 0.1
    seen = []
    assert not signal.wait(uuid.uuid4(), 0.35, lambda element: seen.append(element) or False)
    assert seen and set(seen) == {None}  # each recheck, however many Redis's timing allowed


def test_payloads_must_match_the_ids_one_for_one(signal):
    with pytest.raises(ValueError):
        signal.announce([uuid.uuid4(), uuid.uuid4()], ['{"status":"done"}'])
