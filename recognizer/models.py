"""What the service stores. Business rules live in recognizer/services.py, not here."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.db import models
from django.db.models import F, Q

from recognizer.errors import DomainError

if TYPE_CHECKING:
    from django.contrib.auth.models import User

# The labels a person can give: the ten digits. Labelling, review and the admin all use this.
DIGITS = range(10)


def signed_in(user: User | AnonymousUser | None) -> User | None:
    """A request's user as an owner or reviewer: None for an anonymous one."""
    if user is None or isinstance(user, AnonymousUser):
        return None
    return user


def not_a_digit() -> DomainError:
    return DomainError("invalid_label", "correct_label must be a digit from 0 to 9")


def check_digit(value: object) -> int:
    """The label rule: a label is an integer digit from 0 to 9 (a bool is not one)."""
    if isinstance(value, bool) or not isinstance(value, int) or value not in DIGITS:
        raise not_a_digit()
    return value


class Submission(models.Model):
    class Source(models.TextChoices):
        PAGE = "page"
        API = "api"
        BATCH = "batch"

    class Status(models.TextChoices):
        QUEUED = "queued"
        PROCESSING = "processing"
        DONE = "done"
        FAILED = "failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    source = models.CharField(max_length=8, choices=Source.choices, default=Source.API)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )

    image = models.BinaryField(help_text="The image bytes as received (size-capped).")
    content_type = models.CharField(max_length=32, blank=True)
    strokes = models.JSONField(
        null=True, blank=True, help_text="Pen strokes, when the page sent them."
    )
    # The page sends a drawing at every pen-up, so a digit in several strokes makes several
    # submissions of one drawing; each new one supersedes the earlier ones, which are kept.
    drawing_uuid = models.UUIDField(
        null=True, blank=True, help_text="The drawing on the page this submission is a state of."
    )
    superseded = models.BooleanField(
        default=False,
        help_text="A later stroke of the same drawing replaced it: not reviewed or trained on "
        "unless labelled.",
    )
    model_input = models.BinaryField(
        null=True, blank=True, help_text="The 28x28 uint8 image the model saw (784 bytes)."
    )

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    prediction = models.PositiveSmallIntegerField(null=True, blank=True)
    confidence = models.FloatField(null=True, blank=True)
    probabilities = models.JSONField(null=True, blank=True)
    # "Does it look like a digit at all?" (ml/calibration.py). A drawing judged not a digit is still
    # `done`, with its prediction and probabilities; the page and the API say so beside them.
    is_digit = models.BooleanField(
        null=True, blank=True, help_text="False: it does not look like a digit (rejected)."
    )
    digit_score = models.FloatField(
        null=True, blank=True, help_text="0..1, how digit-like; below the threshold: rejected."
    )
    model_version = models.CharField(max_length=64, blank=True)
    error_code = models.CharField(max_length=32, blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Times it was enqueued.")

    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    correct_label = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="The digit the user says it is (flag or confirmation)."
    )
    labelled_at = models.DateTimeField(null=True, blank=True)

    # Staff review (the learning loop): the label training will use, or exclusion.
    reviewed_label = models.PositiveSmallIntegerField(null=True, blank=True)
    excluded = models.BooleanField(
        default=False, help_text="Not a digit, or abuse: never trained on."
    )
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="reviewed_submissions",
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)

    # Batch items are submissions too, so they are reviewed and counted like any other.
    batch = models.ForeignKey(
        "BatchJob", null=True, blank=True, on_delete=models.CASCADE, related_name="items"
    )
    batch_index = models.PositiveIntegerField(null=True, blank=True)
    name = models.CharField(max_length=255, blank=True, help_text="File or item name (batches).")

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["status", "queued_at"], name="submission_status_queued"),
            models.Index(fields=["prediction"], name="submission_prediction"),
            models.Index(fields=["is_digit"], name="submission_is_digit"),
            models.Index(fields=["model_version"], name="submission_model_version"),
            models.Index(fields=["correct_label"], name="submission_correct_label"),
            models.Index(fields=["source", "created_at"], name="submission_source_created"),
            models.Index(fields=["batch", "batch_index"], name="submission_batch_index"),
            models.Index(fields=["reviewed_at"], name="submission_reviewed_at"),
            models.Index(fields=["drawing_uuid"], name="submission_drawing_uuid"),
        ]

    def __str__(self) -> str:
        return f"{self.id} ({self.status})"

    @property
    def is_flagged(self) -> bool:
        """The user said the answer was wrong."""
        return self.correct_label is not None and self.correct_label != self.prediction

    @staticmethod
    def flagged_q() -> Q:
        return Q(correct_label__isnull=False) & ~Q(correct_label=F("prediction"))


class BatchJob(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        CANCELLED = "cancelled"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    total = models.PositiveIntegerField(default=0)
    done_count = models.PositiveIntegerField(default=0)
    failed_count = models.PositiveIntegerField(default=0)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["owner", "created_at"], name="batch_owner_created")]

    def __str__(self) -> str:
        return (
            f"batch {self.id} ({self.status}, {self.done_count + self.failed_count}/{self.total})"
        )


class ModelVersion(models.Model):
    class Status(models.TextChoices):
        CANDIDATE = "candidate"
        ACTIVE = "active"
        RETIRED = "retired"

    name = models.CharField(max_length=64, unique=True)
    weights_path = models.CharField(max_length=500)
    sha256 = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.CANDIDATE)
    trained_on = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    # Promotion history, so that a rollback returns to exactly the version that was replaced.
    activated_at = models.DateTimeField(null=True, blank=True)
    previous = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The version that was active when this one was promoted.",
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["status"], condition=Q(status="active"), name="one_active_model_version"
            )
        ]
        permissions = [
            ("manage_models", "Can promote, roll back and retrain model versions"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"
