"""Write the reviewed drawings as .npz (images N x 28 x 28 uint8, labels, ids) for ml/train.py.

python manage.py export_drawings drawings.npz [--include-holdout]
python -m ml.train --extra drawings.npz --init ml/digit_model.pth --epochs 3
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from recognizer import drawings


class Command(BaseCommand):
    help = __doc__.splitlines()[0]

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path)
        parser.add_argument(
            "--include-holdout",
            action="store_true",
            help="also the holdout drawings (a model trained on them cannot be judged on them)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        count = drawings.export_drawings(
            path=options["path"], include_holdout=options["include_holdout"]
        )
        self.stdout.write(f"wrote {count} drawings to {options['path']}")
