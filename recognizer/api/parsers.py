"""Request parsers that read no more than a limit and parse JSON with a depth limit."""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser

from recognizer import limits
from recognizer.errors import DomainError


class JSONParser(BaseParser):
    """DRF's JSONParser reads the whole stream, whatever its size, and recurses as deep as the
    document nests (a RecursionError is an HTML 500). This one reads at most `max_bytes()` and
    answers 400 parse_error for deep nesting, NaN or Infinity."""

    media_type = "application/json"

    def max_bytes(self) -> int:
        return settings.DATA_UPLOAD_MAX_MEMORY_SIZE

    def too_large(self) -> DomainError:
        limit = self.max_bytes()
        return DomainError(
            "request_too_large", f"the request body is over the limit of {limit} bytes"
        )

    def parse(
        self,
        stream: IO[Any] | None,
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:  # whatever the JSON holds; the callers check its shape
        limit = self.max_bytes()
        body = stream.read(limit + 1) if stream is not None else b""
        if len(body) > limit:
            raise self.too_large()
        try:
            return limits.loads(body)
        except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError included
            raise ParseError(f"JSON parse error: {exc}") from exc
