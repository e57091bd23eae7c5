"""SQLite's write lock, waited for in a fine-grained queue instead of SQLite's busy handler.

The web processes and the workers write to one SQLite file, each in a short transaction (BEGIN
IMMEDIATE, one INSERT or one executemany, COMMIT: well under a millisecond). A writer that finds
the lock taken is put to sleep by SQLite's busy handler for 1, 2, 5, 10, 15, 20, 25 ms and so on,
however soon the lock is free again: under load a few unlucky drawings slept tens of milliseconds
for a lock held a tenth of one (at 16 clients, p99 216-450 ms against 132-200 with this).

Here a write transaction first takes an advisory lock (flock) on a file beside the database, then
begins. A writer that finds it taken polls it again after 50 us, doubling to at most 1 ms, until
SQLite's own `timeout` has passed; then it begins anyway, and SQLite's busy handler and timeout
apply as before. The kernel drops the lock of a process that dies, so a killed worker never
blocks the others; the lock is released when the transaction commits or rolls back. In-memory
databases (one connection each) need no queue.
"""

from __future__ import annotations

import fcntl
import os
import time
from typing import Any

from django.db.backends.sqlite3 import base

FIRST_PAUSE = 0.00005
LONGEST_PAUSE = 0.001


class DatabaseWrapper(base.DatabaseWrapper):
    # (django-stubs does not declare the private methods overridden here: hence the ignores.)
    _queue_fd: int | None = None
    _queue_path = ""
    _in_queue = False

    def _queue_file(self) -> int | None:
        if self.is_in_memory_db():
            return None
        path = f"{self.settings_dict['NAME']}-writers"
        if path != self._queue_path:  # first use, or NAME changed (the test database is made)
            self._close_queue_file()
            self._queue_fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._queue_path = path
        return self._queue_fd

    def _close_queue_file(self) -> None:
        if self._queue_fd is not None:
            # Closing the descriptor also drops a turn still held on it. (A forked child closing
            # its copy drops nothing: the parent's descriptor still holds the turn.)
            os.close(self._queue_fd)
        self._queue_fd = None
        self._queue_path = ""
        self._in_queue = False

    def _take_turn(self) -> None:
        fd = self._queue_file()
        if fd is None:
            return
        timeout = float(self.settings_dict["OPTIONS"].get("timeout", 5))
        deadline = time.monotonic() + timeout
        pause = FIRST_PAUSE
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return  # SQLite's busy handler takes over, and raises when it times out
                time.sleep(pause)
                pause = min(2 * pause, LONGEST_PAUSE)
            else:
                self._in_queue = True
                return

    def _leave_queue(self) -> None:
        if self._in_queue and self._queue_fd is not None:
            self._in_queue = False
            fcntl.flock(self._queue_fd, fcntl.LOCK_UN)

    def _start_transaction_under_autocommit(self) -> None:
        self._take_turn()
        try:
            super()._start_transaction_under_autocommit()  # type: ignore[misc]
        except BaseException:
            self._leave_queue()
            raise

    def _commit(self) -> Any:
        try:
            return super()._commit()  # type: ignore[misc]
        finally:
            self._leave_queue()

    def _rollback(self) -> Any:
        try:
            return super()._rollback()  # type: ignore[misc]
        finally:
            self._leave_queue()

    def _close(self) -> Any:
        try:
            return super()._close()  # type: ignore[misc]
        finally:
            self._close_queue_file()
