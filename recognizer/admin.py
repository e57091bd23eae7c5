"""Staff review of submissions: the drawing beside what the model saw, filters, search by id."""

from __future__ import annotations

import base64
import io
import uuid

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from PIL import Image

from recognizer import services
from recognizer.models import BatchJob, ModelVersion, Submission

THUMBNAIL_PX = 84


def _png_data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def original_thumbnail(submission: Submission) -> str:
    try:
        image = Image.open(io.BytesIO(bytes(submission.image)))
        image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
        background = Image.new("RGBA", image.size, "white")
        return _png_data_url(Image.alpha_composite(background, image.convert("RGBA")))
    except Exception:  # an undecodable original shows as missing, never breaks the page
        return ""


def input_thumbnail(submission: Submission) -> str:
    if not submission.model_input:
        return ""
    image = Image.fromarray(services.model_input_array(submission), mode="L")
    return _png_data_url(image.resize((THUMBNAIL_PX, THUMBNAIL_PX), Image.Resampling.NEAREST))


def _img(src: str, alt: str) -> str:
    if not src:
        return "-"
    return format_html(
        '<img src="{}" alt="{}" width="{}" height="{}" style="image-rendering: pixelated; '
        'border: 1px solid #ccc; background: #fff">',
        src,
        alt,
        THUMBNAIL_PX,
        THUMBNAIL_PX,
    )


class FlaggedFilter(admin.SimpleListFilter):
    title = "user label"
    parameter_name = "labelled"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple]:
        return [("flagged", "Flagged wrong"), ("confirmed", "Confirmed right"), ("none", "None")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        flagged = Submission.flagged_q()
        if self.value() == "flagged":
            return queryset.filter(flagged)
        if self.value() == "confirmed":
            return queryset.filter(correct_label__isnull=False).exclude(flagged)
        if self.value() == "none":
            return queryset.filter(correct_label__isnull=True)
        return queryset


@admin.register(Submission)
class SubmissionAdmin(admin.ModelAdmin):
    list_display = [
        "short_id",
        "created_at",
        "source",
        "status",
        "drawing",
        "model_saw",
        "prediction",
        "confidence_pct",
        "correct_label",
        "model_version",
    ]
    list_filter = ["status", FlaggedFilter, "prediction", "model_version", "source"]
    search_fields = ["=id", "name"]
    list_per_page = 50
    date_hierarchy = "created_at"
    readonly_fields = [
        "id",
        "created_at",
        "drawing",
        "model_saw",
        "status",
        "prediction",
        "confidence",
        "probabilities",
        "model_version",
        "error_code",
        "error",
        "queued_at",
        "started_at",
        "finished_at",
        "attempts",
        "source",
        "content_type",
        "batch",
        "batch_index",
        "name",
        "owner",
        "strokes",
    ]
    exclude = ["image", "model_input"]

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        # A partial or malformed id must not reach the UUID column (PostgreSQL would refuse it).
        term = search_term.strip()
        try:
            return queryset.filter(pk=uuid.UUID(term)), False
        except ValueError:
            return queryset.filter(name__icontains=term) if term else queryset, False

    @admin.display(description="id")
    def short_id(self, submission: Submission) -> str:
        return str(submission.id)[:8]

    @admin.display(description="drawing")
    def drawing(self, submission: Submission) -> str:
        return _img(original_thumbnail(submission), "the drawing as sent")

    @admin.display(description="model saw")
    def model_saw(self, submission: Submission) -> str:
        return _img(input_thumbnail(submission), "the 28x28 model input")

    @admin.display(description="confidence", ordering="confidence")
    def confidence_pct(self, submission: Submission) -> str:
        return "-" if submission.confidence is None else f"{submission.confidence:.0%}"


@admin.register(BatchJob)
class BatchJobAdmin(admin.ModelAdmin):
    list_display = ["id", "owner", "created_at", "status", "total", "done_count", "failed_count"]
    list_filter = ["status"]
    readonly_fields = ["id", "created_at", "finished_at"]


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["name", "status", "created_at", "sha256"]
    list_filter = ["status"]
