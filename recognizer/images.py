"""Accepting an image from a client: the size rule, base64 and data URLs, the allowed formats.

Drawings (recognizer/services.py) and batch items (recognizer/batches/parsing.py) both go
through these, so each rule is written once.
"""

from __future__ import annotations

import base64
import binascii
import re

from django.conf import settings

from recognizer.errors import DomainError

_DATA_URL = re.compile(r"^data:(?P<type>[\w/+.-]+)?(;[\w=-]+)*;base64,", re.IGNORECASE)
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp")


def image_too_large(size: int | None = None) -> DomainError:
    """The error for an image over MAX_IMAGE_BYTES (`size`: its bytes, when known)."""
    got = f" ({size} bytes)" if size is not None else ""
    return DomainError(
        "image_too_large", f"the image is over the limit of {settings.MAX_IMAGE_BYTES} bytes{got}"
    )


def over_image_limit(size: int) -> bool:
    """The size rule: an image is at most MAX_IMAGE_BYTES, checked before it is read or decoded."""
    return size > settings.MAX_IMAGE_BYTES


def check_image_size(size: int) -> None:
    if over_image_limit(size):
        raise image_too_large(size)


def decode_base64_image(value: str) -> bytes:
    """The bytes of a data URL or plain base64 string, within MAX_IMAGE_BYTES."""
    payload = _DATA_URL.sub("", value.strip(), count=1)
    # base64 is 4 characters per 3 bytes: refuse an oversized image before decoding it.
    check_image_size(len(payload) * 3 // 4)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DomainError("invalid_base64", "image is not valid base64 or a data URL") from exc


def sniff_content_type(data: bytes) -> str:
    """The image type from the first bytes (never from a name or a client's header)."""
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"
