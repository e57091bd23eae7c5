import logging

from django.db import DatabaseError
from django.views.generic import TemplateView

from recognizer import model_registry

log = logging.getLogger(__name__)


class DrawingPageView(TemplateView):
    template_name = "recognizer/index.html"

    def get_context_data(self, **kwargs: object) -> dict:
        context = super().get_context_data(**kwargs)
        context["api_base"] = "/api/v1/"
        context["model_version"] = active_version_name()
        return context


def active_version_name() -> str | None:
    """The active version's name for the page footer; the page still draws when it is unknown."""
    try:
        return model_registry.active_version().name
    except (DatabaseError, OSError, model_registry.RegistryError) as exc:
        log.warning("active model version unknown: %s", exc)
        return None
