"""The batch-jobs API: token-authenticated clients send many images at once and read results.

    POST   /api/v1/batches/               -> 202 the job (+ Location)
    GET    /api/v1/batches/               the client's jobs, newest first, paginated
    GET    /api/v1/batches/{id}/          status and progress
    GET    /api/v1/batches/{id}/results/  {"results": [...], "next": url|null}; ?format=csv streams
    DELETE /api/v1/batches/{id}/          cancel the items not yet scored

The domain is recognizer/batches/; this module only checks who asks and shapes the answers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import TooManyFilesSent
from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.authentication import SessionAuthentication, TokenAuthentication
from rest_framework.decorators import action
from rest_framework.exceptions import NotAuthenticated
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle

from recognizer import limits
from recognizer.api.parsers import JSONParser
from recognizer.api.serializers import object_url
from recognizer.api.throttles import UserThrottle
from recognizer.batches import jobs, parsing
from recognizer.batches import results as batch_results
from recognizer.batches.results import spreadsheet_safe
from recognizer.errors import DomainError
from recognizer.models import BatchJob, Submission, signed_in

# --- Serializers --------------------------------------------------------------------------------


class BatchJobSerializer(serializers.ModelSerializer):
    done = serializers.IntegerField(source="done_count", read_only=True)
    failed = serializers.IntegerField(source="failed_count", read_only=True)
    url = serializers.SerializerMethodField()
    results_url = serializers.SerializerMethodField()

    class Meta:
        model = BatchJob
        fields = [
            "id",
            "status",
            "total",
            "done",
            "failed",
            "created_at",
            "finished_at",
            "url",
            "results_url",
        ]
        read_only_fields = fields

    def get_url(self, job: BatchJob) -> str:
        return object_url(self.context["request"], "batch-detail", job.pk)

    def get_results_url(self, job: BatchJob) -> str:
        return object_url(self.context["request"], "batch-results", job.pk)


class BatchImageSerializer(serializers.Serializer):
    name = serializers.CharField(required=False, help_text="Echoed back in the results.")
    image = serializers.CharField(help_text="A data URL or plain base64 of a PNG, JPEG or WebP.")


class BatchJSONRequestSerializer(serializers.Serializer):
    # The bounds the parser enforces (empty_batch, too_many_items), stated for the schema.
    images = serializers.ListField(
        child=BatchImageSerializer(), min_length=1, max_length=settings.BATCH_MAX_ITEMS
    )


class BatchMultipartRequestSerializer(serializers.Serializer):
    images = serializers.ListField(
        child=serializers.FileField(), required=False, help_text="Repeated image files."
    )
    file = serializers.FileField(
        required=False,
        help_text="One ZIP of images, a .npy array or an IDX file (N x 28 x 28, maybe gzipped), "
        "recognised by its content.",
    )


class BatchResultSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    name = serializers.CharField()
    status = serializers.ChoiceField(choices=Submission.Status.choices)
    prediction = serializers.IntegerField(allow_null=True)
    confidence = serializers.FloatField(allow_null=True)
    probabilities = serializers.ListField(child=serializers.FloatField(), allow_null=True)
    is_digit = serializers.BooleanField(
        allow_null=True, help_text="false: not a digit (prediction is the closest)"
    )
    digit_score = serializers.FloatField(allow_null=True, help_text="0..1, how digit-like")
    error_code = serializers.CharField(allow_blank=True)
    error = serializers.CharField(allow_blank=True)


class BatchResultsPageSerializer(serializers.Serializer):
    results = BatchResultSerializer(many=True)
    next = serializers.URLField(allow_null=True)


# --- Renderers and pagination -------------------------------------------------------------------


class CSVRenderer(BaseRenderer):
    """Lets `?format=csv` (DRF's format override) and `Accept: text/csv` select the CSV answer;
    the results themselves are streamed by the view. Errors come out as a one-row CSV."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        if isinstance(data, dict) and "code" in data:
            message = spreadsheet_safe(str(data.get("message", ""))).replace('"', '""')
            return f'code,message\r\n{data["code"]},"{message}"\r\n'.encode()
        return b""


class BatchJSONParser(JSONParser):
    """JSON bounded by BATCH_MAX_BYTES rather than DATA_UPLOAD_MAX_MEMORY_SIZE (the cap of a single
    drawing's request), with the same depth limit."""

    def max_bytes(self) -> int:
        return settings.BATCH_MAX_BYTES

    def too_large(self) -> DomainError:
        return parsing.too_large_error()


class FormatFirstNegotiation(DefaultContentNegotiation):
    """`?format=csv` picks CSV whatever the Accept header says: many clients always send
    `Accept: application/json`, which DRF would otherwise answer with 406."""

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        wanted = format_suffix or request.query_params.get(self.settings.URL_FORMAT_OVERRIDE)
        if wanted:
            # 404 for an unknown format
            renderer = self.filter_renderers(list(renderers), wanted)[0]
            return renderer, renderer.media_type
        return super().select_renderer(request, renderers, format_suffix)


class BatchListPagination(PageNumberPagination):
    def get_page_size(self, request: Request) -> int:
        return settings.BATCH_LIST_PAGE_SIZE


# --- The viewset --------------------------------------------------------------------------------


class BatchJobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = BatchJobSerializer
    # Token first, so an anonymous client hears 401 with `WWW-Authenticate: Token`.
    authentication_classes = [TokenAuthentication, SessionAuthentication]
    permission_classes = [IsAuthenticated]
    parser_classes = [BatchJSONParser, MultiPartParser]
    content_negotiation_class = FormatFirstNegotiation
    pagination_class = BatchListPagination

    def get_queryset(self) -> QuerySet:
        # Another client's job is not found (404), not forbidden: its existence is not disclosed.
        if getattr(self, "swagger_fake_view", False):
            return BatchJob.objects.none()
        return BatchJob.objects.filter(owner=signed_in(self.request.user))

    def initial(self, request: Request, *args: object, **kwargs: object) -> None:
        # Before authentication: a session's CSRF check parses a multipart body to find its token.
        if self.action == "create":
            limits.check_content_length(
                request.META, limit=settings.BATCH_MAX_BYTES, code="batch_too_large"
            )
        super().initial(request, *args, **kwargs)

    def get_throttles(self) -> list[BaseThrottle]:
        # Creating work is throttled (THROTTLE_USER); progress polls and result reads are not.
        if self.action == "create":
            return [UserThrottle()]
        return []

    @extend_schema(
        request={
            "application/json": BatchJSONRequestSerializer,
            "multipart/form-data": BatchMultipartRequestSerializer,
        },
        responses={202: BatchJobSerializer},
        summary="Create a batch job: many images, a ZIP, or an N x 28 x 28 array",
    )
    def create(self, request: Request, *args: object, **kwargs: object) -> Response:
        try:
            data, files = request.data, request.FILES
        except TooManyFilesSent:
            raise parsing.too_many_items_error() from None
        items = parsing.parse_request(data=data, files=files)
        owner = signed_in(request.user)
        if owner is None:  # IsAuthenticated let no anonymous client in
            raise NotAuthenticated()
        job = jobs.create_job(owner=owner, items=items)
        body = BatchJobSerializer(job, context={"request": request}).data
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["url"]})

    @extend_schema(summary="A batch job's status and progress")
    def retrieve(self, request: Request, *args: object, **kwargs: object) -> Response:
        return super().retrieve(request, *args, **kwargs)

    @extend_schema(summary="The client's batch jobs, newest first")
    def list(self, request: Request, *args: object, **kwargs: object) -> Response:
        return super().list(request, *args, **kwargs)

    @extend_schema(
        request=None,
        responses={200: BatchJobSerializer, 409: OpenApiResponse(description="already done")},
        summary="Cancel the items not yet scored (the job and its results stay)",
    )
    def destroy(self, request: Request, *args: object, **kwargs: object) -> Response:
        job = jobs.cancel_job(job=self.get_object())
        return Response(self.get_serializer(job).data)

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "after", OpenApiTypes.INT, description="Results after this index (from `next`)."
            ),
            OpenApiParameter(
                "limit",
                OpenApiTypes.INT,
                description="Results per page (at most BATCH_RESULTS_PAGE_SIZE, 1000).",
            ),
            OpenApiParameter(
                "format",
                OpenApiTypes.STR,
                enum=["json", "csv"],
                description="csv: every result as one streamed CSV file (no paging).",
            ),
        ],
        responses={
            (200, "application/json"): BatchResultsPageSerializer,
            (200, "text/csv"): OpenApiTypes.STR,
        },
        summary="Per-item results: JSON pages, or the whole job as CSV",
    )
    @action(detail=True, renderer_classes=[JSONRenderer, CSVRenderer])
    def results(self, request: Request, pk: str | None = None) -> Response | StreamingHttpResponse:
        job = self.get_object()
        if request.accepted_renderer.format == "csv":
            response = StreamingHttpResponse(
                batch_results.csv_lines(job=job), content_type="text/csv; charset=utf-8"
            )
            response["Content-Disposition"] = f'attachment; filename="batch-{job.pk}.csv"'
            return response
        after = _int_param(request, "after", default=-1, low=-1)
        limit = _int_param(
            request,
            "limit",
            default=settings.BATCH_RESULTS_PAGE_SIZE,
            low=1,
            high=settings.BATCH_RESULTS_PAGE_SIZE,
        )
        rows, next_after = batch_results.results_page(job=job, after=after, limit=limit)
        next_url = None
        if next_after is not None:
            query = request.query_params.copy()
            query["after"] = str(next_after)
            next_url = request.build_absolute_uri(f"{request.path}?{query.urlencode()}")
        return Response({"results": rows, "next": next_url})


def _int_param(
    request: Request, name: str, *, default: int, low: int, high: int | None = None
) -> int:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise DomainError("invalid", f"{name} must be an integer") from None
    if value < low or (high is not None and value > high):
        bound = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise DomainError("invalid", f"{name} must be {bound}")
    return value
