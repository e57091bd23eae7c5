"""What a client may send, in one place: body sizes before reading, JSON depth before recursing,
image size before decoding, the shape of pen strokes. Every limit is a setting (README, Security).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable

from django.conf import settings

from ml.preprocess import ImageLimits
from recognizer.errors import DomainError


def image_limits() -> ImageLimits:
    return ImageLimits(
        max_pixels=settings.PREPROCESS_MAX_PIXELS, max_side=settings.PREPROCESS_MAX_SIDE
    )


def check_content_length(meta: dict, *, limit: int, code: str) -> None:
    """Refuse a body over `limit` from its Content-Length, before a byte of it is read or parsed.
    (A body without one is read as empty by Django's WSGI handler, so it cannot slip past.)"""
    try:
        length = int(meta.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise DomainError("invalid", "Content-Length is not a number") from None
    if length > limit:
        raise DomainError(code, f"the request body is over the limit of {limit} bytes")


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def loads(text: str | bytes) -> object:
    """json.loads without NaN/Infinity (not JSON; PostgreSQL's jsonb refuses them) and with a
    depth limit (JSON_MAX_DEPTH), so 5,000 nested brackets are a ValueError, not a RecursionError
    deep inside the decoder or in whatever walks the result later."""
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise ValueError(f"nested deeper than {settings.JSON_MAX_DEPTH} levels") from None
    if depth(value) > settings.JSON_MAX_DEPTH:
        raise ValueError(f"nested deeper than {settings.JSON_MAX_DEPTH} levels")
    return value


def depth(value: object) -> int:
    """Nesting depth of lists and objects, without recursion (a scalar is 0, `[]` is 1)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        node, level = stack.pop()
        children: Iterable[object]
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children if isinstance(child, dict | list))
    return deepest


def check_strokes_bytes(size: int) -> None:
    """The strokes' size rule (MAX_STROKES_BYTES of JSON), checked on a client's JSON text before
    it is parsed and on the strokes themselves before they are stored."""
    if size > settings.MAX_STROKES_BYTES:
        raise DomainError(
            "strokes_too_large", f"strokes are over the limit of {settings.MAX_STROKES_BYTES} bytes"
        )


def validate_strokes(strokes: object) -> list | None:
    """Pen strokes as the page sends them: a list of strokes, each a list of points, each a list
    of 2 or 3 finite numbers (x, y and an optional time), within MAX_STROKES_BYTES as JSON.
    A wrong shape is `invalid_strokes`, too many `strokes_too_large`."""
    if strokes is None:
        return None
    if not isinstance(strokes, list):
        raise DomainError("invalid_strokes", "strokes must be a list of strokes")
    if len(strokes) > settings.MAX_STROKES:
        raise DomainError("strokes_too_large", f"at most {settings.MAX_STROKES} strokes")
    points = 0
    for i, stroke in enumerate(strokes):
        if not isinstance(stroke, list):
            raise DomainError("invalid_strokes", f"stroke {i} must be a list of points")
        points += len(stroke)
        if points > settings.MAX_STROKE_POINTS:
            raise DomainError(
                "strokes_too_large",
                f"at most {settings.MAX_STROKE_POINTS} points over all strokes",
            )
        for point in stroke:
            if not (
                isinstance(point, list)
                and 2 <= len(point) <= 3
                and all(_finite_number(c) for c in point)
            ):
                raise DomainError(
                    "invalid_strokes", f"stroke {i}: a point is a list of 2 or 3 numbers [x, y, t]"
                )
    check_strokes_bytes(len(json.dumps(strokes)))
    return strokes


def _finite_number(value: object) -> bool:
    # bool is an int in Python, not a coordinate; huge ints would overflow a float column later.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) if isinstance(value, float) else abs(value) < 2**53
