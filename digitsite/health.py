"""Liveness (/healthz: the process answers) and readiness (/readyz: database, broker and at least
one Celery worker answer; 503 otherwise, so a load balancer stops sending work).

/readyz is public, so it says only which check fails; the reasons (which name hosts and ports)
are for staff. Its answer is reused for READINESS_CACHE_SECONDS, so a flood of probes costs one
round of checks per interval instead of a thread held per request.
"""

from __future__ import annotations

import dataclasses
import threading
import time

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import View
from health_check.backends import HealthCheck
from health_check.contrib.db_heartbeat.backends import DatabaseHeartBeatCheck
from health_check.contrib.redis.backends import RedisHealthCheck
from health_check.exceptions import ServiceUnavailable
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
            # limit=1: the first reply is enough, rather than waiting out the timeout for more.
            replies = app.control.ping(timeout=self.timeout, limit=1)
        except Exception as exc:  # the broker itself is down: same answer, not ready
            raise ServiceUnavailable(f"broker unreachable: {exc}") from exc
        if not replies:
            raise ServiceUnavailable("no Celery worker answered")


def _run_checks() -> dict[str, str]:
    """Each check's name -> "" when it passed, else its reason."""
    checks: dict[str, HealthCheck] = {
        "database": DatabaseHeartBeatCheck(),
        # Per run, so the broker URL is the one in force now.
        "broker": RedisHealthCheck(client=Redis.from_url(settings.REDIS_URL, **_REDIS_TIMEOUTS)),
        "workers": CeleryWorkersCheck(),
    }
    results = {}
    for name, check in checks.items():
        check.run_check()
        results[name] = "\n".join(str(error) for error in check.errors)
    return results


_lock = threading.Lock()
_cached: tuple[float, dict[str, str]] = (0.0, {})


def readiness() -> dict[str, str]:
    """The checks' results, run at most once per READINESS_CACHE_SECONDS by one thread; others
    wait for that run and share it."""
    global _cached
    with _lock:
        expires, results = _cached
        if time.monotonic() >= expires:
            results = _run_checks()
            _cached = (time.monotonic() + settings.READINESS_CACHE_SECONDS, results)
        return results


class ReadinessView(View):
    def get(self, request: HttpRequest) -> HttpResponse:
        results = readiness()
        ready = not any(results.values())
        staff = getattr(request.user, "is_staff", False)
        checks = {
            name: (reason if staff else "unavailable") if reason else "working"
            for name, reason in results.items()
        }
        response = JsonResponse(
            {"status": "ready" if ready else "unavailable", "checks": checks},
            status=200 if ready else 503,
        )
        response["Cache-Control"] = "no-store"
        return response
