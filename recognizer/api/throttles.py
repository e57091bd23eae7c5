"""The API's throttles: DRF's, counting in the shared cache (Redis; digitsite/cache.py), so every
web process counts the same requests.

DRF's own count is a read, then a write, of a list of timestamps in the cache: requests that
arrive together all read the same list, all pass, and each writes back its own, so a client
sending 32 at once got all 32 through a limit of 10 a minute. DRF's documentation says as much
and leaves guarantees to the project. On Redis the count here is one Lua script instead (DRF's
sliding log of request times, as a sorted set): trimming, counting and adding happen as one
step on the server, so a limit holds however many requests arrive at once, in one round trip
where DRF needed two. Any other cache (the unit tests' memory) keeps DRF's way.

When the cache cannot be reached they let the request through and log it: a Redis outage must not
refuse all work (a submission is stored and the sweeper enqueues it once the broker is back), and
the rates bind again as soon as Redis answers.
"""

from __future__ import annotations

import functools
import logging
import uuid
from typing import Any

import redis
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from redis.exceptions import RedisError
from rest_framework.request import Request
from rest_framework.throttling import AnonRateThrottle, SimpleRateThrottle, UserRateThrottle
from rest_framework.views import APIView

logger = logging.getLogger(__name__)

# KEYS[1]: the log; ARGV: now, the window in seconds, the limit, a member unique to this request.
# Returns {1} when the request is let through (and logged), {0, oldest time logged} when not.
SLIDING_LOG = """
local key, now, window = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
if redis.call('ZCARD', key) < tonumber(ARGV[3]) then
    redis.call('ZADD', key, now, ARGV[4])
    redis.call('PEXPIRE', key, math.ceil(window * 1000))
    return {1}
end
return {0, redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2]}
"""


@functools.cache
def _sliding_log(client: redis.Redis) -> Any:
    """The script registered with this client (sent by its SHA, loaded again if Redis lost it)."""
    return client.register_script(SLIDING_LOG)


class FailOpenThrottle(SimpleRateThrottle):
    num_requests: int  # set by DRF from the rate (its stubs leave them out)
    duration: int
    _retry_after: float | None = None

    def allow_request(self, request: Request, view: APIView) -> bool:
        try:
            backend = caches["default"]  # (DRF's `cache` is a proxy to it)
            if isinstance(backend, RedisCache):
                return self._allow_atomically(backend, request, view)
            return super().allow_request(request, view)
        except RedisError as exc:
            logger.warning("throttle %s not applied: cache unreachable (%s)", self.scope, exc)
            return True

    def _allow_atomically(self, backend: RedisCache, request: Request, view: APIView) -> bool:
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        key = backend.make_and_validate_key(self.key)
        client = backend._cache.get_client(key, write=True)
        self.now = self.timer()
        member = f"{self.now!r}-{uuid.uuid4().hex}"
        allowed, *oldest = _sliding_log(client)(
            keys=[key], args=[repr(self.now), self.duration, self.num_requests, member]
        )
        if allowed:
            return True
        # Until the oldest request in the window leaves it, a slot is free.
        self._retry_after = max(0.0, float(oldest[0]) + self.duration - self.now)
        return False

    def wait(self) -> float | None:
        if self._retry_after is not None:
            return self._retry_after
        return super().wait()


class AnonThrottle(FailOpenThrottle, AnonRateThrottle):
    """THROTTLE_ANON per client address (see NUM_PROXIES), for anonymous clients."""


class UserThrottle(FailOpenThrottle, UserRateThrottle):
    """THROTTLE_USER per signed-in user. Anonymous clients are AnonThrottle's alone: counting them
    here too would cost a cache round trip more on every anonymous drawing."""

    def get_cache_key(self, request: Request, view: APIView) -> str | None:
        if not (request.user and request.user.is_authenticated):
            return None  # DRF: no key, no throttling by this class
        return super().get_cache_key(request, view)


class LabelRateThrottle(FailOpenThrottle):
    """THROTTLE_LABEL per user, or per client address (see NUM_PROXIES) for anonymous clients."""

    scope = "label"

    def get_cache_key(self, request: Request, view: object) -> str:
        user = request.user
        ident = f"user-{user.pk}" if user and user.is_authenticated else self.get_ident(request)
        return self.cache_format % {"scope": self.scope, "ident": ident}
