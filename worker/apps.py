from django.apps import AppConfig


class WorkerConfig(AppConfig):
    """Installed so Celery's autodiscovery finds worker/tasks.py."""

    name = "worker"
