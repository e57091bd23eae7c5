"""Liveness (/healthz: the process answers) and readiness (/readyz: database, broker and at least
one Celery worker answer; 503 otherwise, so a load balancer stops sending work)."""

from __future__ import annotations

import dataclasses

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import View
from health_check.backends import HealthCheck
from health_check.contrib.redis.backends import RedisHealthCheck
from health_check.exceptions import ServiceUnavailable
from health_check.views import HealthCheckView
from redis import Redis

from digitsite.celery import app

_REDIS_TIMEOUTS = {"socket_connect_timeout": 1, "socket_timeout": 1}


class LivenessView(View):
    def get(self, request: HttpRequest) -> HttpResponse:
        return JsonResponse({"status": "ok"})


@dataclasses.dataclass
class CeleryWorkersCheck(HealthCheck):
    """Our own app's workers answer a ping (health_check's celery_ping pings Celery's default app
    and demands a worker for every queue; one live worker is what readiness needs here)."""

    timeout: float = dataclasses.field(
        default_factory=lambda: settings.READINESS_WORKER_PING_TIMEOUT
    )

    def check_status(self) -> None:
        try:
            replies = app.control.ping(timeout=self.timeout)
        except Exception as exc:  # the broker itself is down: same answer, not ready
            raise ServiceUnavailable(f"broker unreachable: {exc}") from exc
        if not replies:
            raise ServiceUnavailable("no Celery worker answered")

    def __repr__(self) -> str:
        return "CeleryWorkers"


class ReadinessView(HealthCheckView):
    @property
    def checks(self) -> tuple:  # read per request, so the broker URL is the one in force now
        return (
            "health_check.Database",
            (RedisHealthCheck, {"client": Redis.from_url(settings.REDIS_URL, **_REDIS_TIMEOUTS)}),
            (CeleryWorkersCheck, {}),
        )

    def get(self, request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        response = super().get(request, *args, **kwargs)
        # health_check answers 500 on a failed check; "not ready" is 503 Service Unavailable.
        if response.status_code == 500:
            response.status_code = 503
        return response
