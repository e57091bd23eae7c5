"""`make run`'s launcher (digitsite/run.py): what it starts ends with it, however it ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from digitsite.embedded_valkey import _alive

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent

# Two Procfile lines shaped like the real ones: a plain command, and one through `nice` with a
# variable the shell expands. Their odd sleep lengths let the test find them in /proc.
LAUNCHER = r"""
import os, sys
from pathlib import Path
from digitsite.run import procfile_manager
procfile = 'a: sleep 3001\nb: nice -n 1 "${PYTHON}" -c "import time; time.sleep(3002)"\n'
env = {**os.environ, "PYTHON": sys.executable}
procfile_manager(procfile, env, Path.cwd()).loop()
"""


def _pids_running(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in command and "procfile" not in command and _alive(int(entry.name)):
            found.append(int(entry.name))
    return found


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")
def test_procfile_processes_end_when_the_launcher_is_killed():
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER],
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    started: list[int] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            started = _pids_running("sleep 3001") + _pids_running("time.sleep(3002)")
            if len(started) >= 2:
                break
            time.sleep(0.1)
        assert len(started) >= 2, "the Procfile's processes did not start"
        launcher.send_signal(signal.SIGKILL)  # no cleanup runs in the launcher
        launcher.wait(timeout=10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(_alive(pid) for pid in started):
            time.sleep(0.1)
        assert [pid for pid in started if _alive(pid)] == [], "they outlived the launcher"
    finally:
        launcher.kill()
        launcher.wait()
        for pid in started:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
