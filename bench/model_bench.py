"""In-process throughput of the model path: PNG bytes -> preprocess -> predict, and predict alone.

    .venv/bin/python bench/model_bench.py                       # ml/digit_model.pth, 2,048 images
    .venv/bin/python bench/model_bench.py --weights /tmp/m.pth --n 512 --threads 1

The inputs are MNIST test digits re-drawn onto 280x280 PNG canvases (ml.drawn.render_drawn, the
three styles in turn), as the browser sends them. Rendering is not timed; decoding is. Each row
runs the same images in batches of 1, 64 and 256 through one `Predictor`, after one warm-up batch,
and reports images per second and milliseconds per image. Weights only need to load: the figures
do not depend on how well the model was trained.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from ml.data import load_split  # noqa: E402
from ml.drawn import DRAWN_STYLES, render_drawn  # noqa: E402
from ml.evaluate import DEFAULT_WEIGHTS  # noqa: E402
from ml.predictor import Predictor  # noqa: E402
from ml.preprocess import preprocess_bytes  # noqa: E402

BATCH_SIZES = (1, 64, 256)


def drawn_pngs(n: int) -> list[bytes]:
    """n 280x280 PNG canvases from the MNIST test split, cycling through the drawn styles."""
    images = load_split("test").images
    styles = sorted(DRAWN_STYLES)
    return [render_drawn(images[i % len(images)], styles[i % len(styles)]) for i in range(n)]


def timed(run_batch: Callable[[list], object], items: list, batch: int) -> float:
    """Seconds to push all items through `run_batch` in chunks of `batch`, after one warm-up."""
    run_batch(items[:batch])
    started = time.perf_counter()
    for start in range(0, len(items), batch):
        run_batch(items[start : start + batch])
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--n", type=int, default=2048, help="images per row")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", help="cpu or cuda (default: CUDA when available)")
    args = parser.parse_args(argv)
    if not args.weights.exists():
        parser.error(f"{args.weights} not found: train it (python -m ml.train) or pass --weights")
    if args.threads:
        torch.set_num_threads(args.threads)

    predictor = Predictor(args.weights, device=args.device)
    pngs = drawn_pngs(args.n)
    tensors = [preprocess_bytes(data).tensor for data in pngs]

    def preprocess_and_predict(chunk: list[bytes]) -> object:
        return predictor.predict(torch.stack([preprocess_bytes(data).tensor for data in chunk]))

    def predict_only(chunk: list[torch.Tensor]) -> object:
        return predictor.predict(torch.stack(chunk))

    print(
        f"device {predictor.device}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"weights {args.weights} ({predictor.sha256[:12]}), {args.n} images per row"
    )
    print(f"{'path':<26}{'batch':>6}{'img/s':>10}{'ms/img':>9}")
    for name, run_batch, items in (
        ("png->preprocess->predict", preprocess_and_predict, pngs),
        ("predict only", predict_only, tensors),
    ):
        for batch in BATCH_SIZES:
            seconds = timed(run_batch, items, batch)
            rate = len(items) / seconds
            print(f"{name:<26}{batch:>6}{rate:>10.0f}{1000 / rate:>9.3f}")


if __name__ == "__main__":
    main()
