"""Writing answers and failures onto Submission rows: one path for drawings and batch items.

Both the interactive task (one submission) and a batch chunk (many items) set the same fields
through `answer`/`fail` and save them with `save_in_flight`, which changes only rows still in
flight: a late duplicate never overwrites an answer, and a redelivered chunk counts nothing twice.
`give_up` is the one rule for work that keeps failing: the interactive sweeper and a batch chunk
both use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Field, QuerySet
from django.utils import timezone

from ml.calibration import digit_scores
from recognizer.models import Submission

IN_FLIGHT = (Submission.Status.QUEUED, Submission.Status.PROCESSING)
FINISHED = (Submission.Status.DONE, Submission.Status.FAILED)

# The fields `answer` and `fail` set; what `save_in_flight` writes.
ANSWER_FIELDS = (
    "status",
    "prediction",
    "confidence",
    "probabilities",
    "is_digit",
    "digit_score",
    "model_version",
    "error_code",
    "error",
    "finished_at",
)
FAILURE_FIELDS = ("status", "error_code", "error", "finished_at")
MAX_ERROR_CHARS = 2000


class Predictor(Protocol):
    """What the domain needs of a model: ml.predictor.Predictor and the tests' fakes fit."""

    @property
    def version(self) -> str: ...

    @property
    def digit_threshold(self) -> float:
        """digit_score under this: not a digit (the threshold saved with the weights)."""
        ...

    def predict_images(self, images: np.ndarray) -> np.ndarray:
        """uint8 N x 28 x 28 model inputs -> N x 10 probabilities."""
        ...


@dataclass(frozen=True)
class Prediction:
    digit: int
    confidence: float
    probabilities: list[float]
    digit_score: float
    is_digit: bool


def prediction_from_probabilities(
    probabilities: np.ndarray, *, digit_threshold: float = 0.0
) -> Prediction:
    """The answer in the probabilities (already calibrated by the predictor), and whether it looks
    like a digit at all: its digit score against the threshold the weights were calibrated with."""
    rounded = [round(float(p), 6) for p in probabilities]
    digit = int(np.argmax(probabilities))
    score = float(digit_scores(np.asarray(probabilities)[None])[0])
    return Prediction(
        digit=digit,
        confidence=rounded[digit],
        probabilities=rounded,
        digit_score=round(score, 4),
        is_digit=bool(score >= digit_threshold),
    )


def answer(
    submission: Submission,
    *,
    probabilities: np.ndarray,
    model_version: str,
    digit_threshold: float,
) -> None:
    """Set the answer on the instance (saved by `save_in_flight` with ANSWER_FIELDS)."""
    prediction = prediction_from_probabilities(probabilities, digit_threshold=digit_threshold)
    submission.status = Submission.Status.DONE
    submission.prediction = prediction.digit
    submission.confidence = prediction.confidence
    submission.probabilities = prediction.probabilities
    submission.digit_score = prediction.digit_score
    submission.is_digit = prediction.is_digit
    submission.model_version = model_version
    submission.error_code = ""
    submission.error = ""
    submission.finished_at = timezone.now()


def failure_values(*, code: str, message: str) -> dict[str, Any]:
    """The FAILURE_FIELDS of a failure, for an instance (`fail`) or a queryset's update()."""
    return {
        "status": Submission.Status.FAILED,
        "error_code": code,
        "error": message[:MAX_ERROR_CHARS],
        "finished_at": timezone.now(),
    }


def fail(submission: Submission, *, code: str, message: str) -> None:
    """Set a failure on the instance (saved by `save_in_flight` with FAILURE_FIELDS)."""
    for field, value in failure_values(code=code, message=message).items():
        setattr(submission, field, value)


def save_in_flight(submissions: Sequence[Submission], fields: Sequence[str]) -> int:
    """Write `fields` of every submission still queued or processing, in one executemany; the
    number of rows changed.

    Only rows still in flight change and count, so a duplicate run that finished first is never
    overwritten or counted twice. This is QuerySet.bulk_update's job, done without its per-row CASE
    WHEN expressions: those took 60% of a batch chunk's time (more than preprocessing and the model
    together) and held SQLite's write lock long enough to delay people's drawings. Values go
    through each field's own get_db_prep_save, so SQLite and PostgreSQL get what the ORM would send.
    """
    if not submissions:
        return 0
    meta = Submission._meta
    # The connection itself: django.db.connection finds this thread's again on every use.
    db = connections[DEFAULT_DB_ALIAS]
    quote = db.ops.quote_name
    by_name = {field.name: field for field in meta.concrete_fields}
    columns = [by_name[name] for name in fields]
    pk, status = by_name["id"], by_name["status"]
    sql = (
        f"UPDATE {quote(meta.db_table)} SET "
        + ", ".join(f"{quote(column_name(field))} = %s" for field in columns)
        + f" WHERE {quote(column_name(pk))} = %s AND {quote(column_name(status))} IN (%s, %s)"
    )
    rows = [
        [field.get_db_prep_save(getattr(item, field.attname), db) for field in columns]
        + [pk.get_db_prep_value(item.pk, db), *(state.value for state in IN_FLIGHT)]
        for item in submissions
    ]
    with db.cursor() as cursor:
        cursor.executemany(sql, rows)
        # sqlite3 and psycopg both sum the rows changed over an executemany.
        return cursor.rowcount


def column_name(field: Field) -> str:
    assert field.column is not None  # set for every concrete field once the model is loaded
    return field.column


def give_up(rows: QuerySet[Submission]) -> int:
    """Fail, with error_code "gave_up", every row of `rows` in flight that has used its
    MAX_PREDICTION_ATTEMPTS; the number failed. Work that keeps killing workers or never gets an
    answer ends with a clear error instead of being tried for ever."""
    limit = settings.MAX_PREDICTION_ATTEMPTS
    return rows.filter(status__in=IN_FLIGHT, attempts__gte=limit).update(
        **failure_values(code="gave_up", message=f"no answer after {limit} attempts")
    )
