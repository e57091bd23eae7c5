"""The domain of a drawing: plain keyword-only functions that views, tasks and commands call.

Every business rule about a submission lives here or in the modules it names: what is accepted
(recognizer/images.py), when it is enqueued (recognizer/queue.py), how an answer is written back
(recognizer/answers.py), what a label means (recognizer/models.py), when a stuck one is sent again.
"""

from __future__ import annotations

import io
import json
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from uuid import UUID

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from PIL import Image

from ml.preprocess import PreprocessError, preprocess_bytes
from recognizer import answers, queue
from recognizer.answers import FINISHED, Predictor
from recognizer.errors import DomainError
from recognizer.images import check_image_size, sniff_content_type
from recognizer.models import Submission, check_digit

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

# --- Accepting a drawing ------------------------------------------------------------------------


def validate_strokes(strokes: object) -> object:
    if strokes is None:
        return None
    if not isinstance(strokes, list):
        raise DomainError("invalid_strokes", "strokes must be a list of strokes")
    if len(json.dumps(strokes)) > settings.MAX_STROKES_BYTES:
        raise DomainError(
            "strokes_too_large", f"strokes are over the limit of {settings.MAX_STROKES_BYTES} bytes"
        )
    return strokes


def create_submission(
    *,
    image: bytes,
    source: str = Submission.Source.API,
    strokes: object = None,
    owner: AbstractBaseUser | AnonymousUser | None = None,
) -> Submission:
    """Validate and preprocess a drawing, store it, and enqueue it once the transaction commits.

    The preprocessing runs here, in the request, so a client hears at once that its image is not an
    image or is blank (4xx), and the worker only has to run the network.
    """
    check_image_size(len(image))
    strokes = validate_strokes(strokes)
    try:
        preprocessed = preprocess_bytes(image)
    except PreprocessError as exc:
        raise DomainError(exc.code, str(exc)) from exc

    with transaction.atomic():
        submission = Submission.objects.create(
            image=image,
            content_type=sniff_content_type(image),
            strokes=strokes,
            source=source,
            owner=owner if owner is not None and owner.is_authenticated else None,
            model_input=preprocessed.image.tobytes(),
            queued_at=timezone.now(),
        )
        transaction.on_commit(lambda: enqueue(submission_id=submission.id))
    return submission


def enqueue(*, submission_id: UUID | str) -> bool:
    """Count an attempt and send the prediction task; False when the broker is unreachable.

    A broker outage never loses a drawing: the row is stored and stays `queued`, and the sweeper
    sends it again once the broker is back.
    """
    Submission.objects.filter(pk=submission_id).update(
        attempts=F("attempts") + 1, queued_at=timezone.now()
    )
    return queue.send(queue.PREDICT_SUBMISSION, submission_id=submission_id)


# --- Answering ----------------------------------------------------------------------------------


def model_input_array(submission: Submission) -> np.ndarray:
    return np.frombuffer(bytes(submission.model_input), dtype=np.uint8).reshape(28, 28)


def start_processing(*, submission_id: UUID | str) -> Submission | None:
    """Claim a submission for prediction; None when there is nothing to do (deleted, or already
    answered: a redelivered task must not predict twice)."""
    now = timezone.now()
    claimed = Submission.objects.filter(pk=submission_id, status__in=answers.IN_FLIGHT).update(
        status=Submission.Status.PROCESSING, started_at=now
    )
    if not claimed:
        return None
    return Submission.objects.filter(pk=submission_id).first()


def record_prediction(
    *,
    submission: Submission,
    probabilities: np.ndarray,
    model_version: str,
    digit_threshold: float,
) -> Submission:
    """Write the answer back. Only a submission still in flight is updated, so a late duplicate
    cannot overwrite an answer already given."""
    answers.answer(
        submission,
        probabilities=probabilities,
        model_version=model_version,
        digit_threshold=digit_threshold,
    )
    answers.save_in_flight([submission], answers.ANSWER_FIELDS)
    submission.refresh_from_db()
    return submission


def record_failure(*, submission: Submission, code: str, message: str) -> None:
    answers.fail(submission, code=code, message=message)
    answers.save_in_flight([submission], answers.FAILURE_FIELDS)


def predict_one(*, submission_id: UUID | str, predictor: Predictor) -> Submission | None:
    """The whole job of the interactive task, without Celery: claim, run the network, write back."""
    submission = start_processing(submission_id=submission_id)
    if submission is None:
        return None
    if not submission.model_input:
        record_failure(submission=submission, code="no_input", message="nothing to predict")
        return None
    probabilities = predictor.predict_images(model_input_array(submission)[None])[0]
    return record_prediction(
        submission=submission,
        probabilities=probabilities,
        model_version=predictor.version,
        digit_threshold=predictor.digit_threshold,
    )


# --- Waiting for, labelling and sweeping ------------------------------------------------------


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
        raise DomainError("not_done", "only an answered submission can be labelled")
    submission.correct_label = check_digit(correct_label)
    submission.labelled_at = timezone.now()
    submission.save(update_fields=["correct_label", "labelled_at"])
    return submission


def requeue_stuck(*, now: datetime | None = None) -> dict[str, int]:
    """Send again what has waited longer than STUCK_AFTER_SECONDS in `queued` or `processing`
    (the broker was down at submit time, a message was lost, a worker died); give up after
    MAX_PREDICTION_ATTEMPTS with a clear error instead of trying for ever."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.STUCK_AFTER_SECONDS)
    stuck = Submission.objects.filter(
        status__in=answers.IN_FLIGHT, queued_at__lt=cutoff, batch__isnull=True
    )
    given_up = answers.give_up(stuck)
    requeued = 0
    for submission_id in stuck.values_list("pk", flat=True)[:500]:
        Submission.objects.filter(pk=submission_id).update(status=Submission.Status.QUEUED)
        requeued += enqueue(submission_id=submission_id)
    return {"requeued": requeued, "given_up": given_up}


def model_input_png(submission: Submission) -> bytes:
    """The 28x28 image the model saw, as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(model_input_array(submission), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()
