"""The throttles on the shared cache (Redis): a limit holds however many requests arrive at once,
a refused client is told when a slot frees, and the count leaves nothing behind for ever. DRF's
own read-then-write count let 32 simultaneous requests through a limit of 10."""

from __future__ import annotations

import threading

import pytest
import redis
from django.core.cache import cache
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from recognizer.api.throttles import AnonThrottle

pytestmark = pytest.mark.integration


def anonymous_request(address: str = "198.51.100.7") -> Request:
    request = Request(APIRequestFactory().post("/api/v1/submissions/", REMOTE_ADDR=address))
    request._request.user = None
    return request


class Throttle(AnonThrottle):
    rate = "10/min"


def test_a_limit_holds_when_many_requests_arrive_at_once(shared_cache):
    clients = 32
    start = threading.Barrier(clients)
    allowed: list[bool] = []

    def one_request() -> None:
        throttle, request = Throttle(), anonymous_request()
        start.wait()  # every request reads the count at the same moment
        allowed.append(throttle.allow_request(request, None))

    threads = [threading.Thread(target=one_request) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert (allowed.count(True), allowed.count(False)) == (10, 22)


def test_a_refused_client_is_told_when_the_oldest_request_leaves_the_window(shared_cache):
    clock = [1_000.0]

    class Timed(Throttle):
        rate = "3/min"
        timer = staticmethod(lambda: clock[0])

    for at in (1_000.0, 1_010.0, 1_020.0):
        clock[0] = at
        assert Timed().allow_request(anonymous_request(), None)
    clock[0] = 1_030.0
    refused = Timed()
    assert not refused.allow_request(anonymous_request(), None)
    assert refused.wait() == pytest.approx(30.0)  # the request at 1,000 leaves at 1,060
    clock[0] = 1_060.5
    assert Timed().allow_request(anonymous_request(), None)
    # Another address has its own count.
    assert Timed().allow_request(anonymous_request("203.0.113.9"), None)


def test_the_count_expires_with_its_window(redis_url, shared_cache):
    assert Throttle().allow_request(anonymous_request(), None)
    key = cache.make_and_validate_key("throttle_anon_198.51.100.7")
    ttl = redis.Redis.from_url(redis_url).pttl(key)
    assert 0 < ttl <= 60_000
