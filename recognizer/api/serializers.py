from __future__ import annotations

import json

from django.core.files.uploadedfile import UploadedFile
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from recognizer.images import check_image_size, decode_base64_image
from recognizer.models import Submission, check_digit, not_a_digit


@extend_schema_field(OpenApiTypes.STR)
class ImageField(serializers.Field):
    """An uploaded file (multipart) or a data URL / base64 string (JSON), to bytes."""

    default_error_messages = {"invalid": "image must be a file upload or a base64 string"}

    def to_internal_value(self, data: object) -> bytes:
        if isinstance(data, UploadedFile):
            check_image_size(data.size or 0)
            return data.read()
        if isinstance(data, str):
            return decode_base64_image(data)
        self.fail("invalid")


class StrokesField(serializers.JSONField):
    """Pen strokes as JSON; multipart clients send them as a JSON string."""

    def to_internal_value(self, data: object) -> object:
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except ValueError as exc:
                raise serializers.ValidationError(
                    "strokes is not valid JSON", code="invalid_strokes"
                ) from exc
        return super().to_internal_value(data)


class SubmissionCreateSerializer(serializers.Serializer):
    image = ImageField()
    strokes = StrokesField(required=False, allow_null=True)
    drawing = serializers.UUIDField(
        required=False,
        allow_null=True,
        help_text="The client's id for the drawing this is a state of (the page sends one per "
        "drawing, at every pen-up): a new submission supersedes the drawing's earlier ones.",
    )
    source = serializers.ChoiceField(
        choices=[Submission.Source.PAGE, Submission.Source.API],
        default=Submission.Source.API,
    )


class SubmissionCreatedSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()

    class Meta:
        model = Submission
        fields = ["id", "status", "url"]

    def get_url(self, submission: Submission) -> str:
        return self.context["request"].build_absolute_uri(
            reverse("submission-detail", args=[submission.pk])
        )


class SubmissionSerializer(serializers.ModelSerializer):
    input_url = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()
    flagged = serializers.BooleanField(source="is_flagged", read_only=True)

    class Meta:
        model = Submission
        fields = [
            "id",
            "url",
            "status",
            "source",
            "prediction",
            "confidence",
            "probabilities",
            "model_version",
            "error_code",
            "error",
            "created_at",
            "queued_at",
            "started_at",
            "finished_at",
            "correct_label",
            "flagged",
            "input_url",
        ]
        read_only_fields = fields

    def get_url(self, submission: Submission) -> str:
        return self.context["request"].build_absolute_uri(
            reverse("submission-detail", args=[submission.pk])
        )

    def get_input_url(self, submission: Submission) -> str | None:
        if not submission.model_input:
            return None
        return self.context["request"].build_absolute_uri(
            reverse("submission-input-png", args=[submission.pk])
        )


class LabelSerializer(serializers.Serializer):
    correct_label = serializers.IntegerField()

    def validate_correct_label(self, value: int) -> int:
        return check_digit(value)

    def is_valid(self, *, raise_exception: bool = False) -> bool:
        # One stable code for every way a label can be wrong (missing, not a number, not a digit),
        # so clients branch on `invalid_label`.
        valid = super().is_valid()
        if not valid and raise_exception:
            raise not_a_digit()
        return valid
