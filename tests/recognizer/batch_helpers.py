"""Helpers shared by the batch tests (tests/recognizer/api and tests/recognizer/batches)."""

from __future__ import annotations

import io
import zipfile

import numpy as np
from django.conf import settings
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from recognizer.batches import jobs, parsing, scoring
from recognizer.models import BatchJob, Submission
from tests.factories import FakePredictor, blank_png, data_url, digit_png, npy

URL = "/api/v1/batches/"


def make_client(username: str = "alice") -> APIClient:
    user = get_user_model().objects.create_user(username)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    client.user = user
    return client


def upload(data: bytes, name: str) -> io.BytesIO:
    stream = io.BytesIO(data)
    stream.name = name
    return stream


def post_json(client: APIClient, images: list) -> object:
    return client.post(URL, {"images": images}, format="json")


def post_file(client: APIClient, data: bytes, name: str = "digits.bin") -> object:
    return client.post(URL, {"file": upload(data, name)}, format="multipart")


def make_zip(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def lying_npy() -> bytes:
    data = npy(np.zeros((2, 28, 28), np.uint8))
    return data.replace(b"(2, 28, 28)", b"(9, 28, 28)")


def items_of(job_id: str) -> list[Submission]:
    return list(Submission.objects.filter(batch_id=job_id).order_by("batch_index"))


def score_all(job_id: str, predictor: FakePredictor | None = None) -> FakePredictor:
    predictor = predictor or FakePredictor()
    size = settings.BATCH_CHUNK_SIZE
    total = BatchJob.objects.get(pk=job_id).total
    for start in range(0, total, size):
        scoring.score_chunk(batch_id=job_id, start=start, stop=start + size, predictor=predictor)
    return predictor


def mixed_job(owner: object) -> str:
    """A stored job of four items: two good drawings, a corrupt image and a blank one."""
    items = parsing.items_from_json(
        images=[
            {"name": "seven", "image": data_url(digit_png(7))},
            {"name": "corrupt", "image": data_url(digit_png(3)[:150])},
            {"name": "blank", "image": data_url(blank_png())},
            {"name": "two", "image": data_url(digit_png(2, "small"))},
        ]
    )
    return str(jobs.create_job(owner=owner, items=items).pk)
