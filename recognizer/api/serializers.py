from __future__ import annotations

import copy
import functools
import uuid
from typing import Any, ClassVar

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.urls import get_script_prefix, reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.request import Request

from recognizer import limits, ownership
from recognizer.images import check_image_size, decode_base64_image
from recognizer.models import Submission, check_digit, not_a_digit

# Stands in for an object's id while a URL is reversed once; no object has it (uuid4 never does).
_ID_STANDIN = str(uuid.UUID(int=0))


@functools.lru_cache(maxsize=64)
def _path_template(name: str, script_prefix: str) -> str:
    # reverse() prepends the current script prefix, so the cache is keyed on it.
    return reverse(name, args=[_ID_STANDIN])


def object_url(request: Request, name: str, pk: uuid.UUID) -> str:
    """The absolute URL of the object `pk` under URL pattern `name` (one UUID argument).

    Every answer carries one or two of these. reverse() walks the resolver and reads the active
    language and script prefix on each call (about 5% of a waited POST's CPU), so each pattern is
    reversed once and the id put in its place."""
    path = _path_template(name, get_script_prefix()).replace(_ID_STANDIN, str(pk))
    return request.build_absolute_uri(path)


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


@extend_schema_field(
    {
        "type": "array",
        "description": "Pen strokes: a list of strokes, each a list of points [x, y] or "
        "[x, y, t] (numbers). Multipart clients send the same as a JSON string.",
        "items": {
            "type": "array",
            "items": {
                "type": "array",
                "items": {"type": "number"},
                "minItems": 2,
                "maxItems": 3,
            },
        },
        "maxItems": settings.MAX_STROKES,
        "nullable": True,
    }
)
class StrokesField(serializers.Field):
    """Pen strokes as JSON (checked for shape here, for size by the service); multipart clients
    send them as a JSON string, parsed with the same depth limit as a JSON body."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, str):
            limits.check_strokes_bytes(len(data))
            try:
                data = limits.loads(data)
            except ValueError as exc:
                raise serializers.ValidationError(
                    "strokes is not valid JSON", code="invalid_strokes"
                ) from exc
        return limits.validate_strokes(data)

    def to_representation(self, value: object) -> object:
        return value


class SubmissionCreateSerializer(serializers.Serializer):
    image = ImageField()
    strokes = StrokesField(required=False, allow_null=True)
    drawing = serializers.UUIDField(
        required=False,
        allow_null=True,
        help_text="The client's id for the drawing this is a state of (the page sends one per "
        "drawing, at every pen-up): a new submission supersedes the drawing's earlier ones.",
    )
    # DRF's metaclass moves declared fields off the class, so this does not shadow Field.source.
    source = serializers.ChoiceField(  # type: ignore[assignment]
        choices=[Submission.Source.PAGE, Submission.Source.API],
        default=Submission.Source.API,
    )


class FieldsBuiltOnce(serializers.ModelSerializer):
    """A ModelSerializer that inspects the model for its fields once per class, not per instance:
    for the answers, which only read.

    DRF rebuilds every field from the model's metadata each time a ModelSerializer is made, which
    was the largest cost of answering a drawing. Each instance gets a shallow copy of the fields
    built the first time: its own objects to bind (DRF sets the name, parent and source on each),
    sharing only what nothing changes when reading (choices, error messages). A deep copy, DRF's
    way, rebuilt every field again and cost nearly as much as building them."""

    _built: ClassVar[dict[type, dict[str, serializers.Field]]] = {}

    def get_fields(self) -> dict[str, serializers.Field]:
        built = self._built.get(type(self))
        if built is None:
            built = self._built[type(self)] = super().get_fields()
        return {name: copy.copy(field) for name, field in built.items()}


class SubmissionCreatedSerializer(FieldsBuiltOnce):
    url = serializers.SerializerMethodField()
    label_token = serializers.SerializerMethodField(
        help_text="Send it back with a label: only the client that sent a drawing may label it."
    )

    class Meta:
        model = Submission
        fields = ["id", "status", "url", "label_token"]

    def get_label_token(self, submission: Submission) -> str:
        return ownership.label_token(submission.pk)

    def get_url(self, submission: Submission) -> str:
        return object_url(self.context["request"], "submission-detail", submission.pk)


class SubmissionSerializer(FieldsBuiltOnce):
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
            "is_digit",
            "digit_score",
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
        return object_url(self.context["request"], "submission-detail", submission.pk)

    def get_input_url(self, submission: Submission) -> str | None:
        if not submission.model_input:
            return None
        return object_url(self.context["request"], "submission-input-png", submission.pk)


class SubmissionAnsweredSerializer(SubmissionSerializer):
    """A POST ?wait= answered in time: GET's body, and the label_token of the 202 answer."""

    label_token = serializers.SerializerMethodField(
        help_text="Send it with a label: only the client that sent the drawing may label it."
    )

    class Meta(SubmissionSerializer.Meta):
        fields = [*SubmissionSerializer.Meta.fields, "label_token"]
        read_only_fields = fields

    def get_label_token(self, submission: Submission) -> str:
        return ownership.label_token(submission.pk)


class LabelSerializer(serializers.Serializer):
    # The bounds check_digit enforces, also stated here for the OpenAPI schema.
    correct_label = serializers.IntegerField(min_value=0, max_value=9)
    label_token = serializers.CharField(
        required=False,
        max_length=128,
        help_text="The label_token of the submission's POST answer (not needed by its owner).",
    )

    def validate_correct_label(self, value: int) -> int:
        return check_digit(value)

    def is_valid(self, *, raise_exception: bool = False) -> bool:
        # One stable code for every way a label can be wrong (missing, not a number, not a digit),
        # so clients branch on `invalid_label`.
        valid = super().is_valid()
        if not valid and raise_exception:
            raise not_a_digit()
        return valid
