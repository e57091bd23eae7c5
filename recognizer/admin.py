"""Staff review of submissions: the drawing beside what the model saw, filters, search by id.

Every action needs the change permission on its model; promoting, rolling back and retraining
need the `recognizer.manage_models` permission (or a superuser), so staff who may only view change
nothing. Thumbnails never decode an original without checking its size in its header first.
"""

from __future__ import annotations

import base64
import io
import uuid

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.html import format_html
from PIL import Image

from ml.preprocess import ImageLimits, PreprocessError, open_image
from recognizer import model_registry, queue, review, services
from recognizer.models import DIGITS, BatchJob, ModelVersion, Submission

THUMBNAIL_PX = 84
MANAGE_MODELS = "recognizer.manage_models"


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
        try:
            threshold = float(self.value()) if self.value() else None
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
        if self.value() in {str(d) for d in DIGITS}:
            return queryset.filter(correct_label=int(self.value()))
        return queryset


def _label_action(digit: int) -> object:
    def action(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> None:
        count = review.set_label(submissions=queryset, label=digit, reviewer=request.user)
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
            obj.reviewed_by = request.user
            obj.reviewed_at = timezone.now()
        super().save_model(request, obj, form, change)

    @admin.action(description="Accept the user's label", permissions=["change"])
    def accept_user_label(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = review.accept_user_labels(submissions=queryset, reviewer=request.user)
        skipped = queryset.count() - count
        note = f" ({skipped} without a user label left alone)" if skipped else ""
        self.message_user(request, f"Accepted the user's label on {count} submission(s){note}.")

    @admin.action(description="Exclude: not a digit / abuse", permissions=["change"])
    def exclude_not_a_digit(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = review.exclude(submissions=queryset, reviewer=request.user)
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


def _pct(summary: object) -> str:
    if not isinstance(summary, dict) or not summary.get("n") or summary.get("accuracy") is None:
        return "-"
    return f"{100 * summary['accuracy']:.2f}% of {summary['n']}"


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "status",
        "created_at",
        "activated_at",
        "mnist_accuracy",
        "holdout_accuracy",
        "live_accuracy",
        "drawings",
        "gate",
    ]
    list_filter = ["status"]
    # Status changes go through promote/rollback, which keep exactly one version active.
    readonly_fields = [
        "name",
        "status",
        "weights_path",
        "sha256",
        "created_at",
        "activated_at",
        "previous",
        "live_accuracy",
        "trained_on",
        "metrics",
    ]
    actions = ["retrain_now", "promote_selected", "roll_back"]
    # These act on the registry, not on the ticked rows: they run with nothing selected.
    REGISTRY_ACTIONS = ("retrain_now", "roll_back")

    def changelist_view(
        self, request: HttpRequest, extra_context: dict | None = None
    ) -> HttpResponse:
        if (
            request.method == "POST"
            and request.POST.get("action") in self.REGISTRY_ACTIONS
            and self.has_manage_models_permission(request)
        ):
            if not request.POST.getlist(helpers.ACTION_CHECKBOX_NAME):
                # Django runs an action only on a selection: hand it the active version.
                post = request.POST.copy()
                post.setlist(helpers.ACTION_CHECKBOX_NAME, [model_registry.active_version().pk])
                request.POST = post
        return super().changelist_view(request, extra_context)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # versions come from training (manage.py retrain) or the shipped weights

    def has_manage_models_permission(self, request: HttpRequest) -> bool:
        """Promote, roll back, retrain: what answers every drawing (superusers have it too)."""
        return request.user.has_perm(MANAGE_MODELS)

    @admin.display(description="MNIST test")
    def mnist_accuracy(self, version: ModelVersion) -> str:
        return _pct(version.metrics.get("mnist"))

    @admin.display(description="drawn holdout")
    def holdout_accuracy(self, version: ModelVersion) -> str:
        return _pct(version.metrics.get("holdout"))

    @admin.display(description="live accuracy (labelled)")
    def live_accuracy(self, version: ModelVersion) -> str:
        live = model_registry.live_accuracy(version=version)
        if not live.labelled:
            return "-"
        return f"{100 * live.accuracy:.1f}% of {live.labelled}"

    @admin.display(description="drawings")
    def drawings(self, version: ModelVersion) -> str:
        return str(version.trained_on.get("drawings", "-"))

    @admin.display(description="gate")
    def gate(self, version: ModelVersion) -> str:
        decision = version.metrics.get("gate")
        if not decision:
            return "-"
        return "passed" if decision.get("promote") else "rejected"

    @admin.action(
        description="Retrain now (fine-tune the active version; runs in the background)",
        permissions=["manage_models"],
    )
    def retrain_now(self, request: HttpRequest, queryset: QuerySet) -> None:
        if not queue.send(queue.RETRAIN, requested_by=request.user.get_username()):
            self.message_user(
                request, "Could not reach the broker; nothing was queued.", messages.ERROR
            )
            return
        self.message_user(
            request,
            "Retraining queued on the training queue; the candidate appears here when it is done "
            "(a few minutes), promoted only if it passes the gate.",
        )

    @admin.action(description="Promote the selected version", permissions=["manage_models"])
    def promote_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one version to promote.", messages.ERROR)
            return
        try:
            version = model_registry.promote(name=queryset.get().name)
        except model_registry.RegistryError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        self.message_user(
            request, f"{version.name} is active; workers use it from their next task."
        )

    @admin.action(
        description="Roll back to the version the active one replaced",
        permissions=["manage_models"],
    )
    def roll_back(self, request: HttpRequest, queryset: QuerySet) -> None:
        try:
            version = model_registry.rollback()
        except model_registry.RegistryError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        self.message_user(request, f"Rolled back: {version.name} is active again.")
