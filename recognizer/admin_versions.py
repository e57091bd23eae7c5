"""The admin of model versions: their scores, and promoting, rolling back and retraining.

Those three need the `recognizer.manage_models` permission (or a superuser). They act on the
registry, not on ticked rows, so Retrain now and Roll back run with nothing selected.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html_join
from django.utils.safestring import mark_safe

from recognizer import model_registry, queue
from recognizer.models import ModelVersion

MANAGE_MODELS = "recognizer.manage_models"


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
        "gate_reasoning",
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
                post.setlist(
                    helpers.ACTION_CHECKBOX_NAME, [str(model_registry.active_version().pk)]
                )
                # The admin reads the selection from request.POST; a mutable copy stands in.
                request.POST = post  # type: ignore[assignment]
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
        if not live.labelled or live.accuracy is None:
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
        if decision.get("promote"):
            return "passed"
        failed = [c["name"] for c in decision.get("checks", []) if not c.get("passed")]
        return f"rejected: {', '.join(failed)}" if failed else "rejected"

    @admin.display(description="gate's reasoning")
    def gate_reasoning(self, version: ModelVersion) -> str:
        decision = version.metrics.get("gate") or {}
        reasons = decision.get("reasons") or ["-"]
        return format_html_join(mark_safe("<br>"), "{}", ((reason,) for reason in reasons))

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
