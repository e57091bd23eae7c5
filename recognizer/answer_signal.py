"""Telling a waiting request that its answer is written: a Redis signal, not a database poll.

The worker writes answers to the database (the record), commits, then `announce`s their ids: for
each one a Redis list `answer:<id>` gets an element, with a short time to live. A request waiting
for that submission blocks on the list in the web process: no CPU and no query while it waits, and
it wakes within a millisecond of the commit. The wait is a BLMOVE of the list onto itself, which
leaves the element in place, so every request waiting on the submission wakes, and an element
pushed before anyone waits (an answer faster than the request that waits for it) is seen at once.

The element is the answer itself (a payload: the caller's JSON of what it wrote, pushed only when
it is exactly what the row holds), which spares the waiter reading the row, or the plain TOKEN,
which says only "look now". This module carries either and hands it to the waiter; what a payload
means is recognizer/services.py's business. The row stays the record: a signal that never comes
(Redis restarted, a worker killed between its commit and its announce) costs at most
WAIT_RECHECK_SECONDS, as the waiter reads the row again at that interval, whatever Redis says.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import cast
from uuid import UUID

import redis
from django.conf import settings

log = logging.getLogger(__name__)

_PREFIX = "answer:"
# The element that carries no answer: "the answer is written, read the row".
TOKEN = b"1"
_lock = threading.Lock()
_client: tuple[str, redis.Redis] | None = None


def _redis() -> redis.Redis:
    """One client (and connection pool) per process and broker URL, made on first use."""
    global _client
    url = settings.REDIS_URL
    if _client is None or _client[0] != url:
        with _lock:
            if _client is None or _client[0] != url:
                client = redis.Redis.from_url(
                    url,
                    socket_connect_timeout=2,
                    # A BLMOVE blocks up to WAIT_RECHECK_SECONDS; the socket must outwait it.
                    socket_timeout=settings.WAIT_RECHECK_SECONDS + 5,
                    health_check_interval=30,
                )
                _client = (url, client)
    return _client[1]


def key(submission_id: UUID | str) -> str:
    return f"{_PREFIX}{submission_id}"


def announce(
    submission_ids: Iterable[UUID | str], payloads: Iterable[str | None] | None = None
) -> None:
    """Wake whoever waits for these submissions (call it after the answers are committed).

    `payloads`, one per id in the same order, are what the waiters get: the answer, which the
    caller must know to be what the row holds, or None for the plain TOKEN (no payloads: TOKENs).
    One round trip for a whole batch. Never raises on Redis errors: the answer is already in the
    database, and a waiter that misses this reads it at its next recheck."""
    ids = list(submission_ids)
    if not ids:
        return
    elements = [None] * len(ids) if payloads is None else list(payloads)
    ttl = settings.ANSWER_SIGNAL_TTL_SECONDS
    try:
        pipe = _redis().pipeline(transaction=False)
        for submission_id, element in zip(ids, elements, strict=True):
            pipe.rpush(key(submission_id), TOKEN if element is None else element)
            pipe.expire(key(submission_id), ttl)
        pipe.execute()
    except redis.RedisError as exc:
        log.warning("could not announce %d answers (waiters will read the rows): %s", len(ids), exc)


def wait(
    submission_id: UUID | str, seconds: float, finished: Callable[[bytes | None], bool]
) -> bool:
    """Block up to `seconds` until `finished(element)` is true; return its last value.

    `finished` runs after each signal with the element found (a payload or TOKEN, as bytes), and
    every WAIT_RECHECK_SECONDS (or after a Redis error) with None: then it must read the row. The
    caller has just read the row, so not before the first wait."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        step = min(left, settings.WAIT_RECHECK_SECONDS)
        element = None
        try:
            # Bytes: the client is made without decode_responses.
            element = cast(
                bytes | None,
                _redis().blmove(key(submission_id), key(submission_id), step, "RIGHT", "LEFT"),
            )
        except redis.RedisError as exc:
            log.warning("answer signal unavailable, polling the row instead: %s", exc)
            time.sleep(min(step, settings.WAIT_POLL_SECONDS))
        if finished(element):
            return True
    return False
