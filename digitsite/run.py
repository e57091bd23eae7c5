"""`make run`: the whole service in one terminal; Ctrl-C stops all of it.

    .venv/bin/python -m digitsite.run      # serves http://127.0.0.1:$PORT/ (PORT=8000 by default)

Starts the Procfile's processes (gunicorn; the interactive, batch and training Celery workers; beat)
through honcho. With no REDIS_URL it first starts a private Valkey with its data in var/valkey/
and hands its URL to every process. Process counts not set in the environment are sized to the
cores this process may run on (`concurrency_defaults`; the README's sizing table).
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from pathlib import Path

from honcho.environ import parse_procfile
from honcho.manager import Manager

from digitsite.embedded_valkey import start_valkey

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("VAR_DIR", BASE_DIR / "var"))


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def concurrency_defaults(cores: int) -> dict[str, str]:
    """Process counts for a machine with `cores` cores (the Procfile reads these variables).

    Web processes decode and preprocess each drawing, so there is one per core; each has enough
    threads for the requests waiting on an answer (a waiting thread blocks on Redis, no CPU). One
    interactive worker scores everything queued in one forward pass, so it needs few siblings; batch
    workers decode PNGs, one per core but niced below the rest.
    """
    return {
        "WEB_CONCURRENCY": str(max(2, cores)),
        "WEB_THREADS": "32",
        "INTERACTIVE_CONCURRENCY": str(max(1, cores // 8)),
        "BATCH_CONCURRENCY": str(max(1, cores)),
    }


def sized_environment(environ: dict[str, str]) -> dict[str, str]:
    """`environ` with every process count it does not set filled in for this machine."""
    return {**concurrency_defaults(available_cores()), **environ}


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _announce_when_up(port: int) -> None:
    # Printed once gunicorn listens, so the URLs come after the start-up noise, not above it.
    while not _answers(port):
        time.sleep(0.5)
    base = f"http://127.0.0.1:{port}/"
    print(f"\n  Page:      {base}\n  API docs:  {base}api/docs/\n  Ctrl-C stops everything.\n",
          flush=True)  # fmt: skip


def main() -> int:
    port = int(os.environ.get("PORT", "8000"))
    if _answers(port):
        print(f"Port {port} is already in use: stop what serves it or set PORT.", file=sys.stderr)
        return 1
    # PYTHON: the Procfile runs `$PYTHON -m ...`, never the venv's console scripts.
    env = {
        **sized_environment(dict(os.environ)),
        "PORT": str(port),
        "PYTHON": sys.executable,
        "PYTHONUNBUFFERED": "1",
    }
    counts = ", ".join(f"{name}={env[name]}" for name in concurrency_defaults(1))
    print(f"{available_cores()} cores: {counts}")
    valkey = None
    if not env.get("REDIS_URL"):
        valkey = start_valkey(VAR_DIR / "valkey")
        env["REDIS_URL"] = valkey.url
        print(f"No REDIS_URL: started a private Valkey at {valkey.url} (data in {valkey.data_dir})")
    manager = Manager()
    for name, command in parse_procfile((BASE_DIR / "Procfile").read_text()).processes.items():
        manager.add_process(name, command, env=env, cwd=str(BASE_DIR))
    threading.Thread(target=_announce_when_up, args=(port,), daemon=True).start()
    try:
        manager.loop()  # until Ctrl-C or any process exits; then honcho stops the rest
    finally:
        if valkey is not None:
            valkey.stop()  # last, so workers shut down with their broker still there
    return manager.returncode or 0


if __name__ == "__main__":
    sys.exit(main())
