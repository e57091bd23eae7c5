"""Staff review of submissions: the drawing beside what the model saw, filters, search by id.
Model versions have their own module, recognizer/admin_versions.py.

Every action needs the change permission on its model; promoting, rolling back and retraining
need the `recognizer.manage_models` permission (or a superuser), so staff who may only view change
nothing. Thumbnails never decode an original without checking its size in its header first.
"""

from __future__ import annotations

import base64
import io
import uuid
from collections.abc import Callable

from django.conf import settings
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html
from PIL import Image

from ml.preprocess import ImageLimits, PreprocessError, open_image
from recognizer import (
    admin_versions,  # noqa: F401 - registers ModelVersionAdmin
    review,
    services,
)
from recognizer.batches.parsing import ARRAY_CONTENT_TYPE, array_from_npy
from recognizer.models import DIGITS, BatchJob, Submission, signed_in

THUMBNAIL_PX = 84


def _png_data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def original_thumbnail(submission: Submission) -> str:
    """The drawing as sent, when its header says it is small (ADMIN_PREVIEW_MAX_PIXELS): a batch
    item may be any image, and a 13000x13000 PNG of a few hundred KB must not be decoded to fill
    a list page. Its bytes are read on their own, so a page never holds 50 originals at once."""
    data = Submission.objects.filter(pk=submission.pk).values_list("image", flat=True).first()
    if not data:
        return ""
    limit = settings.ADMIN_PREVIEW_MAX_PIXELS
    try:
        if submission.content_type == ARRAY_CONTENT_TYPE:  # a row of a .npy or IDX job
            return _png_data_url(
                Image.fromarray(array_from_npy(bytes(data)), mode="L").resize(
                    (THUMBNAIL_PX, THUMBNAIL_PX), Image.Resampling.NEAREST
                )
            )
        image = open_image(bytes(data), limits=ImageLimits(max_pixels=limit, max_side=limit))
        image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))  # JPEGs decode at a fraction of full size
        background = Image.new("RGBA", image.size, "white")
        return _png_data_url(Image.alpha_composite(background, image.convert("RGBA")))
    except (PreprocessError, OSError, SyntaxError, ValueError, EOFError):
        return ""  # too large, or undecodable: shown as missing, never breaks the page


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


class ReviewFilter(admin.SimpleListFilter):
    title = "review"
    parameter_name = "review"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple]:
        return [
            ("todo", "Needs review (labelled or low confidence)"),
            ("unreviewed", "Unreviewed"),
            ("reviewed", "Reviewed (has a label)"),
            ("excluded", "Excluded"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "todo":
            return queryset.filter(review.needs_review_q())
        if self.value() == "unreviewed":
            return queryset.filter(reviewed_at__isnull=True)
        if self.value() == "reviewed":
            return queryset.filter(reviewed_label__isnull=False, excluded=False)
        if self.value() == "excluded":
            return queryset.filter(excluded=True)
        return queryset


class ConfidenceFilter(admin.SimpleListFilter):
    title = "confidence"
    parameter_name = "confidence_below"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple]:
        thresholds = sorted({0.5, settings.REVIEW_LOW_CONFIDENCE, 0.95})
        return [(f"{t:g}", f"Below {t:.0%}") for t in thresholds]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        try:
            threshold = float(value) if value else None
        except ValueError:
            return queryset
        return queryset if threshold is None else queryset.filter(confidence__lt=threshold)


class DigitFilter(admin.SimpleListFilter):
    """Drawings the model judged not a digit (rejected), or those it took for digits."""

    title = "looks like a digit"
    parameter_name = "is_digit"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple]:
        return [("no", "Rejected: not a digit"), ("yes", "A digit")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "no":
            return queryset.filter(is_digit=False)
        if self.value() == "yes":
            return queryset.filter(is_digit=True)
        return queryset


class LabelledDigitFilter(admin.SimpleListFilter):
    """The user's digit; with the `prediction` filter it picks pairs such as "said 7, was 1"."""

    title = "labelled digit"
    parameter_name = "labelled_digit"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple]:
        return [(str(d), str(d)) for d in DIGITS]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value in {str(d) for d in DIGITS}:
            return queryset.filter(correct_label=int(value))
        return queryset


def _label_action(digit: int) -> Callable[[admin.ModelAdmin, HttpRequest, QuerySet], None]:
    def action(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> None:
        count = review.set_label(
            submissions=queryset, label=digit, reviewer=signed_in(request.user)
        )
        modeladmin.message_user(request, f"Labelled {count} submission(s) as {digit}.")

    action.__name__ = f"label_as_{digit}"
    return admin.action(description=f"Label as {digit}", permissions=["change"])(action)


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
        "digit_verdict",
        "correct_label",
        "reviewed",
        "model_version",
    ]
    list_filter = [
        ReviewFilter,
        FlaggedFilter,
        ConfidenceFilter,
        DigitFilter,
        "prediction",
        LabelledDigitFilter,
        "model_version",
        "status",
        "source",
        "superseded",
    ]
    actions = [
        "accept_user_label",
        *[_label_action(digit) for digit in DIGITS],
        "exclude_not_a_digit",
    ]
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
        "is_digit",
        "digit_score",
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
        "drawing_uuid",
        "superseded",
        "correct_label",
        "labelled_at",
        "reviewed_by",
        "reviewed_at",
    ]
    exclude = ["image", "model_input"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        # Originals are read one at a time for their thumbnails (original_thumbnail).
        return super().get_queryset(request).defer("image", "strokes")

    def save_model(self, request: HttpRequest, obj: Submission, form: object, change: bool) -> None:
        # Editing the reviewed label or the exclusion by hand is a review too.
        if change and {"reviewed_label", "excluded"} & set(getattr(form, "changed_data", [])):
            obj.reviewed_by = signed_in(request.user)
            obj.reviewed_at = timezone.now()
        super().save_model(request, obj, form, change)

    @admin.action(description="Accept the user's label", permissions=["change"])
    def accept_user_label(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = review.accept_user_labels(submissions=queryset, reviewer=signed_in(request.user))
        skipped = queryset.count() - count
        note = f" ({skipped} without a user label left alone)" if skipped else ""
        self.message_user(request, f"Accepted the user's label on {count} submission(s){note}.")

    @admin.action(description="Exclude: not a digit / abuse", permissions=["change"])
    def exclude_not_a_digit(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = review.exclude(submissions=queryset, reviewer=signed_in(request.user))
        self.message_user(request, f"Excluded {count} submission(s) from training.")

    @admin.display(description="reviewed")
    def reviewed(self, submission: Submission) -> str:
        if submission.excluded:
            return "excluded"
        if submission.reviewed_label is not None:
            return f"as {submission.reviewed_label}"
        return "-"

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

    @admin.display(description="digit?", ordering="digit_score")
    def digit_verdict(self, submission: Submission) -> str:
        if submission.is_digit is None:
            return "-"
        verdict = "yes" if submission.is_digit else "not a digit"
        return f"{verdict} ({submission.digit_score:.2f})"

    @admin.display(description="confidence", ordering="confidence")
    def confidence_pct(self, submission: Submission) -> str:
        return "-" if submission.confidence is None else f"{submission.confidence:.0%}"


@admin.register(BatchJob)
class BatchJobAdmin(admin.ModelAdmin):
    list_display = ["id", "owner", "created_at", "status", "total", "done_count", "failed_count"]
    list_filter = ["status"]
    readonly_fields = ["id", "created_at", "finished_at"]
