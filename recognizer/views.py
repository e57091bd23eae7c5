from django.views.generic import TemplateView


class DrawingPageView(TemplateView):
    template_name = "recognizer/index.html"

    def get_context_data(self, **kwargs: object) -> dict:
        context = super().get_context_data(**kwargs)
        context["api_base"] = "/api/v1/"
        return context
