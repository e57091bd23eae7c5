"""Who may label a submission: only the client that sent it.

A signed-in client (token or session) that owns the submission may; anyone else needs the
submission's label token, which only the answer to its POST carries (the drawing page keeps it in
memory). Knowing a submission's URL is not enough, so labels cannot be sprayed over other people's
drawings. The token is an HMAC of the id under SECRET_KEY: nothing to store, nothing to leak from
the database; rotating SECRET_KEY voids the tokens of drawings not yet labelled.

A user's label remains a suggestion: only a reviewer's label is trained on (recognizer/review.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import UUID

from django.utils.crypto import constant_time_compare, salted_hmac

from recognizer.models import Submission, signed_in

if TYPE_CHECKING:
    from django.contrib.auth.models import AnonymousUser, User

_SALT = "recognizer.label-token"


def label_token(submission_id: UUID | str) -> str:
    return salted_hmac(_SALT, str(submission_id), algorithm="sha256").hexdigest()


def may_label(
    *, submission: Submission, user: User | AnonymousUser | None, token: str | None
) -> bool:
    owner_id = submission.owner_id
    signed = signed_in(user)
    if owner_id is not None and signed is not None and signed.pk == owner_id:
        return True
    return bool(token) and constant_time_compare(str(token), label_token(submission.pk))
