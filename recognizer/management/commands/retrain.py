"""Fine-tune the active model on MNIST plus reviewed drawings, judge it, promote it if it passes.

python manage.py retrain [--epochs N] [--from-scratch] [--dry-run] [--seed N]
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from recognizer import model_registry, retraining


class Command(BaseCommand):
    help = __doc__.splitlines()[0]

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--epochs", type=int, help="default: RETRAIN_EPOCHS (fine-tune)")
        parser.add_argument(
            "--from-scratch", action="store_true", help="start from random weights, not the active"
        )
        parser.add_argument("--dry-run", action="store_true", help="never promote")
        parser.add_argument("--seed", type=int, default=1)
        parser.add_argument("--threads", type=int, help="torch threads (default RETRAIN_THREADS)")
        parser.add_argument(
            "--mnist-limit", type=int, help="train on the first N MNIST images only (smoke runs)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        retrain_options = retraining.RetrainOptions(
            epochs=options["epochs"],
            from_scratch=options["from_scratch"],
            dry_run=options["dry_run"],
            seed=options["seed"],
            threads=options["threads"],
            mnist_limit=options["mnist_limit"],
            command=describe(options),
        )
        try:
            retraining.retrain(options=retrain_options, progress=self._say)
        except (retraining.RetrainError, model_registry.RegistryError) as exc:
            raise CommandError(str(exc)) from exc

    def _say(self, message: str) -> None:
        self.stdout.write(message)
        self.stdout.flush()


def describe(options: dict) -> str:
    """The command line that reproduces this run, for the version's `trained_on`."""
    words = ["manage.py", "retrain"]
    for flag in ("from_scratch", "dry_run"):
        if options[flag]:
            words.append("--" + flag.replace("_", "-"))
    for name in ("epochs", "seed", "threads", "mnist_limit"):
        if options[name] is not None:
            words += ["--" + name.replace("_", "-"), str(options[name])]
    return " ".join(words)
