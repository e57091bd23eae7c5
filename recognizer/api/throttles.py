"""The API's throttles: DRF's, counting in the shared cache (Redis; digitsite/cache.py), so every
web process counts the same requests.

When the cache cannot be reached they let the request through and log it: a Redis outage must not
refuse all work (a submission is stored and the sweeper enqueues it once the broker is back), and
the rates bind again as soon as Redis answers.
"""

from __future__ import annotations

import logging

from redis.exceptions import RedisError
from rest_framework.request import Request
from rest_framework.throttling import AnonRateThrottle, SimpleRateThrottle, UserRateThrottle
from rest_framework.views import APIView

logger = logging.getLogger(__name__)


class FailOpenThrottle(SimpleRateThrottle):
    def allow_request(self, request: Request, view: APIView) -> bool:
        try:
            return super().allow_request(request, view)
        except RedisError as exc:
            logger.warning("throttle %s not applied: cache unreachable (%s)", self.scope, exc)
            return True


class AnonThrottle(FailOpenThrottle, AnonRateThrottle):
    """THROTTLE_ANON per client address (see NUM_PROXIES), for anonymous clients."""


class UserThrottle(FailOpenThrottle, UserRateThrottle):
    """THROTTLE_USER per signed-in user. Anonymous clients are AnonThrottle's alone: counting them
    here too would cost two more cache round trips on every anonymous drawing."""

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
