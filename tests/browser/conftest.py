"""Debian's Chromium driven by Playwright against pytest-django's live server, with a real Celery
worker (tests/conftest.py's `live_worker`) answering the drawings.

Playwright's own browser downloads are never used: /usr/bin/chromium comes from apt. Without it
the tests skip on a laptop and fail in CI (`require`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pytest
from django.core.cache import cache
from django.db import connections

from tests.conftest import PROJECT_ROOT, require

T = TypeVar("T")
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = PROJECT_ROOT / "var" / "screenshots"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
# The page waits up to 20 s for an answer; a worker on a busy two-core machine can be slow, and
# Playwright's assertions must not give up before the page does.
ANSWER_TIMEOUT_MS = 30_000


@pytest.fixture(autouse=True)
def page_settings(settings) -> None:
    # Plain static storage: the hashed-name manifest exists only after collectstatic.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    # Throttle counts live in the local-memory cache and every request here comes from 127.0.0.1:
    # drawings sent by earlier tests in the same minute must not get this test's refused.
    cache.clear()


@pytest.fixture
def browser() -> Iterator:
    """A fresh Chromium per test.

    Per test because Playwright's sync API keeps an asyncio loop running in this thread while it
    is started, and Django refuses ORM calls from such a thread: pytest-django's flush after the
    test must find it stopped. Reads in between go through `in_db`.
    """
    require(CHROMIUM.exists(), f"no {CHROMIUM}: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield chromium
        chromium.close()


def in_db(query: Callable[[], T]) -> T:
    """Run an ORM query while a browser is open: in a short-lived thread, which has no event loop
    and whose database connection is closed afterwards (a connection left open would keep
    pytest-django from dropping the test database at the end)."""

    def run() -> T:
        try:
            return query()
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


@pytest.fixture
def open_page(browser, live_server) -> Iterator[Callable]:
    """open_page(viewport=DESKTOP, touch=False, query="") -> a Page on the drawing page, ready
    to draw. Any uncaught JavaScript error on a page fails the test."""
    errors: list[str] = []

    def open_(viewport: dict = DESKTOP, touch: bool = False, query: str = ""):
        context = browser.new_context(
            viewport=viewport,
            has_touch=touch,
            is_mobile=touch,
            device_scale_factor=3 if touch else 1,
        )
        page = context.new_page()
        page.set_default_timeout(ANSWER_TIMEOUT_MS)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"{live_server.url}/{query}")
        page.wait_for_selector("body[data-ready=true]")
        return page

    yield open_
    assert not errors, f"JavaScript errors on the page: {errors}"
