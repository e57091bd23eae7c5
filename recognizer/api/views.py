"""Thin DRF views: validate, call recognizer.services, shape the answer."""

from __future__ import annotations

import math

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle

from recognizer import limits, ownership, services
from recognizer.answers import FINISHED
from recognizer.api.serializers import (
    LabelSerializer,
    SubmissionAnsweredSerializer,
    SubmissionCreatedSerializer,
    SubmissionCreateSerializer,
    SubmissionSerializer,
)
from recognizer.api.throttles import AnonThrottle, LabelRateThrottle, UserThrottle
from recognizer.errors import DomainError
from recognizer.models import Submission

WAIT_PARAMETER = OpenApiParameter(
    "wait",
    OpenApiTypes.FLOAT,
    description="Hold the request up to this many seconds (at most MAX_WAIT_SECONDS, "
    f"{settings.MAX_WAIT_SECONDS:g} by default) until the answer is there. The request waits on "
    "a signal from the worker, not by polling.",
)


def wait_seconds(request: Request) -> float:
    """The ?wait= of a request, in seconds (0 when absent); a 400 invalid_wait when not a number."""
    wait = request.query_params.get("wait")
    if not wait:
        return 0.0
    try:
        seconds = float(wait)
    except ValueError:
        raise DomainError("invalid_wait", "wait must be a number") from None
    if not math.isfinite(seconds):
        raise DomainError("invalid_wait", "wait must be a number of seconds")
    return min(max(seconds, 0.0), settings.MAX_WAIT_SECONDS)


class SubmissionViewSet(
    mixins.CreateModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    # The uploaded image and the strokes are never sent back: not read either.
    queryset = Submission.objects.defer("image", "strokes")
    serializer_class = SubmissionSerializer

    def initial(self, request: Request, *args: object, **kwargs: object) -> None:
        # Before authentication too: session authentication's CSRF check may parse the body.
        if self.action in ("create", "label"):
            limits.check_content_length(
                request.META, limit=settings.DATA_UPLOAD_MAX_MEMORY_SIZE, code="request_too_large"
            )
        super().initial(request, *args, **kwargs)

    def get_throttles(self) -> list[BaseThrottle]:
        # Creating work and labelling are throttled; polling for an answer is not.
        if self.action == "create":
            return [AnonThrottle(), UserThrottle()]
        if self.action == "label":
            return [LabelRateThrottle()]
        return []

    @extend_schema(
        request=SubmissionCreateSerializer,
        parameters=[WAIT_PARAMETER],
        responses={
            200: OpenApiResponse(
                SubmissionAnsweredSerializer,
                description="With ?wait=N: answered (done or failed) within N seconds; the same "
                "body as GET.",
            ),
            202: OpenApiResponse(
                SubmissionCreatedSerializer,
                description="Stored and queued: no ?wait=, or no answer within it. GET the "
                "`url` (with ?wait=) for the answer.",
            ),
        },
        summary="Submit a drawing (PNG, JPEG or WebP) for recognition",
    )
    def create(self, request: Request, *args: object, **kwargs: object) -> Response:
        seconds = wait_seconds(request)  # a bad ?wait= is refused before anything is stored
        serializer = SubmissionCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        submission = services.create_submission(
            image=serializer.validated_data["image"],
            strokes=serializer.validated_data.get("strokes"),
            source=serializer.validated_data["source"],
            owner=request.user,
            drawing=serializer.validated_data.get("drawing"),
        )
        if seconds:
            submission = services.wait_for_answer(submission=submission, seconds=seconds)
        context = {"request": request}
        if submission.status in FINISHED:
            body = SubmissionAnsweredSerializer(submission, context=context).data
            return Response(body, status=status.HTTP_200_OK, headers={"Location": body["url"]})
        body = SubmissionCreatedSerializer(submission, context=context).data
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["url"]})

    @extend_schema(parameters=[WAIT_PARAMETER], summary="A submission's status and prediction")
    def retrieve(self, request: Request, *args: object, **kwargs: object) -> Response:
        seconds = wait_seconds(request)
        submission = self.get_object()
        if seconds:
            submission = services.wait_for_answer(submission=submission, seconds=seconds)
        return Response(self.get_serializer(submission).data)

    @extend_schema(
        responses={(200, "image/png"): OpenApiTypes.BINARY}, summary="What the model saw"
    )
    @action(detail=True, url_path="input.png", url_name="input-png")
    def input_png(self, request: Request, pk: str | None = None) -> HttpResponse:
        submission = self.get_object()
        if not submission.model_input:
            raise DomainError("no_input", "no model input yet")
        response = HttpResponse(services.model_input_png(submission), content_type="image/png")
        response["Cache-Control"] = "public, max-age=86400, immutable"
        return response

    @extend_schema(
        request=LabelSerializer,
        responses={200: SubmissionSerializer},
        summary="Say which digit it really was",
    )
    @action(detail=True, methods=["post"])
    def label(self, request: Request, pk: str | None = None) -> Response:
        submission = self.get_object()
        serializer = LabelSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        token = serializer.validated_data.get("label_token")
        if not ownership.may_label(submission=submission, user=request.user, token=token):
            raise DomainError(
                "permission_denied",
                "only the client that sent this drawing may label it (send its label_token)",
            )
        submission = services.label_submission(
            submission=submission, correct_label=serializer.validated_data["correct_label"]
        )
        return Response(self.get_serializer(submission).data)
