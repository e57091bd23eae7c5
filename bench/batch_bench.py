"""Batch throughput against the in-process ceiling, and what a running job does to people drawing.

    .venv/bin/python bench/batch_bench.py                      # 10,000 images, ml/digit_model.pth
    .venv/bin/python bench/batch_bench.py --n 2000 --weights /tmp/m.pth --threads 1

One run, one process tree:
1. Ceiling: the same n images (MNIST test digits re-drawn as 280x280 PNG canvases, the three
   ml.drawn styles in turn) preprocessed with ml.preprocess.preprocess_bytes and predicted in chunks
   of BATCH_CHUNK_SIZE, in this process, with --threads torch threads: no service, no database.
2. A stack (bench/stack.py: private Valkey, fresh SQLite or BENCH_DATABASE_URL, gunicorn, one
   interactive and one batch worker, each with --threads torch threads; the batch worker runs at
   a lower CPU priority, `nice`, as a deployment should run it).
3. Interactive round trip (POST a drawing, GET ?wait= until done) p50 while the service is idle.
4. The job: the n images as one ZIP through POST /api/v1/batches/ (what bench/batch_client.py
   sends for a folder), polled until done, while a second client keeps drawing interactively.

Prints the ceiling and the job in images per second and their ratio (target >= 0.8), measured end
to end (POST sent -> client sees `done`, upload and storage included) and from the job's own
timestamps (stored -> last item answered), and the interactive p50 idle and during the job (target:
within 2x). Image rendering is not timed.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import threading
import time
import zipfile
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.batch_client import Api, multipart  # noqa: E402
from bench.stack import PROJECT_ROOT, round_trip, running_stack  # noqa: E402
from ml.data import load_split  # noqa: E402
from ml.drawn import DRAWN_STYLES, render_drawn  # noqa: E402
from ml.predictor import Predictor  # noqa: E402
from ml.preprocess import preprocess_bytes  # noqa: E402

DEFAULT_WEIGHTS = PROJECT_ROOT / "ml" / "digit_model.pth"


def drawn_pngs(n: int) -> list[bytes]:
    images = load_split("test").images
    styles = sorted(DRAWN_STYLES)
    return [render_drawn(images[i % len(images)], styles[i % len(styles)]) for i in range(n)]


def ceiling(pngs: list[bytes], weights: Path, chunk: int) -> float:
    """Images per second of preprocess + predict in this process, chunk by chunk as the worker."""
    predictor = Predictor(weights, device="cpu")
    predictor.predict_images(np.zeros((chunk, 28, 28), np.uint8))  # warm-up
    started = time.perf_counter()
    for start in range(0, len(pngs), chunk):
        images = np.stack([preprocess_bytes(png).image for png in pngs[start : start + chunk]])
        predictor.predict_images(images)
    return len(pngs) / (time.perf_counter() - started)


def as_zip(pngs: list[bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for index, png in enumerate(pngs):
            archive.writestr(f"digits/{index:05d}.png", png)
    return buffer.getvalue()


def api_token(env: dict[str, str]) -> str:
    script = (
        "from django.contrib.auth import get_user_model\n"
        "from rest_framework.authtoken.models import Token\n"
        "user, _ = get_user_model().objects.get_or_create(username='bench')\n"
        "print(Token.objects.get_or_create(user=user)[0].key)\n"
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script],
        cwd=PROJECT_ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout.strip().splitlines()[-1]


def p50(timings: list[float]) -> float:
    return statistics.median(timings) if timings else float("nan")


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="images in the job")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--chunk", type=int, default=256, help="BATCH_CHUNK_SIZE")
    parser.add_argument(
        "--nice", type=int, default=10, help="niceness of the batch worker (0: same as the rest)"
    )
    parser.add_argument("--interactive", type=int, default=30, help="idle round trips")
    parser.add_argument(
        "--think", type=float, default=0.2, help="seconds between drawings during the job"
    )
    args = parser.parse_args(argv)
    if not args.weights.exists():
        parser.error(f"{args.weights} not found: train it (python -m ml.train) or pass --weights")
    torch.set_num_threads(args.threads)

    print(f"rendering {args.n} drawn digits ...", flush=True)
    pngs = drawn_pngs(args.n)
    archive = as_zip(pngs)
    print(f"ZIP of {args.n} PNG canvases: {len(archive) / 1e6:.1f} MB", flush=True)

    ceiling_rate = ceiling(pngs, args.weights, args.chunk)
    print(f"ceiling (in-process preprocess + predict): {ceiling_rate:.0f} img/s", flush=True)

    threads = str(args.threads)
    extra_env = {
        "MODEL_WEIGHTS": str(args.weights.resolve()),
        "MODEL_DEVICE": "cpu",
        "BATCH_CHUNK_SIZE": str(args.chunk),
        "BATCH_MAX_ITEMS": str(max(args.n, 10_000)),
        "BATCH_MAX_BYTES": str(max(len(archive) * 2, 100 * 1024 * 1024)),
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
    }
    workers = {"interactive": "interactive", "batch": "batch"}
    with running_stack(workers=workers, extra_env=extra_env) as stack:
        # Celery's prefork pool lives in the worker's process group (the stack starts each in a
        # session of its own): renice them all, so drawings get the CPU first.
        batch_pid = stack.processes["worker-batch"].pid
        os.setpriority(os.PRIO_PGRP, os.getpgid(batch_pid), args.nice)

        drawings = pngs[:50]
        for png in drawings[:5]:  # warm-up: both processes load the model, connections open
            round_trip(stack.url, png)
        idle = []
        for i in range(args.interactive):  # paced as during the job, so only the job differs
            idle.append(round_trip(stack.url, drawings[i % 50]))
            time.sleep(args.think)
        print(f"interactive p50 idle: {p50(idle):.1f} ms", flush=True)

        api = Api(stack.url, api_token(stack.env))
        during: list[float] = []
        job_running = threading.Event()
        job_running.set()

        def keep_drawing() -> None:
            # One person drawing digit after digit, with a short pause between them.
            while job_running.is_set():
                during.append(round_trip(stack.url, drawings[len(during) % 50]))
                time.sleep(args.think)

        body, content_type = multipart("file", "digits.zip", archive)
        started = time.perf_counter()
        job = api.json("POST", api.base + "api/v1/batches/", body=body, content_type=content_type)
        stored = time.perf_counter()
        drawer = threading.Thread(target=keep_drawing, daemon=True)
        drawer.start()
        job = api.wait(job, poll=0.25, progress=sys.stderr.isatty())
        finished = time.perf_counter()
        job_running.clear()
        drawer.join()

    if job["status"] != "done" or job["done"] + job["failed"] != args.n:
        raise SystemExit(f"the job did not finish cleanly: {job}")
    end_to_end = args.n / (finished - started)
    server_seconds = (
        parse_time(job["finished_at"]) - parse_time(job["created_at"])
    ).total_seconds()
    scoring = args.n / server_seconds
    print()
    print(
        f"images: {args.n}, chunk {args.chunk}, torch threads {args.threads}, cpu, "
        f"batch worker nice {args.nice}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}"
    )
    print(f"ceiling, in-process:        {ceiling_rate:7.0f} img/s")
    print(
        f"job end to end:             {end_to_end:7.0f} img/s"
        f"   ratio {end_to_end / ceiling_rate:.2f}"
        f"   (POST {stored - started:.1f} s, then {finished - stored:.1f} s to done)"
    )
    print(
        f"job stored -> done:         {scoring:7.0f} img/s   ratio {scoring / ceiling_rate:.2f}"
        f"   ({job['done']} done, {job['failed']} failed)"
    )
    print(
        f"interactive p50 idle:       {p50(idle):7.1f} ms  ({len(idle)} drawings)\n"
        f"interactive p50 during job: {p50(during):7.1f} ms  ({len(during)} drawings)"
        f"   ratio {p50(during) / p50(idle):.2f}"
    )


if __name__ == "__main__":
    main()
