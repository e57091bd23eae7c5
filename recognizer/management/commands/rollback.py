"""Re-activate the model version the active one replaced (the active one is retired).

python manage.py rollback
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from recognizer import model_registry


class Command(BaseCommand):
    help = __doc__.splitlines()[0]

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            before = model_registry.active_version()
            version = model_registry.rollback()
        except model_registry.RegistryError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"rolled back from {before.name} to {version.name}")
