from django.urls import path
from django.views.decorators.csrf import ensure_csrf_cookie

from recognizer.views import DrawingPageView

urlpatterns = [
    path("", ensure_csrf_cookie(DrawingPageView.as_view()), name="drawing-page"),
]
