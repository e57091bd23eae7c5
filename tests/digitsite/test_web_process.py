"""What a web process sets up once for all its request threads (digitsite/wsgi.py, Celery)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from digitsite.celery import app

ROOT = Path(__file__).resolve().parents[2]


def torch_threads_of_a_web_process(**env: str) -> int:
    probe = "import digitsite.wsgi, torch; print(torch.get_num_threads())"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "digitsite.settings", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return int(out.stdout.split()[-1])


def test_a_web_process_preprocesses_on_one_torch_thread_unless_told_otherwise():
    # Torch's default (a thread per core) doubled a drawing's CPU: its small ops waited for
    # threads that the other requests and the workers were using.
    assert torch_threads_of_a_web_process() == 1
    assert torch_threads_of_a_web_process(WEB_TORCH_THREADS="2") == 2


def test_request_threads_share_one_result_backend():
    # Celery otherwise builds a backend per thread (scanning every package's entry points), which
    # each of gunicorn's threads paid on its first drawing.
    backends = [app.backend]
    thread = threading.Thread(target=lambda: backends.append(app.backend))
    thread.start()
    thread.join()
    assert backends[0] is backends[1]
