from rest_framework.routers import DefaultRouter

from recognizer.api.batches import BatchJobViewSet
from recognizer.api.views import SubmissionViewSet

router = DefaultRouter()
router.register("submissions", SubmissionViewSet, basename="submission")
router.register("batches", BatchJobViewSet, basename="batch")

urlpatterns = router.urls
