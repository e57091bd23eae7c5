"""The domain of a drawing: plain keyword-only functions that views, tasks and commands call.

Every business rule about a submission lives here or in the modules it names: what is accepted
(recognizer/images.py), when it is enqueued (recognizer/queue.py), how an answer is written back
(recognizer/answers.py), what a label means (recognizer/models.py), when a stuck one is sent again.
"""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from uuid import UUID, uuid4

import numpy as np
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone
from PIL import Image

from ml.preprocess import PreprocessError, preprocess_bytes
from recognizer import answer_signal, answers, limits, queue
from recognizer.answers import FINISHED, Predictor
from recognizer.errors import DomainError
from recognizer.images import check_image_size, sniff_content_type
from recognizer.models import Submission, check_digit, signed_in

if TYPE_CHECKING:
    from django.contrib.auth.models import AnonymousUser, User

# --- Accepting a drawing ------------------------------------------------------------------------


def create_submission(
    *,
    image: bytes,
    source: str = Submission.Source.API,
    strokes: object = None,
    owner: User | AnonymousUser | None = None,
    drawing: UUID | None = None,
) -> Submission:
    """Validate and preprocess a drawing, store it, and enqueue it once the transaction commits.

    The preprocessing runs here, in the request, so a client hears at once that its image is not an
    image or is blank (4xx), and the worker only has to run the network. `drawing` is the page's id
    for the drawing this is a state of: the earlier submissions of that drawing are marked
    superseded (kept, but not reviewed or trained on unless labelled). One commit in all.
    """
    check_image_size(len(image))
    strokes = limits.validate_strokes(strokes)
    try:
        preprocessed = preprocess_bytes(image, limits=limits.image_limits())
    except PreprocessError as exc:
        raise DomainError(exc.code, str(exc)) from exc

    with transaction.atomic():
        submission = Submission.objects.create(
            image=image,
            content_type=sniff_content_type(image),
            strokes=strokes,
            source=source,
            owner=signed_in(owner),
            model_input=preprocessed.image.tobytes(),
            queued_at=timezone.now(),
            attempts=1,  # counted here, in the same commit, rather than by enqueue()
            drawing_uuid=drawing,
        )
        if drawing is not None:
            Submission.objects.filter(drawing_uuid=drawing, superseded=False).exclude(
                pk=submission.pk
            ).update(superseded=True)
        transaction.on_commit(
            lambda: queue.send(queue.PREDICT_SUBMISSION, submission_id=submission.id)
        )
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
    return np.frombuffer(bytes(submission.model_input or b""), dtype=np.uint8).reshape(28, 28)


# What an answer, or a failure, changes on a row: what the worker writes and all that a waiting
# request reads back, from the answer signal or from the row.
ANSWERED_FIELDS = [*answers.ANSWER_FIELDS, "started_at"]
FAILED_FIELDS = [*answers.FAILURE_FIELDS, "started_at"]
# The field names an answer signal's payload may have (sorted), and the fields that read them.
_PAYLOAD_FIELDS = (sorted(ANSWERED_FIELDS), sorted(FAILED_FIELDS))
_FIELDS = {field.name: field for field in Submission._meta.concrete_fields}


def predict_one(*, submission_id: UUID | str, predictor: Predictor) -> Submission | None:
    """One submission through `predict_many`; the row as answered, or None (nothing to do)."""
    answered = predict_many(submission_ids=[submission_id], predictor=predictor)
    if not answered:
        return None
    answered[0].refresh_from_db()
    return answered[0] if answered[0].status == Submission.Status.DONE else None


def predict_many(*, submission_ids: Sequence[UUID | str], predictor: Predictor) -> list[Submission]:
    """The whole job of the interactive worker, without Celery: read the submissions still in
    flight, run the network once over all of them, write every answer in one commit, then wake
    whoever waits for them, handing them the answers when those are what the rows hold. Returns
    the submissions it answered or failed.

    Submissions already answered (a redelivered message) or deleted are skipped, so running the
    same ids twice changes nothing the second time.
    """
    ids = list(dict.fromkeys(str(pk) for pk in submission_ids))
    started_at = timezone.now()
    # No separate claim: the answers below change only rows still in flight, so a duplicate run
    # can do nothing worse than compute the same answer twice; one commit per batch, not two.
    rows = _in_flight_rows(ids)
    for row in rows:
        row.started_at = started_at
    scored = [row for row in rows if row.model_input]
    missing = [row for row in rows if not row.model_input]
    if scored:
        inputs = np.stack([model_input_array(row) for row in scored])
        for row, probabilities in zip(scored, predictor.predict_images(inputs), strict=True):
            answers.answer(
                row,
                probabilities=probabilities,
                model_version=predictor.version,
                digit_threshold=predictor.digit_threshold,
            )
    for row in missing:
        answers.fail(row, code="no_input", message="nothing to predict")
    if not rows:
        return []
    written = [(row, ANSWERED_FIELDS) for row in scored] + [(row, FAILED_FIELDS) for row in missing]
    with transaction.atomic():
        changed = answers.save_in_flight(scored, ANSWERED_FIELDS)
        changed += answers.save_in_flight(missing, FAILED_FIELDS)
    # Every row changed: each holds exactly what this run wrote, and a written answer is never
    # rewritten, so the signal can carry it and the waiting request need not read the row (that
    # read was a tenth of the web process's CPU). Fewer: another run (a redelivered message)
    # answered some row first and the row keeps its answer, not ours; plain tokens then, for all
    # (which rows lost is not worth a query), and the waiters read the rows.
    answer_signal.announce(
        (row.pk for row, _ in written),
        [_answer_payload(row, fields) for row, fields in written] if changed == len(rows) else None,
    )
    return rows


def _in_flight_rows(ids: Sequence[str]) -> list[Submission]:
    """The submissions of `ids` still in flight, with only their pk and model input loaded.

    The SQL is compiled once per process, database vendor and batch size: building it through the
    ORM on every batch cost four times the query itself (250 us against 56 in process)."""
    sql, statuses = _in_flight_sql(connection.vendor, len(ids))
    pk = Submission._meta.pk
    assert pk is not None
    params = [pk.get_db_prep_value(i, connection) for i in ids] + list(statuses)
    return list(Submission.objects.raw(sql, params))


@functools.cache
def _in_flight_sql(vendor: str, count: int) -> tuple[str, tuple]:
    placeholder_ids = [uuid4() for _ in range(count)]
    queryset = (
        Submission.objects.filter(pk__in=placeholder_ids)
        .filter(status__in=answers.IN_FLIGHT)
        .only("pk", "model_input")
        .order_by()
    )
    sql, params = queryset.query.sql_with_params()
    statuses = tuple(params[count:])
    assert statuses == answers.IN_FLIGHT  # the ids come first, then the in-flight statuses
    return sql, statuses


def _answer_payload(row: Submission, fields: Sequence[str]) -> str | None:
    """The `fields` of a row just written, as compact JSON for the answer signal (datetimes in ISO
    8601, to the microsecond as stored); None, for a plain token, when JSON would not give back
    what the database holds (NaN, which SQLite stores as NULL) or cannot hold a value at all."""
    values = {name: getattr(row, name) for name in fields}
    try:
        return json.dumps(
            {name: v.isoformat() if isinstance(v, datetime) else v for name, v in values.items()},
            separators=(",", ":"),
            allow_nan=False,
        )
    except (TypeError, ValueError):
        return None


# --- Waiting for, labelling and sweeping ------------------------------------------------------


def wait_for_answer(*, submission: Submission, seconds: float) -> Submission:
    """Hold a request up to `seconds` (capped by MAX_WAIT_SECONDS) until the answer is there.

    The request blocks on the worker's Redis signal (recognizer/answer_signal.py), so it wakes
    within a millisecond of the answer. The signal usually carries the answer (`predict_many`),
    which is then set on the instance without a query; the row is read only for a plain token, a
    signal it cannot use, and every WAIT_RECHECK_SECONDS in case a signal was lost."""
    seconds = min(max(seconds, 0.0), settings.MAX_WAIT_SECONDS)
    if submission.status in FINISHED or seconds <= 0:
        return submission

    def finished(element: bytes | None) -> bool:
        if not _apply_answer_payload(submission, element):
            submission.refresh_from_db(fields=ANSWERED_FIELDS)
        return submission.status in FINISHED

    answer_signal.wait(submission.pk, seconds, finished)
    return submission


def _apply_answer_payload(submission: Submission, element: bytes | None) -> bool:
    """Set on the instance the finished answer a signal carries, as the ORM would read it from the
    row; False, changing nothing, for no element, the plain token or anything else (malformed, or
    from another version of this code): the caller reads the row then."""
    if element is None or element == answer_signal.TOKEN:
        return False
    try:
        values = json.loads(element)
        # All the fields of an answer or of a failure, nothing else: never half an answer.
        if not isinstance(values, dict) or sorted(values) not in _PAYLOAD_FIELDS:
            return False
        # Through each field's to_python, giving the types the ORM reads from the row: the ISO
        # strings become aware datetimes; a value its field cannot take raises, and is not shown.
        converted = {name: _FIELDS[name].to_python(v) for name, v in values.items()}
    except (ValueError, TypeError, ValidationError):
        return False
    if converted["status"] not in FINISHED:
        return False
    for name, value in converted.items():
        setattr(submission, name, value)
    return True


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
        # Only if still in flight: a worker may have answered it since the list was read, and a
        # finished row must never go back to the queue (it would be answered a second time).
        if Submission.objects.filter(pk=submission_id, status__in=answers.IN_FLIGHT).update(
            status=Submission.Status.QUEUED
        ):
            requeued += enqueue(submission_id=submission_id)
    return {"requeued": requeued, "given_up": given_up}


def model_input_png(submission: Submission) -> bytes:
    """The 28x28 image the model saw, as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(model_input_array(submission), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()
