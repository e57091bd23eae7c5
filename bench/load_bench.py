"""Closed-loop load: the service as `make run` configures it beside a synchronous baseline.

    .venv/bin/python bench/load_bench.py [--levels 1,16,64] [--seconds 8] [--warm-up 2]

One run starts, on loopback only:
- the baseline, bench/sync_app.py under gunicorn (one sync process per core): one POST decodes,
  preprocesses and predicts in the web process, with no queue and no database;
- the service, the Procfile's `web` and `worker` as `make run` starts them (process counts sized
  to this machine unless the environment sets them), on a private Valkey and a fresh SQLite
  (BENCH_DATABASE_URL for PostgreSQL).

At each concurrency c, c clients each send one drawing, wait for its answer, and send the next
(closed loop), cycling through 64 distinct 28x28 PNGs of MNIST test digits (synthetic digits
when MNIST is not there). A service client does what the page does: POST ?wait=10 and, if that
answers 202, GET ?wait=10 until the answer is there. Every drawing must be answered.

Prints, per level: drawings/s, p50/p95/p99 latency, the service's throughput as a share of the
baseline's, and CPU milliseconds per drawing by process role (psutil: web, worker, broker; the
baseline's web; the load client itself), plus the load average, as the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from bench.stack import PROJECT_ROOT, free_port, running_stack  # noqa: E402
from digitsite.embedded_valkey import PID_FILE  # noqa: E402
from digitsite.run import available_cores  # noqa: E402

DISTINCT = 64
MAX_WAIT = 10


def digit_pngs(n: int = DISTINCT) -> list[bytes]:
    """n distinct 28x28 PNGs: MNIST test digits, or drawn with a font when MNIST is missing."""
    from PIL import Image, ImageDraw

    try:
        from ml.data import load_split

        images = list(load_split("test").images[:n])
    except (OSError, ValueError):
        images = []
        for i in range(n):
            image = Image.new("L", (28, 28), 0)
            ImageDraw.Draw(image).text((9 + i % 4, 6 + i // 16), str(i % 10), fill=255)
            images.append(image)
    pngs = []
    for image in images:
        buffer = io.BytesIO()
        (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(buffer, "PNG")
        pngs.append(buffer.getvalue())
    return pngs


# --- The load client: asyncio, raw HTTP/1.1 on kept-alive connections, so it costs little CPU ---


@dataclass
class Target:
    name: str
    url: str  # base URL
    path: str  # where drawings are POSTed
    processes: dict[str, list[psutil.Process]]  # role -> process trees' roots


class Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, dict]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        status_line, headers = await self._head()
        length = int(headers.get("content-length", "-1"))
        if length < 0:
            raise RuntimeError(f"{method} {path}: no Content-Length in the answer")
        payload = await self.reader.readexactly(length)
        if headers.get("connection", "").lower() == "close":
            self.close()
        return int(status_line.split()[1]), json.loads(payload)

    async def _head(self) -> tuple[str, dict[str, str]]:
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                key, value = line.split(":", 1)
                headers[key.strip().lower()] = value.strip()
        return lines[0], headers

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def one_drawing(connection: Connection, target: Target, body: bytes) -> None:
    status, answer = await connection.request("POST", f"{target.path}?wait={MAX_WAIT}", body)
    while status in (200, 202) and answer.get("status") not in ("done", "failed"):
        path = urlsplit(answer["url"]).path
        status, answer = await connection.request("GET", f"{path}?wait={MAX_WAIT}")
    if status != 200 or answer.get("status") != "done":
        raise RuntimeError(f"{target.name}: drawing not answered: HTTP {status} {answer}")


async def closed_loop(
    target: Target, bodies: list[bytes], clients: int, seconds: float, warm_up: float
) -> list[float]:
    """Latencies (ms) of the drawings started after the warm-up and finished before the end."""
    parts = urlsplit(target.url)
    started_at = time.perf_counter()
    measure_from, stop_at = started_at + warm_up, started_at + warm_up + seconds
    latencies: list[float] = []

    async def client(k: int) -> None:
        connection = Connection(parts.hostname, parts.port)
        i = k
        try:
            while (now := time.perf_counter()) < stop_at:
                await one_drawing(connection, target, bodies[i % len(bodies)])
                done = time.perf_counter()
                if now >= measure_from and done <= stop_at:
                    latencies.append((done - now) * 1000)
                i += clients
        finally:
            connection.close()

    await asyncio.gather(*(client(k) for k in range(clients)))
    return latencies


# --- CPU by role -----------------------------------------------------------------------------


def cpu_seconds(roots: list[psutil.Process]) -> float:
    """User + system CPU of the processes and their children; this process's own alone (it is
    the parent of everything the bench started)."""
    total = 0.0
    for root in roots:
        with contextlib.suppress(psutil.Error):
            tree = [root] if root.pid == os.getpid() else [root, *root.children(recursive=True)]
            for process in tree:
                with contextlib.suppress(psutil.Error):
                    times = process.cpu_times()
                    total += times.user + times.system
    return total


@dataclass
class Result:
    target: str
    clients: int
    seconds: float
    latencies: list[float]
    cpu_ms: dict[str, float]  # role -> CPU ms per drawing

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_level(
    target: Target, bodies: list[bytes], clients: int, seconds: float, warm_up: float
) -> Result:
    roles = {**target.processes, "client": [psutil.Process()]}
    # CPU is read around the whole run, warm-up included, and divided by every drawing answered.
    before = {role: cpu_seconds(roots) for role, roots in roles.items()}
    wall = time.perf_counter()
    latencies = asyncio.run(closed_loop(target, bodies, clients, seconds, warm_up))
    wall = time.perf_counter() - wall
    after = {role: cpu_seconds(roots) for role, roots in roles.items()}
    # Drawings over the whole run: the measured ones scaled by the share of time they cover.
    drawings_whole_run = max(1.0, len(latencies) * wall / seconds)
    cpu_ms = {role: (after[role] - before[role]) * 1000 / drawings_whole_run for role in roles}
    return Result(target.name, clients, seconds, latencies, cpu_ms)


# --- The two systems -------------------------------------------------------------------------


@contextlib.contextmanager
def baseline(processes: int) -> Iterator[Target]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="digits-baseline-") as tmp:
        log = (Path(tmp) / "baseline.log").open("wb")
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "bench.sync_app:app", "--bind",
             f"127.0.0.1:{port}", "--workers", str(processes), "--backlog", "2048"],
            cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    with socket_to(port):
                        break
                except OSError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise RuntimeError("the baseline did not start") from None
                    time.sleep(0.2)
            time.sleep(2)  # every worker imports torch and loads the weights
            yield Target(
                "baseline", f"http://127.0.0.1:{port}/", "/", {"web": [psutil.Process(server.pid)]}
            )
        finally:
            server.terminate()
            server.wait(timeout=20)


def socket_to(port: int) -> object:
    import socket

    return socket.create_connection(("127.0.0.1", port), timeout=1)


@contextlib.contextmanager
def service() -> Iterator[Target]:
    with running_stack(procfile=("web", "worker")) as stack:
        from bench.stack import round_trip

        for png in digit_pngs(8):  # the first answers pay for connections and the model's start
            round_trip(stack.url, png)
        # valkey-server rewrites its command line; its pid file says which process it is.
        pid_file = stack.folder / "valkey" / PID_FILE
        valkey = [psutil.Process(int(pid_file.read_text()))] if pid_file.exists() else []
        yield Target(
            "service",
            stack.url,
            "/api/v1/submissions/",
            {
                "web": [psutil.Process(stack.processes["web"].pid)],
                "worker": [psutil.Process(stack.processes["worker"].pid)],
                "broker": valkey,
            },
        )


def describe(result: Result, base: Result | None) -> str:
    ratio = f"  {result.rate / base.rate:5.2f}x baseline" if base else ""
    cpu = ", ".join(f"{role} {ms:.1f}" for role, ms in result.cpu_ms.items())
    return (
        f"  {result.target:8} c={result.clients:<3} {result.rate:7.0f}/s  "
        f"p50 {statistics.median(result.latencies):6.1f} ms  p95 {result.percentile(0.95):6.1f}  "
        f"p99 {result.percentile(0.99):6.1f}{ratio}   CPU ms/drawing: {cpu}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,16,64", help="client counts, comma-separated")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured per level and system")
    parser.add_argument("--warm-up", type=float, default=2.0, help="unmeasured, before each level")
    args = parser.parse_args()
    levels = [int(level) for level in args.levels.split(",")]
    cores = available_cores()
    pngs = digit_pngs()
    bodies = [
        json.dumps({"image": "data:image/png;base64," + base64.b64encode(png).decode()}).encode()
        for png in pngs
    ]
    print(
        f"{cores} cores, load average {os.getloadavg()[0]:.2f}; {len(pngs)} distinct 28x28 PNGs; "
        f"{args.seconds:g} s per level after {args.warm_up:g} s of warm-up",
        flush=True,
    )
    with baseline(cores) as base_target, service() as service_target:
        for clients in levels:
            base = run_level(base_target, bodies, clients, args.seconds, args.warm_up)
            print(describe(base, None), flush=True)
            ours = run_level(service_target, bodies, clients, args.seconds, args.warm_up)
            print(describe(ours, base), flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
