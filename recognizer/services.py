"""The domain: plain keyword-only functions that views, tasks and commands call.

Every business rule about a submission lives here: what is accepted, when it is enqueued, how a
prediction is written back, what a label means, when a stuck one is sent again.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import re
import time
from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from PIL import Image

from ml.preprocess import PreprocessError, preprocess_bytes
from recognizer.models import Submission

log = logging.getLogger(__name__)

_DATA_URL = re.compile(r"^data:(?P<type>[\w/+.-]+)?(;[\w=-]+)*;base64,", re.IGNORECASE)


class SubmissionError(ValueError):
    """Input a client must fix; `code` is stable, `status` is the HTTP status to answer with."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


# --- Accepting a drawing ------------------------------------------------------------------------


def decode_base64_image(value: str) -> bytes:
    """The bytes of a data URL or plain base64 string, within MAX_IMAGE_BYTES."""
    payload = _DATA_URL.sub("", value.strip(), count=1)
    # base64 is 4 characters per 3 bytes: refuse an oversized image before decoding it.
    if len(payload) * 3 // 4 > settings.MAX_IMAGE_BYTES:
        raise image_too_large_error()
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SubmissionError("invalid_base64", "image is not valid base64 or a data URL") from exc


def image_too_large_error() -> SubmissionError:
    return SubmissionError(
        "image_too_large",
        f"the image is over the limit of {settings.MAX_IMAGE_BYTES} bytes",
        status=413,
    )


def validate_strokes(strokes: object) -> object:
    if strokes is None:
        return None
    if not isinstance(strokes, list):
        raise SubmissionError("invalid_strokes", "strokes must be a list of strokes")
    if len(json.dumps(strokes)) > settings.MAX_STROKES_BYTES:
        raise SubmissionError(
            "strokes_too_large",
            f"strokes are over the limit of {settings.MAX_STROKES_BYTES} bytes",
            status=413,
        )
    return strokes


def create_submission(
    *,
    image: bytes,
    source: str = Submission.Source.API,
    strokes: object = None,
    owner: object = None,
) -> Submission:
    """Validate and preprocess a drawing, store it, and enqueue it once the transaction commits.

    The preprocessing runs here, in the request, so a client hears at once that its image is not an
    image or is blank (4xx), and the worker only has to run the network.
    """
    if len(image) > settings.MAX_IMAGE_BYTES:
        raise image_too_large_error()
    strokes = validate_strokes(strokes)
    try:
        preprocessed = preprocess_bytes(image)
    except PreprocessError as exc:
        status = 413 if exc.code == "image_too_large" else 400
        raise SubmissionError(exc.code, str(exc), status=status) from exc

    with transaction.atomic():
        submission = Submission.objects.create(
            image=image,
            content_type=sniff_content_type(image),
            strokes=strokes,
            source=source,
            owner=owner if getattr(owner, "is_authenticated", False) else None,
            model_input=preprocessed.image.tobytes(),
            queued_at=timezone.now(),
        )
        transaction.on_commit(lambda: enqueue(submission_id=submission.id))
    return submission


def sniff_content_type(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


def enqueue(*, submission_id: UUID) -> bool:
    """Send the prediction task; False when the broker is unreachable.

    A broker outage never loses a drawing: the row is stored and stays `queued`, and the sweeper
    sends it again once the broker is back.
    """
    from worker.tasks import predict_submission

    Submission.objects.filter(pk=submission_id).update(
        attempts=F("attempts") + 1, queued_at=timezone.now()
    )
    try:
        predict_submission.apply_async(
            kwargs={"submission_id": str(submission_id)},
            retry=True,
            retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.2},
        )
    except Exception as exc:  # kombu raises several types for an unreachable broker
        log.warning("broker unreachable, %s left queued for the sweeper: %s", submission_id, exc)
        return False
    return True


# --- Answering ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prediction:
    digit: int
    confidence: float
    probabilities: list[float]


def prediction_from_probabilities(probabilities: np.ndarray) -> Prediction:
    rounded = [round(float(p), 6) for p in probabilities]
    digit = int(np.argmax(probabilities))
    return Prediction(digit=digit, confidence=rounded[digit], probabilities=rounded)


def model_input_array(submission: Submission) -> np.ndarray:
    return np.frombuffer(bytes(submission.model_input), dtype=np.uint8).reshape(28, 28)


def start_processing(*, submission_id: UUID | str) -> Submission | None:
    """Claim a submission for prediction; None when there is nothing to do (deleted, or already
    answered: a redelivered task must not predict twice)."""
    now = timezone.now()
    claimed = Submission.objects.filter(
        pk=submission_id, status__in=[Submission.Status.QUEUED, Submission.Status.PROCESSING]
    ).update(status=Submission.Status.PROCESSING, started_at=now)
    if not claimed:
        return None
    return Submission.objects.filter(pk=submission_id).first()


def record_prediction(
    *, submission: Submission, probabilities: np.ndarray, model_version: str
) -> Submission:
    """Write the answer back. Only a submission still in flight is updated, so a late duplicate
    cannot overwrite an answer already given."""
    answer = prediction_from_probabilities(probabilities)
    Submission.objects.filter(
        pk=submission.pk, status__in=[Submission.Status.QUEUED, Submission.Status.PROCESSING]
    ).update(
        status=Submission.Status.DONE,
        prediction=answer.digit,
        confidence=answer.confidence,
        probabilities=answer.probabilities,
        model_version=model_version,
        finished_at=timezone.now(),
        error="",
        error_code="",
    )
    submission.refresh_from_db()
    return submission


def record_failure(*, submission_id: UUID | str, code: str, message: str) -> None:
    Submission.objects.filter(pk=submission_id).exclude(status=Submission.Status.DONE).update(
        status=Submission.Status.FAILED,
        error_code=code,
        error=message[:2000],
        finished_at=timezone.now(),
    )


def predict_one(*, submission_id: UUID | str, predictor: object) -> Submission | None:
    """The whole job of the interactive task, without Celery: claim, run the network, write back.

    `predictor` is anything with `predict_images(uint8 N x 28 x 28) -> N x 10` and a `version`.
    """
    submission = start_processing(submission_id=submission_id)
    if submission is None:
        return None
    if not submission.model_input:
        record_failure(submission_id=submission.pk, code="no_input", message="nothing to predict")
        return None
    probabilities = predictor.predict_images(model_input_array(submission)[None])[0]
    return record_prediction(
        submission=submission, probabilities=probabilities, model_version=predictor.version
    )


# --- Waiting for, labelling and sweeping ------------------------------------------------------


FINISHED = (Submission.Status.DONE, Submission.Status.FAILED)


def wait_for_answer(*, submission: Submission, seconds: float) -> Submission:
    """Hold a GET up to `seconds` (capped by MAX_WAIT_SECONDS) until the answer is there, so the
    page hears it within a few milliseconds instead of at its next poll."""
    deadline = time.monotonic() + min(max(seconds, 0.0), settings.MAX_WAIT_SECONDS)
    while submission.status not in FINISHED and time.monotonic() < deadline:
        # One indexed primary-key read per interval: cheap, and the answer is seen within it.
        time.sleep(settings.WAIT_POLL_SECONDS)
        submission.refresh_from_db(fields=["status"])
    if submission.status in FINISHED:
        submission.refresh_from_db()
    return submission


def label_submission(*, submission: Submission, correct_label: int) -> Submission:
    """Record the user's answer: a flag when it differs from the prediction, else a confirmation."""
    if submission.status != Submission.Status.DONE:
        raise SubmissionError("not_done", "only an answered submission can be labelled", status=409)
    if not isinstance(correct_label, int) or not 0 <= correct_label <= 9:
        raise SubmissionError("invalid_label", "correct_label must be a digit from 0 to 9")
    submission.correct_label = correct_label
    submission.labelled_at = timezone.now()
    submission.save(update_fields=["correct_label", "labelled_at"])
    return submission


def requeue_stuck(*, now: object = None) -> dict[str, int]:
    """Send again what has waited longer than STUCK_AFTER_SECONDS in `queued` or `processing`
    (the broker was down at submit time, a message was lost, a worker died); give up after
    MAX_PREDICTION_ATTEMPTS with a clear error instead of trying for ever."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.STUCK_AFTER_SECONDS)
    stuck = Submission.objects.filter(
        status__in=[Submission.Status.QUEUED, Submission.Status.PROCESSING],
        queued_at__lt=cutoff,
        batch__isnull=True,
    )
    given_up = 0
    requeued = 0
    for submission_id, attempts in stuck.values_list("pk", "attempts")[:500]:
        if attempts >= settings.MAX_PREDICTION_ATTEMPTS:
            record_failure(
                submission_id=submission_id,
                code="gave_up",
                message=f"no answer after {attempts} attempts",
            )
            given_up += 1
        else:
            Submission.objects.filter(pk=submission_id).update(status=Submission.Status.QUEUED)
            requeued += enqueue(submission_id=submission_id)
    return {"requeued": requeued, "given_up": given_up}


def model_input_png(submission: Submission) -> bytes:
    """The 28x28 image the model saw, as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(model_input_array(submission), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()
