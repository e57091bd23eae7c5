"""A whole service for a benchmark: a private Valkey, a fresh SQLite database, gunicorn and Celery
workers, all in one temporary folder and all stopped at the end.

    with running_stack(workers={"interactive": "interactive"}) as stack:
        stack.url  # http://127.0.0.1:PORT/

Throttles are raised so the load itself is not refused. Set BENCH_DATABASE_URL to run on PostgreSQL.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from digitsite.embedded_valkey import start_valkey  # noqa: E402
from digitsite.run import sized_environment  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Stack:
    url: str
    env: dict[str, str]
    folder: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer in {timeout}s")


def _wait_ready(url: str, timeout: float) -> None:
    """Until /readyz is 200: database, broker and a worker answer."""
    _wait_http(url + "readyz?format=json", timeout)


def procfile_commands() -> dict[str, str]:
    """The Procfile's processes, {name: shell command}, as `make run` starts them."""
    from honcho.environ import parse_procfile

    return dict(parse_procfile((PROJECT_ROOT / "Procfile").read_text()).processes)


@contextlib.contextmanager
def running_stack(
    workers: dict[str, str] | None = None,
    web_threads: int = 8,
    extra_env: dict[str, str] | None = None,
    procfile: tuple[str, ...] = (),
) -> Iterator[Stack]:
    """Start Valkey, migrate, gunicorn and one Celery worker per {name: queues} entry.

    With `procfile` (say ("web", "worker")), those Procfile processes are started instead of the
    gunicorn and workers above, with the environment `make run` gives them: process counts sized
    to this machine unless the environment sets them (digitsite/run.py)."""
    workers = workers or {"interactive": "interactive"}
    with tempfile.TemporaryDirectory(prefix="digits-bench-") as tmp:
        folder = Path(tmp)
        valkey = start_valkey(folder / "valkey")
        port = free_port()
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "digitsite.settings",
            "VAR_DIR": str(folder),
            "REDIS_URL": valkey.url,
            # The throttle cache in the same private Valkey (database 1), whatever the shell says.
            "CACHE_URL": "",
            "CACHE_REDIS_DB": "1",
            "DATABASE_URL": os.environ.get("BENCH_DATABASE_URL", f"sqlite:///{folder}/db.sqlite3"),
            # Raised far above any load, over a one-second window: the throttle logs one
            # timestamp per request in its window, and all of a bench's requests come from one
            # address; a per-minute window would keep ~10,000 of them, which no client at a real
            # rate makes the service keep.
            "THROTTLE_ANON": "100000/s",
            "THROTTLE_USER": "100000/s",
            "STATIC_MANIFEST": "false",
            **(extra_env or {}),
        }
        stack = Stack(url=f"http://127.0.0.1:{port}/", env=env, folder=folder)
        logs = folder / "logs"
        logs.mkdir()

        def spawn(name: str, *args: str) -> None:
            stack.processes[name] = subprocess.Popen(
                [sys.executable, "-m", *args],
                cwd=PROJECT_ROOT,
                env=env,
                stdout=(logs / f"{name}.log").open("wb"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def spawn_shell(name: str, command: str) -> None:
            stack.processes[name] = subprocess.Popen(
                ["bash", "-c", f"exec {command}"],
                cwd=PROJECT_ROOT,
                env={**sized_environment(env), "PORT": str(port), "PYTHON": sys.executable},
                stdout=(logs / f"{name}.log").open("wb"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        try:
            subprocess.run(
                [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
                cwd=PROJECT_ROOT,
                env=env,
                check=True,
            )
            if procfile:
                commands = procfile_commands()
                for name in procfile:
                    spawn_shell(name, commands[name])
                workers = {}
            else:
                spawn(
                    "web",
                    "gunicorn",
                    "digitsite.wsgi:application",
                    "--bind",
                    f"127.0.0.1:{port}",
                    "--worker-class",
                    "gthread",
                    "--threads",
                    str(web_threads),
                )
            for name, queues in workers.items():
                spawn(
                    f"worker-{name}",
                    "celery",
                    "-A",
                    "digitsite",
                    "worker",
                    "-Q",
                    queues,
                    "-n",
                    f"{name}@%h",
                    "-c",
                    "1",
                    "--without-gossip",
                    "--without-mingle",
                    "-l",
                    "WARNING",
                )
            _wait_ready(stack.url, timeout=120)
            yield stack
        finally:
            for process in stack.processes.values():
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()
            for process in stack.processes.values():
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
            valkey.stop()


def post_json(url: str, body: dict, headers: dict[str, str] | None = None) -> dict:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def get_json(url: str, headers: dict[str, str] | None = None) -> dict:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def round_trip(base_url: str, png: bytes) -> float:
    """Milliseconds from POSTing one drawing to seeing its answer, as the page does."""
    body = {"image": "data:image/png;base64," + base64.b64encode(png).decode()}
    started = time.perf_counter()
    created = post_json(base_url + "api/v1/submissions/", body)
    result = get_json(created["url"] + "?wait=10")
    while result["status"] not in ("done", "failed"):
        result = get_json(created["url"] + "?wait=10")
    if result["status"] != "done":
        raise RuntimeError(f"drawing failed: {result}")
    return (time.perf_counter() - started) * 1000
