"""make run sizes the process counts to the machine unless the environment sets them (the README's
sizing table), and the Procfile reads exactly those variables."""

from __future__ import annotations

import re
from pathlib import Path

from digitsite import run

ROOT = Path(__file__).resolve().parent.parent.parent


def test_defaults_follow_the_cores_as_the_readme_says():
    assert run.concurrency_defaults(2) == {
        "WEB_CONCURRENCY": "4",
        "WEB_THREADS": "16",
        "INTERACTIVE_CONCURRENCY": "2",
        "BATCH_CONCURRENCY": "2",
    }
    sixteen = run.concurrency_defaults(16)
    assert (sixteen["WEB_CONCURRENCY"], sixteen["INTERACTIVE_CONCURRENCY"]) == ("32", "2")
    assert sixteen["BATCH_CONCURRENCY"] == "16"
    assert run.concurrency_defaults(1)["WEB_CONCURRENCY"] == "4"  # 64 waiting requests at least


def test_the_environment_wins_over_the_sizing(monkeypatch):
    monkeypatch.setattr(run, "available_cores", lambda: 8)
    env = run.sized_environment({"WEB_THREADS": "4", "PATH": "/bin"})
    assert env["WEB_THREADS"] == "4" and env["PATH"] == "/bin"
    assert env["WEB_CONCURRENCY"] == "16" and env["INTERACTIVE_CONCURRENCY"] == "2"


def test_the_procfile_reads_every_sized_variable():
    procfile = (ROOT / "Procfile").read_text()
    used = set(re.findall(r"\$\{([A-Z_]+):-", procfile))
    assert set(run.concurrency_defaults(2)) <= used
