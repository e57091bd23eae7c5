"""Every API error has one shape: {"code": "<stable code>", "message": "<for people>", "errors"?}.

Clients branch on `code`; `errors` keeps DRF's per-field detail when there is some.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from recognizer.services import SubmissionError


def exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, SubmissionError):
        return Response({"code": exc.code, "message": exc.message}, status=exc.status)
    if isinstance(exc, RequestDataTooBig):
        return Response(
            {"code": "request_too_large", "message": "the request body is too large"},
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, OperationalError | InterfaceError):
        # The database is down or refuses connections (a locked SQLite counts too): a client
        # should come back, not read a server error.
        return Response(
            {"code": "database_unavailable", "message": "the database is unavailable; try again"},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(settings.DATABASE_RETRY_AFTER)},
        )
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    code, message = _first_error(response.data, getattr(exc, "default_code", "error"))
    body = {"code": code, "message": message}
    if isinstance(response.data, dict) and set(response.data) != {"detail"}:
        body["errors"] = response.data
    response.data = body
    return response


def _first_error(detail: object, fallback: str, field: str = "") -> tuple[str, str]:
    """The code and message of the first error in DRF's nested detail."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = "" if key in ("detail", "non_field_errors") else key
            return _first_error(value, fallback, name or field)
    if isinstance(detail, list) and detail:
        return _first_error(detail[0], fallback, field)
    code = getattr(detail, "code", None) or fallback
    text = str(detail)
    return code, f"{field}: {text}" if field else text
