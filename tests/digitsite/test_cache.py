"""The shared cache (digitsite/cache.py): where it lives, that clearing it spares the broker's
queues, and that two web processes count one client's requests together (DRF's throttles)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from rest_framework.test import APIClient

from digitsite.cache import cache_settings
from digitsite.celery import app as celery_app
from tests import conftest
from tests.recognizer.api.payloads import data_url, digit_png

SUBMISSIONS = "/api/v1/submissions/"


def settings_for(**env: object) -> dict:
    defaults = {"redis_url": "redis://127.0.0.1:6379/0", "cache_url": "", "cache_db": 1}
    return cache_settings(**{**defaults, **env, "key_prefix": "digitsite"})


# --- Where the cache lives -----------------------------------------------------------------------


def test_by_default_the_cache_is_another_database_on_the_brokers_server():
    config = settings_for(redis_url="redis://:secret@redis.internal:6380/0")
    assert config["BACKEND"] == "digitsite.cache.SharedRedisCache"
    assert config["LOCATION"] == "redis://:secret@redis.internal:6380/1"
    assert config["KEY_PREFIX"] == "digitsite"
    # A Redis that is down must not hold a request for long.
    assert config["OPTIONS"]["socket_timeout"] <= 2


def test_cache_redis_db_chooses_the_database_and_the_brokers_own_is_refused():
    assert settings_for(redis_url="redis://h:6379/2", cache_db=5)["LOCATION"] == "redis://h:6379/5"
    assert settings_for(redis_url="redis://h:6379", cache_db=3)["LOCATION"] == "redis://h:6379/3"
    with pytest.raises(ImproperlyConfigured, match="CACHE_REDIS_DB=2 is the Celery broker"):
        settings_for(redis_url="redis://h:6379/2", cache_db=2)
    with pytest.raises(ImproperlyConfigured, match="CACHE_REDIS_DB=0"):
        settings_for(redis_url="redis://h:6379", cache_db=0)


def test_cache_url_overrides_the_place():
    assert settings_for(cache_url="rediss://cache.internal:6379/4")["LOCATION"] == (
        "rediss://cache.internal:6379/4"
    )
    valkey = settings_for(cache_url="valkey://cache.internal:6379/2")
    assert valkey["BACKEND"] == "digitsite.cache.SharedRedisCache"
    assert valkey["LOCATION"] == "redis://cache.internal:6379/2"
    single = settings_for(cache_url="locmemcache://")
    assert single["BACKEND"] == "django.core.cache.backends.locmem.LocMemCache"


# --- clear() spares the broker -------------------------------------------------------------------


def test_clearing_the_cache_in_the_brokers_own_database_keeps_queued_tasks(redis_url, shared_cache):
    # The hardest case: the cache shares the broker's database (as the test session's does).
    queue = f"cache-clear-probe-{os.getpid()}"
    client = redis.Redis.from_url(redis_url)
    try:
        celery_app.send_task("recognizer.predict_submission", args=[1], queue=queue)
        before = client.llen(queue)
        assert before == 1
        cache.set("throttle_anon_198.51.100.7", [time.time()])
        cache.set("other", "value")
        assert cache.get("other") == "value"
        prefix = shared_cache["CACHE_KEY_PREFIX"]
        assert len(client.keys(f"{prefix}:*")) == 2  # in the broker's database, beside the queue

        cache.clear()

        assert cache.get("other") is None
        assert cache.get("throttle_anon_198.51.100.7") is None
        assert client.llen(queue) == before  # the task is still queued
        assert client.keys(f"{prefix}:*") == []
    finally:
        client.delete(queue, f"_kombu.binding.{queue}")


def test_the_cache_refuses_to_run_without_a_key_prefix(redis_url):
    config = cache_settings(redis_url=redis_url, cache_url=redis_url, cache_db=0, key_prefix="")
    with override_settings(CACHES={"default": config}), pytest.raises(ImproperlyConfigured):
        cache.get("anything")


def test_the_cache_reuses_one_redis_client_across_calls(redis_url, shared_cache):
    # Django makes a redis.Redis per call; building one cost as much as the round trip. (Each
    # request thread has its own cache object, as Django's caches are per thread.)
    cache.set("reuse-probe", 1)
    assert cache._cache.get_client() is cache._cache.get_client()
    assert cache._cache.get_client(write=True) is cache._cache.get_client(write=True)
    assert cache.get("reuse-probe") == 1


# --- Throttles with Redis down ------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_with_the_cache_unreachable_work_is_still_accepted_and_the_outage_logged(redis_url, caplog):
    # redis_url: the accepted drawing is sent to the session's broker. The cache: a closed port.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    down = f"redis://127.0.0.1:{closed}/1"
    with override_settings(CACHES={"default": settings_for(cache_url=down)}):
        started = time.monotonic()
        response = APIClient().post(SUBMISSIONS, {"image": data_url(digit_png())}, format="json")
        took = time.monotonic() - started
    assert response.status_code == 202, response.content[:300]
    assert took < 10
    assert "throttle anon not applied: cache unreachable" in caplog.text


# --- Two web processes, one throttle -------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _post(port: int, body: bytes) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{SUBMISSIONS}",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as refused:
        assert refused.headers["Content-Type"].startswith("application/json")
        return refused.code


@pytest.fixture
def two_web_processes(
    redis_url, shared_cache, transactional_db, tmp_path: Path
) -> Iterator[list[int]]:
    """Two gunicorn processes on loopback ports, on the test database, broker and shared cache,
    with an anonymous rate of 4 a minute."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "digitsite.settings",
        "DATABASE_URL": conftest.test_database_url(),
        "REDIS_URL": redis_url,
        **shared_cache,
        "THROTTLE_ANON": "4/min",
        "NUM_PROXIES": "0",
    }
    ports = [_free_port(), _free_port()]
    processes = []
    try:
        for n, port in enumerate(ports):
            command = [
                sys.executable, "-m", "gunicorn", "digitsite.wsgi:application",
                "--bind", f"127.0.0.1:{port}", "--workers", "1", "--threads", "2",
            ]  # fmt: skip
            log = (tmp_path / f"web{n}.log").open("ab")
            processes.append(
                subprocess.Popen(
                    command,
                    cwd=conftest.PROJECT_ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )  # fmt: skip
            )
        for n, port in enumerate(ports):
            deadline = time.monotonic() + 120
            while True:
                assert processes[n].poll() is None, (tmp_path / f"web{n}.log").read_text()[-3000:]
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5):
                        break
                except OSError:
                    assert time.monotonic() < deadline, "gunicorn did not answer /healthz"
                    time.sleep(0.3)
        yield ports
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        # The accepted drawings' tasks: no later test's worker should score rows that are gone.
        redis.Redis.from_url(redis_url).delete("interactive")


@pytest.mark.integration
def test_two_web_processes_share_one_anonymous_throttle(two_web_processes, redis_url):
    body = json.dumps({"image": data_url(digit_png())}).encode()
    first, second = two_web_processes
    # Alternating between the processes: with a cache per process each would allow 4 (8 in all).
    codes = [_post(port, body) for port in [first, second, first, second, first, second]]
    assert codes == [202, 202, 202, 202, 429, 429]
    # One count for both processes in the shared cache: the four requests let through.
    key = cache.make_and_validate_key("throttle_anon_127.0.0.1")
    assert redis.Redis.from_url(redis_url).zcard(key) == 4
