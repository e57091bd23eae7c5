"""Time the default retrain (`manage.py retrain`, fine-tuning the shipped model on MNIST plus N
reviewed drawings) on a fresh SQLite database in a temporary folder.

    .venv/bin/python bench/retrain_bench.py [--drawings 1000] [--thick-pen] [-- retrain options]

The drawings are MNIST training digits re-drawn on 280x280 canvases in the three page styles (or,
with --thick-pen, with a pen ~6 px wider than MNIST's, a style the shipped model often gets wrong)
and preprocessed by the serving code, each stored as an answered, labelled, reviewed submission.
Prints the command's output and its wall-clock time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def seed_drawings(count: int, thick_pen: bool) -> None:
    """Store `count` reviewed drawings in the database that DATABASE_URL names."""
    import django

    django.setup()
    from django.core.management import call_command
    from django.utils import timezone

    from ml.data import load_split
    from ml.drawn import DRAWN_STYLES, render_drawn
    from ml.preprocess import preprocess_bytes
    from recognizer.models import Submission

    call_command("migrate", verbosity=0)
    train = load_split("train")
    images = train.images[:count]
    if thick_pen:
        import torch
        import torch.nn.functional as F

        pixels = torch.from_numpy(images.copy()).float().unsqueeze(1)
        images = F.max_pool2d(pixels, 7, stride=1, padding=3).squeeze(1).to(torch.uint8).numpy()
    styles = ["large"] if thick_pen else list(DRAWN_STYLES)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drawings", type=int, default=1000)
    parser.add_argument("--thick-pen", action="store_true")
    parser.add_argument("retrain_args", nargs="*", help="after --: options for manage.py retrain")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="retrain-bench-") as folder:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "digitsite.settings",
            "VAR_DIR": folder,
            "DATABASE_URL": f"sqlite:///{folder}/bench.sqlite3",
        }
        seed = [sys.executable, __file__, "--seed-only", str(args.drawings), str(args.thick_pen)]
        subprocess.run(seed, env=env, cwd=PROJECT_ROOT, check=True)
        command = [sys.executable, "manage.py", "retrain", "--dry-run", *args.retrain_args]
        style = "thick-pen" if args.thick_pen else "page-style"
        print("$", " ".join(command[1:]), f"  ({args.drawings} {style} drawings)", flush=True)
        started = time.monotonic()
        subprocess.run(command, env=env, cwd=PROJECT_ROOT, check=True)
        print(f"wall-clock: {time.monotonic() - started:.0f} s", flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--seed-only":
        sys.path.insert(0, str(PROJECT_ROOT))
        seed_drawings(int(sys.argv[2]), thick_pen=sys.argv[3] == "True")
    else:
        main()
