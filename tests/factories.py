"""Small helpers that make what the tests send: real drawings of real digits."""

from __future__ import annotations

import base64
import io
from functools import cache

import factory
import numpy as np
from PIL import Image

from ml.data import load_split
from ml.drawn import render_drawn
from recognizer.models import Submission


@cache
def mnist_test() -> tuple[np.ndarray, np.ndarray]:
    split = load_split("test")
    return split.images, split.labels


def mnist_digit(digit: int, nth: int = 0) -> np.ndarray:
    """The nth 28x28 MNIST test image of `digit` (white on black)."""
    images, labels = mnist_test()
    return images[np.flatnonzero(labels == digit)[nth]]


def digit_png(digit: int, style: str = "large", nth: int = 0) -> bytes:
    """A 280x280 PNG of a real handwritten `digit`, dark ink on white, as the page sends it."""
    return render_drawn(mnist_digit(digit, nth), style)


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def blank_png(size: int = 280, colour: str = "white") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="PNG")
    return buffer.getvalue()


class SubmissionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Submission

    image = factory.LazyFunction(lambda: digit_png(3))
    content_type = "image/png"
    model_input = factory.LazyFunction(lambda: mnist_digit(3).tobytes())
