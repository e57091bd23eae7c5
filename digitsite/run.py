"""`make run`: the whole service in one terminal; Ctrl-C stops all of it.

    .venv/bin/python -m digitsite.run      # serves http://127.0.0.1:$PORT/ (PORT=8000 by default)

Starts the Procfile's processes (gunicorn; the interactive, batch and training Celery workers; beat)
through honcho. With no REDIS_URL it first starts a private Valkey with its data in var/valkey/
and hands its URL to every process. Process counts not set in the environment are sized to the
cores this process may run on (`concurrency_defaults`; the README's sizing table).
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from honcho.environ import parse_procfile
from honcho.manager import Manager
from honcho.process import Popen, Process

from digitsite.embedded_valkey import die_with_parent, start_valkey

BASE_DIR = Path(__file__).resolve().parent.parent


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def concurrency_defaults(cores: int) -> dict[str, str]:
    """Process counts for a machine with `cores` cores (the Procfile reads these variables).

    Web processes decode and preprocess each drawing under the GIL, so there are two per core:
    fewer threads contending for each process's GIL cost less CPU per drawing (at 64 clients on 2
    cores, 4 x 16 threads answered 80-84 drawings/s against 70 for 2 x 32). Each has enough
    threads for the requests waiting on an answer (a waiting thread blocks on Redis, no CPU). The
    interactive worker scores everything queued in one forward pass, so it needs few processes, but
    two: while one writes a batch's answers back, the other scores the next (at 16 clients on 2
    cores, 2 answered 186-228 drawings/s where 1 answered 132-211, alternating). Batch workers
    decode PNGs, one per core but niced below the rest.
    """
    return {
        "WEB_CONCURRENCY": str(max(4, 2 * cores)),
        "WEB_THREADS": "16",
        "INTERACTIVE_CONCURRENCY": str(max(2, cores // 8)),
        "BATCH_CONCURRENCY": str(max(1, cores)),
    }


def sized_environment(environ: dict[str, str]) -> dict[str, str]:
    """`environ` with every process count it does not set filled in for this machine."""
    return {**concurrency_defaults(available_cores()), **environ}


class DiesWithLauncher(Process):
    """A Procfile process that ends with the launcher however the launcher ends (Linux).

    honcho runs each command through a helper process that ignores SIGTERM; a SIGKILLed launcher
    or a closed terminal would leave the helpers, gunicorn and the workers running (and port 8000
    taken). The helper is killed when the launcher dies, and so is the command when its helper
    dies: SIGKILL, not SIGTERM, because the broker goes at the same moment and a Celery worker's
    warm shutdown would wait for it for ever. What a worker held is redelivered (acks_late);
    gunicorn's and Celery's own children follow their parent (they watch it / set their own
    parent-death signal). Ctrl-C still stops everything gracefully, the broker last.
    """

    cmd: str  # set by honcho's Process (untyped)

    def run(self, events: Any = None, ignore_signals: bool = False) -> None:
        die_with_parent(os.getppid(), signal.SIGKILL)  # this is honcho's helper, forked just now
        helper = os.getpid()
        self._child_ctor = functools.partial(
            Popen, preexec_fn=lambda: die_with_parent(helper, signal.SIGKILL)
        )
        # exec: the command replaces honcho's shell, so it is what the signal reaches (the
        # Procfile's lines are single commands).
        self.cmd = f"exec {self.cmd}"
        super().run(events, ignore_signals)


def procfile_manager(procfile: str, env: dict[str, str], cwd: Path) -> Manager:
    """A honcho Manager of the Procfile's processes, each dying with this process."""
    manager = Manager()
    manager._process_ctor = DiesWithLauncher  # honcho's hook for the process class
    for name, command in parse_procfile(procfile).processes.items():
        manager.add_process(name, command, env=env, cwd=str(cwd))
    return manager


def var_dir() -> Path:
    """VAR_DIR as the settings read it (one place for its default), loaded only when needed:
    the benches import this module for its sizing alone."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "digitsite.settings")
    from django.conf import settings

    return Path(settings.VAR_DIR)


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
        valkey = start_valkey(var_dir() / "valkey")
        env["REDIS_URL"] = valkey.url
        print(f"No REDIS_URL: started a private Valkey at {valkey.url} (data in {valkey.data_dir})")
    manager = procfile_manager((BASE_DIR / "Procfile").read_text(), env, BASE_DIR)
    threading.Thread(target=_announce_when_up, args=(port,), daemon=True).start()
    try:
        manager.loop()  # until Ctrl-C or any process exits; then honcho stops the rest
    finally:
        if valkey is not None:
            valkey.stop()  # last, so workers shut down with their broker still there
    return manager.returncode or 0


if __name__ == "__main__":
    sys.exit(main())
