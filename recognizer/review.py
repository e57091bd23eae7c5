"""Staff review: the label training will use for a submission, or its exclusion.

The admin's bulk actions call these; each records who reviewed and when. A user's label is only a
suggestion until a reviewer accepts it: one person flagging nonsense must not teach the model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from recognizer.models import Submission, check_digit

if TYPE_CHECKING:
    from django.contrib.auth.models import User


def _stamp(reviewer: User | None) -> dict[str, Any]:
    return {"reviewed_by": reviewer, "reviewed_at": timezone.now()}


def accept_user_labels(*, submissions: QuerySet[Submission], reviewer: User | None) -> int:
    """Take the user's label as the reviewed label; submissions nobody labelled are left alone."""
    return submissions.filter(correct_label__isnull=False).update(
        reviewed_label=F("correct_label"), excluded=False, **_stamp(reviewer)
    )


def set_label(*, submissions: QuerySet[Submission], label: int, reviewer: User | None) -> int:
    check_digit(label)
    return submissions.filter(model_input__isnull=False).update(
        reviewed_label=label, excluded=False, **_stamp(reviewer)
    )


def exclude(*, submissions: QuerySet[Submission], reviewer: User | None) -> int:
    """Not a digit, or abuse: never trained on, never counted in live accuracy."""
    return submissions.update(reviewed_label=None, excluded=True, **_stamp(reviewer))


def needs_review_q() -> Q:
    """Unreviewed, and either labelled by the user or answered with low confidence. A drawing
    that a later stroke superseded (half a 4, say) is reviewed only if someone labelled it, and so
    is one the model judged not a digit (a scribble, a letter: low confidence by nature)."""
    return Q(reviewed_at__isnull=True) & (
        Q(correct_label__isnull=False)
        | (
            Q(
                confidence__lt=settings.REVIEW_LOW_CONFIDENCE,
                status=Submission.Status.DONE,
                superseded=False,
            )
            & ~Q(is_digit=False)
        )
    )
