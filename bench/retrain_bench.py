"""Time the default retrain (`manage.py retrain`, fine-tuning the shipped model on MNIST plus N
reviewed drawings) on a fresh SQLite database in a temporary folder, and with --seeds measure what
the fine-tune costs on MNIST test over several seeds.

    .venv/bin/python bench/retrain_bench.py [--drawings 1000] [--style page|thick-pen|askew]
                                            [--seeds N] [-- retrain options]

The drawings are MNIST training digits re-drawn on 280x280 canvases in the three page styles;
`thick-pen` draws them with a pen ~6 px wider than MNIST's, `askew` turns them 40 degrees (a
tablet lying askew), two styles the shipped model often gets wrong. They are preprocessed by the
serving code, each stored as an answered, labelled, reviewed submission. Prints the command's
output and its wall-clock time; with --seeds N, runs the dry-run retrain with seeds 1..N on the
same drawings and prints each candidate's MNIST test change and holdout gain, then their mean and
spread (sample standard deviation, min, max).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ASKEW_DEGREES = 40


def seed_drawings(count: int, style: str) -> None:
    """Store `count` reviewed drawings in the database that DATABASE_URL names."""
    import django

    django.setup()
    from django.core.management import call_command
    from django.utils import timezone
    from PIL import Image

    from ml.data import load_split
    from ml.drawn import DRAWN_STYLES, render_drawn
    from ml.preprocess import preprocess_bytes
    from recognizer.models import Submission

    call_command("migrate", verbosity=0)
    train = load_split("train")
    images = train.images[:count]
    if style == "thick-pen":
        import torch
        import torch.nn.functional as F

        pixels = torch.from_numpy(images.copy()).float().unsqueeze(1)
        images = F.max_pool2d(pixels, 7, stride=1, padding=3).squeeze(1).to(torch.uint8).numpy()
    if style == "askew":
        turned = Image.Resampling.BICUBIC
        images = [
            np.asarray(Image.fromarray(image).rotate(ASKEW_DEGREES, turned, expand=True))
            for image in images
        ]
    styles = ["large"] if style == "thick-pen" else list(DRAWN_STYLES)
    now = timezone.now()
    rows = []
    for i in range(count):
        png = render_drawn(images[i], styles[i % len(styles)])
        label = int(train.labels[i])
        rows.append(
            Submission(
                image=png,
                content_type="image/png",
                model_input=preprocess_bytes(png).image.tobytes(),
                status=Submission.Status.DONE,
                prediction=label,
                confidence=0.9,
                correct_label=label,
                labelled_at=now,
                reviewed_label=label,
                reviewed_at=now,
            )
        )
    Submission.objects.bulk_create(rows, batch_size=500)


def candidates() -> None:
    """Print one JSON line per candidate: seed, MNIST test change, holdout gain, verdict."""
    import django

    django.setup()
    from recognizer.models import ModelVersion

    for version in ModelVersion.objects.exclude(name="v1").order_by("created_at"):
        gate = version.metrics["gate"]
        change = {}
        for key, t in gate["paired"].items():
            n = t["a"] + t["b"] + t["c"] + t["d"]
            change[key] = 100 * (t["c"] - t["b"]) / n if n else 0.0
        line = {"seed": version.trained_on["seed"], "promote": gate["promote"], **change}
        print(json.dumps(line))


def spread(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return (
        f"mean {statistics.mean(values):+.3f}  sd {sd:.3f}  "
        f"min {min(values):+.2f}  max {max(values):+.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drawings", type=int, default=1000)
    parser.add_argument("--style", choices=["page", "thick-pen", "askew"], default="page")
    parser.add_argument("--thick-pen", action="store_true", help="the same as --style thick-pen")
    parser.add_argument("--seeds", type=int, default=0, help="retrain with seeds 1..N")
    parser.add_argument("retrain_args", nargs="*", help="after --: options for manage.py retrain")
    args = parser.parse_args()
    style = "thick-pen" if args.thick_pen else args.style

    with tempfile.TemporaryDirectory(prefix="retrain-bench-") as folder:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "digitsite.settings",
            "VAR_DIR": folder,
            "DATABASE_URL": f"sqlite:///{folder}/bench.sqlite3",
        }
        seed = [sys.executable, __file__, "--seed-only", str(args.drawings), style]
        subprocess.run(seed, env=env, cwd=PROJECT_ROOT, check=True)
        command = [sys.executable, "manage.py", "retrain", "--dry-run", *args.retrain_args]
        runs = [["--seed", str(s)] for s in range(1, args.seeds + 1)] or [[]]
        for extra in runs:
            print("$", " ".join(command[1:] + extra), f"  ({args.drawings} {style} drawings)")
            started = time.monotonic()
            subprocess.run(command + extra, env=env, cwd=PROJECT_ROOT, check=True)
            print(f"wall-clock: {time.monotonic() - started:.0f} s", flush=True)
        if args.seeds:
            report = [sys.executable, __file__, "--candidates"]
            out = subprocess.run(report, env=env, cwd=PROJECT_ROOT, check=True, capture_output=True)
            rows = [json.loads(line) for line in out.stdout.decode().splitlines()]
            print(f"\n{len(rows)} seeds, {args.drawings} {style} drawings:")
            for row in rows:
                verdict = "passes" if row["promote"] else "rejected"
                print(
                    f"  seed {row['seed']}: MNIST test {row['mnist']:+.2f}  "
                    f"drawn holdout {row['holdout']:+.2f}  gate {verdict}"
                )
            print("MNIST test change (points):   ", spread([r["mnist"] for r in rows]))
            print("drawn holdout gain (points):  ", spread([r["holdout"] for r in rows]))
            print(f"passed the gate: {sum(r['promote'] for r in rows)}/{len(rows)}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--seed-only":
        sys.path.insert(0, str(PROJECT_ROOT))
        seed_drawings(int(sys.argv[2]), style=sys.argv[3])
    elif sys.argv[1:] == ["--candidates"]:
        sys.path.insert(0, str(PROJECT_ROOT))
        candidates()
    else:
        main()
