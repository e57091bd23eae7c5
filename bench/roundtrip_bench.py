"""Round trip of one drawing through the whole service: POST to `done`, as a client sees it.

    .venv/bin/python bench/roundtrip_bench.py [--n 100] [--url http://127.0.0.1:8000/]

Without --url it starts its own stack (bench/stack.py: Valkey, SQLite, gunicorn, one worker).
The client posts a 280x280 PNG of a real MNIST digit, then GETs the result with ?wait= (the API
holds the request until the answer is there). Prints p50/p90/max in milliseconds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stack import round_trip, running_stack  # noqa: E402
from ml.data import load_split  # noqa: E402
from ml.drawn import render_drawn  # noqa: E402


def round_trips(base_url: str, n: int) -> list[float]:
    test = load_split("test")
    return [round_trip(base_url, render_drawn(test.images[i], "large")) for i in range(n)]


def report(timings: list[float]) -> str:
    ordered = sorted(timings)
    p90 = ordered[int(0.9 * (len(ordered) - 1))]
    return (
        f"round trip POST -> done over {len(ordered)} drawings: "
        f"p50 {statistics.median(ordered):.1f} ms, p90 {p90:.1f} ms, max {ordered[-1]:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--url", help="a running service; default: start one")
    args = parser.parse_args()
    if args.url:
        base = args.url.rstrip("/") + "/"
        round_trips(base, 5)  # warm-up
        print(report(round_trips(base, args.n)))
        return
    with running_stack() as stack:
        round_trips(stack.url, 5)
        print(report(round_trips(stack.url, args.n)))


if __name__ == "__main__":
    main()
