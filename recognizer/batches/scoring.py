"""Scoring one chunk of a batch job (the worker's half): preprocess each item, run the model once
on all that survived, write every answer and failure in bulk, add to the job's counters.

Idempotent: only items still queued (or left `processing` by a worker that died) are scored, and
the counters grow by exactly the rows this run moved, so a redelivered chunk never counts twice.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from uuid import UUID

import numpy as np
from celery.exceptions import SoftTimeLimitExceeded
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from PIL import Image

from ml.preprocess import PreprocessError, preprocess_array, preprocess_bytes
from recognizer import answers
from recognizer.answers import Predictor
from recognizer.batches.jobs import add_progress
from recognizer.batches.parsing import ARRAY_CONTENT_TYPE
from recognizer.limits import image_limits
from recognizer.models import BatchJob, Submission

log = logging.getLogger(__name__)

# A batch answer also stores the 28x28 input, which the request did not compute.
BATCH_ANSWER_FIELDS = (*answers.ANSWER_FIELDS, "model_input")


@dataclass(frozen=True)
class ChunkResult:
    done: int = 0
    failed: int = 0


def model_input_for(*, image: bytes, content_type: str) -> np.ndarray:
    """The 28x28 uint8 image the model sees, through the one canonical preprocessing."""
    limits = image_limits()
    if content_type == ARRAY_CONTENT_TYPE:
        with Image.open(io.BytesIO(image)) as png:
            limits.check(*png.size)
            return preprocess_array(np.asarray(png), limits=limits).image
    return preprocess_bytes(image, limits=limits).image


def score_chunk(
    *, batch_id: UUID | str, start: int, stop: int, predictor: Predictor
) -> ChunkResult:
    """Preprocess the chunk's items one by one, run the model once on all that survived, write
    every answer with bulk updates and add to the job's counters in the same transaction."""
    batch_id = UUID(str(batch_id))  # the broker carries it as a string
    chunk = Submission.objects.filter(
        batch_id=batch_id, batch_index__gte=start, batch_index__lt=stop
    )
    # A chunk that killed its worker this many times is given up rather than tried for ever.
    given_up = answers.give_up(chunk)
    claimed = chunk.filter(status__in=answers.IN_FLIGHT).update(
        status=Submission.Status.PROCESSING, started_at=timezone.now(), attempts=F("attempts") + 1
    )
    if claimed:
        BatchJob.objects.filter(pk=batch_id, status=BatchJob.Status.QUEUED).update(
            status=BatchJob.Status.RUNNING
        )
    items = list(
        chunk.filter(status=Submission.Status.PROCESSING)
        .only("pk", "image", "content_type")
        .order_by("batch_index")
    )

    scored: list[Submission] = []
    inputs: list[np.ndarray] = []
    failed: list[Submission] = []
    for item in items:
        try:
            inputs.append(model_input_for(image=bytes(item.image), content_type=item.content_type))
            scored.append(item)
        except PreprocessError as exc:
            answers.fail(item, code=exc.code, message=str(exc))
            failed.append(item)
        except SoftTimeLimitExceeded:
            # The chunk ran out of time, not this item: nothing is recorded against it, the task
            # fails and the stalled-batch sweeper sends the chunk again.
            raise
        except Exception as exc:  # one odd file must not sink the chunk (and loop on redelivery)
            log.exception("batch item %s could not be preprocessed", item.pk)
            answers.fail(item, code="invalid_image", message=f"the image could not be read: {exc}")
            failed.append(item)

    if scored:
        probabilities = predictor.predict_images(np.stack(inputs))
        for item, image, row in zip(scored, inputs, probabilities, strict=True):
            answers.answer(
                item,
                probabilities=row,
                model_version=predictor.version,
                digit_threshold=predictor.digit_threshold,
            )
            item.model_input = image.tobytes()

    with transaction.atomic():
        done_count = answers.save_in_flight(scored, BATCH_ANSWER_FIELDS)
        failed_count = answers.save_in_flight(failed, answers.FAILURE_FIELDS) + given_up
        if done_count or failed_count:
            add_progress(batch_id=batch_id, done=done_count, failed=failed_count)
    return ChunkResult(done=done_count, failed=failed_count)
