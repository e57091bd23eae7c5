"""Pen up to answer on screen, as a person drawing on the page sees it.

    .venv/bin/python bench/page_latency.py [--n 50] [--url http://127.0.0.1:8000/]

Without --url it starts its own stack as `make run` configures it (bench/stack.py: Valkey, SQLite,
the Procfile's web and interactive worker).
Debian's Chromium (/usr/bin/chromium, driven by Playwright) opens the drawing page and draws n
digits with the mouse (tests/browser/pen.py), each digit in turn, at different sizes and places.
For each, the page's own User Timing measure "recognizer:pen-up-to-answer" is read: from the last
pen-up to the answer on screen. The page sends at every pen-up (a later stroke supersedes the
earlier submission), in one POST ?wait= request; the time from that POST leaving the browser to
the answer on screen is printed as well. Prints p50/p90/mean/max in ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stack import running_stack  # noqa: E402
from tests.browser import pen  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
PLACEMENTS = [pen.CENTRED, pen.MEDIUM_OFF_CENTRE, pen.SMALL_TOP_LEFT, pen.SMALL_BOTTOM_RIGHT]
WARM_UP = 3  # the first answers pay for connections and the worker's first forward pass

# The page's User Timing entries for the drawing just answered: the measure, and the POST's
# start from Resource Timing (the last request to .../submissions/, with its ?wait=).
READ_TIMINGS = r"""() => {
  const last = (entries) => entries[entries.length - 1];
  const measure = last(performance.getEntriesByName("recognizer:pen-up-to-answer", "measure"));
  const shown = last(performance.getEntriesByName("recognizer:answer-shown", "mark"));
  const post = last(performance.getEntriesByType("resource")
    .filter((entry) => /\/api\/v1\/submissions\/(\?.*)?$/.test(entry.name)));
  const prediction = document.querySelector('[data-testid="prediction"]');
  return {
    penUpToAnswer: measure ? measure.duration : null,
    sentToAnswer: shown && post ? shown.startTime - post.startTime : null,
    state: prediction.dataset.state,
    digit: prediction.dataset.digit ?? null,
  };
}"""


def draw_and_time(page, n: int, first: int = 0) -> list[dict]:
    """Draw n digits one after another (Escape clears the pad between them) and read each one's
    timings once its answer is on screen."""
    results = []
    for i in range(first, first + n):
        digit, placement = i % 10, PLACEMENTS[(i // 10) % len(PLACEMENTS)]
        page.keyboard.press("Escape")
        page.evaluate("performance.clearMarks(); performance.clearMeasures()")
        pen.draw_with_mouse(page, digit, placement)
        page.wait_for_function(
            "['done', 'failed'].includes("
            "document.querySelector('[data-testid=prediction]').dataset.state)",
            timeout=30_000,
        )
        timings = page.evaluate(READ_TIMINGS)
        if timings["state"] != "done" or timings["penUpToAnswer"] is None:
            raise RuntimeError(f"drawing {i} (a {digit}) was not answered: {timings}")
        results.append({**timings, "drawn": digit})
    return results


def summary(name: str, values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[int(0.9 * (len(ordered) - 1))]
    return (
        f"{name}: p50 {statistics.median(ordered):.1f} ms, p90 {p90:.1f} ms, "
        f"mean {statistics.fmean(ordered):.1f} ms, max {ordered[-1]:.1f} ms"
    )


def report(results: list[dict]) -> str:
    right = sum(r["digit"] == str(r["drawn"]) for r in results)
    return "\n".join(
        [
            f"{len(results)} mouse-drawn digits on the drawing page (Chromium, headless):",
            summary("  pen up -> answer shown", [r["penUpToAnswer"] for r in results]),
            summary("  POST sent -> answer shown", [r["sentToAnswer"] for r in results]),
            f"  recognised as the digit drawn: {right}/{len(results)}",
        ]
    )


def run(base_url: str, n: int) -> str:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(base_url)
        page.wait_for_selector("body[data-ready=true]")
        draw_and_time(page, WARM_UP, first=n)
        text = report(draw_and_time(page, n))
        browser.close()
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--url", help="a running service; default: start one")
    args = parser.parse_args()
    if not CHROMIUM.exists():
        sys.exit(f"no {CHROMIUM}: apt-get install -y chromium")
    if args.url:
        print(run(args.url.rstrip("/") + "/", args.n))
        return
    with running_stack(procfile=("web", "worker")) as stack:
        print(run(stack.url, args.n))


if __name__ == "__main__":
    main()
