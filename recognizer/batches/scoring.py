"""Scoring one chunk of a batch job (the worker's half): preprocess each item, run the model once
on all that survived, write every answer and failure in bulk, add to the job's counters.

Idempotent: only items still queued (or left `processing` by a worker that died) are scored, and
the counters grow by exactly the rows this run moved, so a redelivered chunk never counts twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from uuid import UUID

import numpy as np
from celery.exceptions import SoftTimeLimitExceeded
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from ml.preprocess import (
    InvalidImage,
    PreprocessedBatch,
    PreprocessError,
    preprocess_arrays,
    preprocess_many,
)
from recognizer import answers
from recognizer.answers import Predictor
from recognizer.batches.jobs import add_progress
from recognizer.batches.parsing import ARRAY_CONTENT_TYPE, array_from_npy
from recognizer.limits import image_limits
from recognizer.models import BatchJob, Submission

log = logging.getLogger(__name__)

# A batch answer also stores the 28x28 input, which the request did not compute.
BATCH_ANSWER_FIELDS = (*answers.ANSWER_FIELDS, "model_input")


@dataclass(frozen=True)
class ChunkResult:
    done: int = 0
    failed: int = 0


def model_inputs(items: list[Submission]) -> PreprocessedBatch:
    """The 28x28 uint8 inputs of a chunk's items through the one canonical preprocessing, framed
    in batches: array rows all at once (no image codec), images decoded then framed together. An
    item that fails gets its error, and the rest go on."""
    limits = image_limits()
    images = np.zeros((len(items), 28, 28), dtype=np.uint8)
    errors: list[PreprocessError | None] = [None] * len(items)

    def take(indices: list[int], batch: PreprocessedBatch) -> None:
        images[indices] = batch.images
        for index, error in zip(indices, batch.errors, strict=True):
            errors[index] = error

    arrays = [i for i, item in enumerate(items) if item.content_type == ARRAY_CONTENT_TYPE]
    by_shape: dict[tuple[int, ...], list[tuple[int, np.ndarray]]] = {}
    for index in arrays:
        try:
            pixels = array_from_npy(bytes(items[index].image))
        except ValueError as exc:
            errors[index] = InvalidImage(f"the stored array could not be read: {exc}")
            continue
        by_shape.setdefault(pixels.shape, []).append((index, pixels))
    for group in by_shape.values():
        try:
            take(
                [i for i, _ in group],
                preprocess_arrays(np.stack([p for _, p in group]), limits=limits),
            )
        except PreprocessError as exc:  # the shape itself is refused: every row of it
            for index, _ in group:
                errors[index] = exc
    array_set = set(arrays)
    others = [i for i in range(len(items)) if i not in array_set]
    try:
        take(others, preprocess_many([bytes(items[i].image) for i in others], limits=limits))
    except SoftTimeLimitExceeded:
        # The chunk ran out of time, not an item: nothing is recorded against any, the task
        # fails and the stalled-batch sweeper sends the chunk again.
        raise
    except Exception:  # a file that breaks the decoder in an unforeseen way: find it, alone
        log.exception("a chunk's images could not be preprocessed together; one by one")
        for index in others:
            try:
                take([index], preprocess_many([bytes(items[index].image)], limits=limits))
            except SoftTimeLimitExceeded:
                raise
            except Exception as exc:
                errors[index] = InvalidImage(f"the image could not be read: {exc}")
    return PreprocessedBatch(images=images, errors=errors)


def score_chunk(
    *, batch_id: UUID | str, start: int, stop: int, predictor: Predictor
) -> ChunkResult:
    """Preprocess the chunk's items in batches, run the model once on all that survived, write
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

    batch = model_inputs(items)
    scored = [item for item, error in zip(items, batch.errors, strict=True) if error is None]
    failed: list[Submission] = []
    for item, error in zip(items, batch.errors, strict=True):
        if error is not None:
            answers.fail(item, code=error.code, message=str(error))
            failed.append(item)

    if scored:
        inputs = batch.images[batch.ok]
        probabilities = predictor.predict_images(inputs)
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
