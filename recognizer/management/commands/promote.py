"""Make a model version the active one; running workers answer with it from their next task.

python manage.py promote VERSION
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from recognizer import model_registry


class Command(BaseCommand):
    help = __doc__.splitlines()[0]

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("version")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            before = model_registry.active_version()
            version = model_registry.promote(name=options["version"])
        except model_registry.RegistryError as exc:
            raise CommandError(str(exc)) from exc
        if version.pk == before.pk:
            self.stdout.write(f"{version.name} is already active")
        else:
            self.stdout.write(f"promoted {version.name} (was {before.name})")
