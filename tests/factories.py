"""Small helpers: real drawings of real digits, a fake model, and a recorder of sent tasks."""

from __future__ import annotations

import base64
import io

import factory
import numpy as np
import pytest
from PIL import Image

from digitsite.celery import app as celery_app
from ml.drawn import render_drawn
from recognizer.models import Submission
from tests.mnist_sample import sample_split


def mnist_test() -> tuple[np.ndarray, np.ndarray]:
    """The first 2,000 MNIST test digits and labels (the committed sample: any clone has them)."""
    split = sample_split("test")
    return split.images, split.labels


def mnist_digit(digit: int, nth: int = 0) -> np.ndarray:
    """The nth 28x28 MNIST test image of `digit` (white on black)."""
    images, labels = mnist_test()
    return images[np.flatnonzero(labels == digit)[nth]]


def digit_png(digit: int, style: str = "large", nth: int = 0) -> bytes:
    """A 280x280 PNG of a real handwritten `digit`, dark ink on white, as the page sends it."""
    return render_drawn(mnist_digit(digit, nth), style)


def npy(array: np.ndarray) -> bytes:
    """`array` as the bytes of a .npy file."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


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


class FakePredictor:
    """Answers `digit` for every image and remembers the shape of every call. With `flat=True`
    its probabilities are nearly uniform: the answer to something that is not a digit."""

    version = "fake-v1"
    digit_threshold = 0.5

    def __init__(self, digit: int = 7, *, flat: bool = False) -> None:
        self.digit = digit
        self.flat = flat
        self.calls: list[tuple[int, ...]] = []

    def predict_images(self, images: np.ndarray) -> np.ndarray:
        self.calls.append(images.shape)
        if self.flat:
            probabilities = np.full((len(images), 10), 0.095, dtype=np.float32)
            probabilities[:, self.digit] = 0.145
            return probabilities
        probabilities = np.full((len(images), 10), 0.01, dtype=np.float32)
        probabilities[:, self.digit] = 0.91
        return probabilities


def record_sent_tasks(
    monkeypatch: pytest.MonkeyPatch, task_name: str, key: str | None = None
) -> list:
    """What the domain sends as `task_name`, recorded instead of reaching the broker: each
    message's keyword arguments, or only their `key`."""
    sent: list = []

    def send_task(name: str, kwargs: dict | None = None, **options: object) -> None:
        if name == task_name:
            sent.append((kwargs or {})[key] if key else kwargs)

    monkeypatch.setattr(celery_app, "send_task", send_task)
    return sent
