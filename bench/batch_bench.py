"""Batch throughput against in-process ceilings, and what a running job does to people drawing.

    .venv/bin/python bench/batch_bench.py                      # 10,000 images, ml/digit_model.pth
    .venv/bin/python bench/batch_bench.py --n 2000 --formats npy,zip

One run, one process tree:
1. Ceilings, in this machine's processes, with no service and no database:
   - forward: the model alone on 28x28 inputs, in chunks of BATCH_CHUNK_SIZE (one process,
     --threads torch threads; the GPU when MODEL_DEVICE or the machine has one);
   - decode: the n images (MNIST test digits re-drawn as 280x280 PNG canvases, the three ml.drawn
     styles in turn) through ml.preprocess.preprocess_many, spread over every core;
   - decode + forward: 1 / (1/decode + 1/forward), what a pipeline doing both could reach.
2. A stack as `make run` configures it (the Procfile's web, worker and batchworker, process
   counts sized to this machine; private Valkey, fresh SQLite or BENCH_DATABASE_URL).
3. Interactive round trip p50 while the service is idle.
4. The jobs, each polled until done while a second client keeps drawing interactively:
   `npy`, the n MNIST test digits as one .npy array (compared with the forward ceiling), and
   `zip`, the n PNG canvases as one ZIP (compared with the decode + forward ceiling).

Prints each job in images per second, end to end (POST sent -> client sees `done`, upload and
storage included) and from the job's own timestamps (stored -> last item answered), its ratio to
its ceiling (targets: npy >= 0.5 of forward, zip >= 0.5 of decode + forward), and the interactive
p50 idle and during the jobs. Image rendering is not timed.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
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
from digitsite.run import available_cores  # noqa: E402
from ml.data import load_split  # noqa: E402
from ml.drawn import DRAWN_STYLES, render_drawn  # noqa: E402
from ml.predictor import Predictor  # noqa: E402
from ml.preprocess import preprocess_many  # noqa: E402

DEFAULT_WEIGHTS = PROJECT_ROOT / "ml" / "digit_model.pth"


def drawn_pngs(n: int) -> list[bytes]:
    images = load_split("test").images
    styles = sorted(DRAWN_STYLES)
    return [render_drawn(images[i % len(images)], styles[i % len(styles)]) for i in range(n)]


def forward_rate(images: np.ndarray, weights: Path, chunk: int, device: str) -> float:
    """Images per second of the model alone on 28x28 inputs, chunk by chunk as the worker."""
    predictor = Predictor(weights, device=device)
    predictor.predict_images(images[:chunk])  # warm-up
    started = time.perf_counter()
    for start in range(0, len(images), chunk):
        predictor.predict_images(images[start : start + chunk])
    return len(images) / (time.perf_counter() - started)


def _decode_part(pngs: list[bytes]) -> int:
    torch.set_num_threads(1)
    return len(preprocess_many(pngs).ok)


def decode_rate(pngs: list[bytes], processes: int, chunk: int) -> float:
    """Images per second of decoding and preprocessing on `processes` processes."""
    parts = [pngs[start : start + chunk] for start in range(0, len(pngs), chunk)]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        pool.map(_decode_part, [parts[0][:8]] * processes)  # warm-up: imports in every process
        started = time.perf_counter()
        pool.map(_decode_part, parts, chunksize=1)
        return len(pngs) / (time.perf_counter() - started)


def as_npy(images: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, images, allow_pickle=False)
    return buffer.getvalue()


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
    parser.add_argument("--n", type=int, default=10_000, help="images in each job")
    parser.add_argument("--formats", default="npy,zip", help="jobs to run: npy, zip or both")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--chunk", type=int, default=256, help="BATCH_CHUNK_SIZE")
    parser.add_argument("--device", default="", help="cpu or cuda (default: cuda when present)")
    parser.add_argument("--interactive", type=int, default=30, help="idle round trips")
    parser.add_argument(
        "--think", type=float, default=0.2, help="seconds between drawings during the jobs"
    )
    args = parser.parse_args(argv)
    if not args.weights.exists():
        parser.error(f"{args.weights} not found: train it (python -m ml.train) or pass --weights")
    torch.set_num_threads(args.threads)
    formats = [f for f in args.formats.split(",") if f]
    cores = available_cores()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")

    print(f"rendering {args.n} drawn digits ...", flush=True)
    digits = load_split("test").images[: args.n]
    digits = np.concatenate([digits] * (args.n // len(digits) + 1))[: args.n]
    pngs = drawn_pngs(args.n)
    bodies = {"npy": ("digits.npy", as_npy(digits)), "zip": ("digits.zip", as_zip(pngs))}
    print(f"ZIP of {args.n} PNG canvases: {len(bodies['zip'][1]) / 1e6:.1f} MB", flush=True)

    forward = forward_rate(digits, args.weights, args.chunk, device)
    print(f"ceiling, forward pass ({device}, chunk {args.chunk}): {forward:.0f} img/s", flush=True)
    decode = decode_rate(pngs, cores, args.chunk) if "zip" in formats else float("nan")
    both = 1 / (1 / decode + 1 / forward)
    print(f"ceiling, decode on {cores} processes: {decode:.0f} img/s", flush=True)
    print(f"ceiling, decode + forward: {both:.0f} img/s", flush=True)
    ceilings = {"npy": ("forward", forward), "zip": ("decode + forward", both)}

    extra_env = {
        "MODEL_WEIGHTS": str(args.weights.resolve()),
        "MODEL_DEVICE": args.device,
        "BATCH_CHUNK_SIZE": str(args.chunk),
        "BATCH_MAX_ITEMS": str(max(args.n, 10_000)),
        "BATCH_MAX_BYTES": str(max(len(bodies["zip"][1]) * 2, 100 * 1024 * 1024)),
        "WORKER_TORCH_THREADS": str(args.threads),
    }
    procfile = ("web", "worker", "batchworker")
    results = {}
    with running_stack(extra_env=extra_env, procfile=procfile) as stack:
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

        drawer = threading.Thread(target=keep_drawing, daemon=True)
        drawer.start()
        for name in formats:
            filename, data = bodies[name]
            body, content_type = multipart("file", filename, data)
            started = time.perf_counter()
            job = api.json(
                "POST", api.base + "api/v1/batches/", body=body, content_type=content_type
            )
            stored = time.perf_counter()
            job = api.wait(job, poll=0.25, progress=sys.stderr.isatty())
            finished = time.perf_counter()
            if job["status"] != "done" or job["done"] + job["failed"] != args.n:
                raise SystemExit(f"the {name} job did not finish cleanly: {job}")
            server_seconds = (
                parse_time(job["finished_at"]) - parse_time(job["created_at"])
            ).total_seconds()
            results[name] = (job, started, stored, finished, server_seconds)
            print(f"{name} job done in {finished - started:.1f} s", flush=True)
        job_running.clear()
        drawer.join()

    print()
    print(
        f"images: {args.n} per job, chunk {args.chunk}, torch threads {args.threads}, {device}, "
        f"{cores} cores, load {os.getloadavg()[0]:.2f}"
    )
    print(f"ceiling, forward pass:       {forward:7.0f} img/s")
    print(f"ceiling, decode ({cores} procs):    {decode:7.0f} img/s")
    print(f"ceiling, decode + forward:   {both:7.0f} img/s")
    for name, (job, started, stored, finished, server_seconds) in results.items():
        label, ceiling = ceilings[name]
        end_to_end = args.n / (finished - started)
        scoring = args.n / server_seconds
        print(
            f"{name} job end to end:     {end_to_end:7.0f} img/s   {end_to_end / ceiling:.2f}x "
            f"{label}   (POST {stored - started:.1f} s, then {finished - stored:.1f} s to done)"
        )
        print(
            f"{name} job stored -> done: {scoring:7.0f} img/s   {scoring / ceiling:.2f}x {label}"
            f"   ({job['done']} done, {job['failed']} failed)"
        )
    print(
        f"interactive p50 idle:       {p50(idle):7.1f} ms  ({len(idle)} drawings)\n"
        f"interactive p50 during jobs: {p50(during):6.1f} ms  ({len(during)} drawings)"
        f"   ratio {p50(during) / p50(idle):.2f}"
    )


if __name__ == "__main__":
    main()
