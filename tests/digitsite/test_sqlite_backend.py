"""SQLite's writers taking turns (digitsite/sqlite_backend): a writer waits for the transaction
in progress and begins as soon as it ends, whether it commits or rolls back; a turn that is never
given back (a stuck holder) does not block a writer for longer than the database timeout; and
everything written is there. On its own database file, whatever DATABASE_URL the suite runs on."""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db.utils import ConnectionHandler

from digitsite.sqlite_backend.base import DatabaseWrapper


@pytest.fixture
def database(tmp_path: Path, django_db_blocker) -> Iterator[Path]:
    path = tmp_path / "writers.sqlite3"
    with django_db_blocker.unblock():
        with connect(path) as connection, connection.cursor() as cursor:
            cursor.execute("CREATE TABLE drawing (id INTEGER PRIMARY KEY, writer TEXT)")
        yield path


@contextlib.contextmanager
def connect(path: Path, timeout: float = 20) -> Iterator[DatabaseWrapper]:
    """A connection of this thread's own, configured as settings.py configures SQLite."""
    options = {"timeout": timeout, "transaction_mode": "IMMEDIATE"}
    handler = ConnectionHandler(
        {"default": {"ENGINE": "digitsite.sqlite_backend", "NAME": str(path), "OPTIONS": options}}
    )
    connection = handler["default"]
    assert isinstance(connection, DatabaseWrapper)
    try:
        yield connection
    finally:
        connection.close()


@contextlib.contextmanager
def write_transaction(connection: DatabaseWrapper) -> Iterator:
    """What transaction.atomic() does on SQLite, on a connection outside django.db.connections."""
    connection.ensure_connection()
    connection._start_transaction_under_autocommit()
    try:
        with connection.cursor() as cursor:
            yield cursor
    except BaseException:
        connection.rollback()
        raise
    connection.commit()


def rows(path: Path) -> list[str]:
    with connect(path) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT writer FROM drawing ORDER BY id")
        return [writer for (writer,) in cursor.fetchall()]


def in_thread(target, *args) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("first_ends_by", ["commit", "rollback"])
def test_a_writer_waits_for_the_transaction_in_progress_and_begins_when_it_ends(
    database: Path, first_ends_by: str
):
    events: list[str] = []
    first_began, first_may_end = threading.Event(), threading.Event()

    def first() -> None:
        with connect(database) as connection:
            with contextlib.suppress(RuntimeError), write_transaction(connection) as cursor:
                cursor.execute("INSERT INTO drawing (writer) VALUES ('first')")
                first_began.set()
                first_may_end.wait(10)
                events.append(f"first {first_ends_by}")
                if first_ends_by == "rollback":
                    raise RuntimeError("rolled back")

    def second() -> None:
        with connect(database) as connection, write_transaction(connection) as cursor:
            events.append("second began")
            cursor.execute("INSERT INTO drawing (writer) VALUES ('second')")

    threads = [in_thread(first)]
    assert first_began.wait(10)
    threads.append(in_thread(second))
    time.sleep(0.3)
    assert events == [], "the second writer began while the first was in its transaction"
    first_may_end.set()
    for thread in threads:
        thread.join(10)
    assert events == [f"first {first_ends_by}", "second began"]
    assert rows(database) == (["first", "second"] if first_ends_by == "commit" else ["second"])


def test_many_writers_at_once_all_write(database: Path):
    def writer(name: str) -> None:
        with connect(database) as connection:
            for i in range(20):
                with write_transaction(connection) as cursor:
                    cursor.execute("INSERT INTO drawing (writer) VALUES (%s)", [f"{name}-{i}"])

    threads = [in_thread(writer, f"w{n}") for n in range(8)]
    for thread in threads:
        thread.join(30)
    assert sorted(rows(database)) == sorted(f"w{n}-{i}" for n in range(8) for i in range(20))


def test_a_turn_never_given_back_delays_a_writer_by_the_timeout_at_most(database: Path):
    # Another holder of the queue's lock that never lets go, and holds no SQLite lock (a process
    # stopped between its turn and its BEGIN): the writer begins once its timeout has passed.
    stuck = os.open(f"{database}-writers", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(stuck, fcntl.LOCK_EX)
        with connect(database, timeout=0.5) as connection:
            started = time.monotonic()
            with write_transaction(connection) as cursor:
                cursor.execute("INSERT INTO drawing (writer) VALUES ('patient')")
            waited = time.monotonic() - started
    finally:
        os.close(stuck)
    assert 0.5 <= waited < 5
    assert rows(database) == ["patient"]


def test_the_turn_is_given_back_with_the_transaction(database: Path):
    with connect(database) as connection:
        with write_transaction(connection) as cursor:
            cursor.execute("INSERT INTO drawing (writer) VALUES ('one')")
        probe = os.open(f"{database}-writers", os.O_RDWR)
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if still held
            fcntl.flock(probe, fcntl.LOCK_UN)
        finally:
            os.close(probe)


def test_an_in_memory_database_needs_no_queue(tmp_path: Path, django_db_blocker):
    with django_db_blocker.unblock(), connect(Path(":memory:")) as connection:
        with write_transaction(connection) as cursor:
            cursor.execute("CREATE TABLE t (x INTEGER)")
        assert connection._queue_fd is None
    assert not list(tmp_path.iterdir())


def test_the_turn_follows_the_database_when_its_name_changes(database: Path, tmp_path: Path):
    # As when the test database is made on a connection first opened on the real one.
    other = tmp_path / "other.sqlite3"
    with connect(database) as connection:
        with write_transaction(connection) as cursor:
            cursor.execute("INSERT INTO drawing (writer) VALUES ('one')")
        connection.settings_dict["NAME"] = str(other)  # (the open SQLite connection stays put)
        with write_transaction(connection) as cursor:
            cursor.execute("INSERT INTO drawing (writer) VALUES ('two')")
    assert Path(f"{other}-writers").exists()
