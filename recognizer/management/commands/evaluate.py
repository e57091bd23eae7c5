"""Score the active (or a named) model version on the MNIST test split and the drawn holdout.

python manage.py evaluate [VERSION] [--json]
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from recognizer import model_registry, retraining


class Command(BaseCommand):
    help = __doc__.splitlines()[0]

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("version", nargs="?", help="a version name (default: the active one)")
        parser.add_argument("--json", action="store_true", help="print the metrics as JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            version = (
                model_registry.get_version(name=options["version"])
                if options["version"]
                else model_registry.active_version()
            )
        except model_registry.RegistryError as exc:
            raise CommandError(str(exc)) from exc
        metrics = retraining.evaluate_version(version=version)
        live = model_registry.live_accuracy(version=version)
        if options["json"]:
            live_counts = {"labelled": live.labelled, "correct": live.correct}
            self.stdout.write(json.dumps({"version": version.name, **metrics, "live": live_counts}))
            return
        self.stdout.write(f"{version.name} ({version.status}), {version.weights_path}")
        for key, title in (("mnist", "MNIST test"), ("holdout", "drawn holdout")):
            summary = metrics[key]
            if summary["n"]:
                score = f"{retraining.points(summary):.2f}% ({summary['correct']}/{summary['n']})"
            else:
                score = "no drawings"
            self.stdout.write(f"  {title:<26} {score}")
        if live.labelled and live.accuracy is not None:
            self.stdout.write(
                f"  {'live, labelled submissions':<26} {100 * live.accuracy:.2f}% "
                f"({live.correct}/{live.labelled})"
            )
