"""Batch jobs as a client and the worker see them, without a broker: chunks sent to the broker are
recorded, and chunks are scored in this process with a stand-in model.

Through a real broker and worker: tests/worker/test_batch_integration.py.
"""

from __future__ import annotations

import base64
import csv
import gzip
import io
import struct
import zipfile
from datetime import timedelta

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.test import override_settings
from django.utils import timezone
from PIL import Image
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from recognizer import batches
from recognizer.models import BatchJob, Submission
from tests.factories import blank_png, data_url, digit_png, mnist_digit

pytestmark = pytest.mark.django_db

URL = "/api/v1/batches/"


class FakePredictor:
    """Answers 7 for every image and remembers the shape of every call."""

    version = "fake-1"

    def __init__(self) -> None:
        self.calls: list[tuple[int, ...]] = []

    def predict_images(self, images: np.ndarray) -> np.ndarray:
        self.calls.append(images.shape)
        probabilities = np.full((len(images), 10), 0.01, dtype=np.float32)
        probabilities[:, 7] = 0.91
        return probabilities


@pytest.fixture
def chunks(monkeypatch) -> list[dict]:
    """The chunk tasks that would have gone to the broker."""
    sent: list[dict] = []
    monkeypatch.setattr(
        "worker.tasks.score_batch_chunk.apply_async", lambda kwargs, **_: sent.append(kwargs)
    )
    return sent


def make_client(username: str = "alice") -> APIClient:
    user = get_user_model().objects.create_user(username)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    client.user = user
    return client


@pytest.fixture
def client() -> APIClient:
    return make_client()


def upload(data: bytes, name: str) -> io.BytesIO:
    stream = io.BytesIO(data)
    stream.name = name
    return stream


def post_json(client: APIClient, images: list) -> object:
    return client.post(URL, {"images": images}, format="json")


def post_file(client: APIClient, data: bytes, name: str = "digits.bin") -> object:
    return client.post(URL, {"file": upload(data, name)}, format="multipart")


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def idx(images: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, images.ndim)
    header += b"".join(struct.pack(">I", size) for size in images.shape)
    return header + images.astype(np.uint8).tobytes()


def make_zip(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def items_of(job_id: str) -> list[Submission]:
    return list(Submission.objects.filter(batch_id=job_id).order_by("batch_index"))


def score_all(job_id: str, predictor: FakePredictor | None = None) -> FakePredictor:
    predictor = predictor or FakePredictor()
    size = batches.settings.BATCH_CHUNK_SIZE
    total = BatchJob.objects.get(pk=job_id).total
    for start in range(0, total, size):
        batches.score_chunk(batch_id=job_id, start=start, stop=start + size, predictor=predictor)
    return predictor


# --- Request shapes -----------------------------------------------------------------------------


@override_settings(BATCH_CHUNK_SIZE=2)
def test_json_images_are_stored_as_batch_submissions_and_chunks_sent_after_commit(
    client, chunks, django_capture_on_commit_callbacks
):
    images = [
        {"name": "seven.png", "image": data_url(digit_png(7))},
        {"name": "two.png", "image": base64.b64encode(digit_png(2)).decode()},
        {"image": data_url(digit_png(4))},
    ]
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = post_json(client, images)
    assert chunks == [], "nothing may be sent before the transaction commits"
    for callback in callbacks:
        callback()

    assert response.status_code == 202, response.json()
    body = response.json()
    assert {"id", "status", "total", "done", "failed", "url", "results_url"} <= set(body)
    assert (body["status"], body["total"], body["done"], body["failed"]) == ("queued", 3, 0, 0)
    assert response["Location"] == body["url"]
    assert body["url"].endswith(f"/api/v1/batches/{body['id']}/")
    assert body["results_url"].endswith(f"/api/v1/batches/{body['id']}/results/")

    items = items_of(body["id"])
    assert [item.batch_index for item in items] == [0, 1, 2]
    assert [item.name for item in items] == ["seven.png", "two.png", ""]
    assert bytes(items[0].image) == digit_png(7)
    assert {(item.source, item.status, item.owner_id) for item in items} == {
        ("batch", "queued", client.user.pk)
    }
    assert chunks == [
        {"batch_id": body["id"], "start": 0, "stop": 2},
        {"batch_id": body["id"], "start": 2, "stop": 4},
    ]


def test_a_bad_json_item_fails_alone_and_the_rest_is_queued(
    client, chunks, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = post_json(
            client,
            [
                {"name": "good", "image": data_url(digit_png(1))},
                {"name": "not-base64", "image": "@@@"},
                {"name": "no-image"},
                "not an object",
            ],
        )
    assert response.status_code == 202
    assert response.json()["failed"] == 3
    items = items_of(response.json()["id"])
    assert [(item.status, item.error_code) for item in items] == [
        ("queued", ""),
        ("failed", "invalid_base64"),
        ("failed", "invalid"),
        ("failed", "invalid"),
    ]
    assert all(item.error for item in items[1:])
    assert len(chunks) == 1


def test_a_job_of_only_bad_items_is_done_at_once_and_sends_nothing(
    client, chunks, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = post_json(client, [{"image": "@@@"}, {"image": "###"}])
    assert response.status_code == 202
    assert (response.json()["status"], response.json()["failed"]) == ("done", 2)
    assert chunks == []


def test_multipart_repeated_images(client, chunks):
    files = [upload(digit_png(3), "three.png"), upload(b"not an image", "notes.png")]
    response = client.post(URL, {"images": files}, format="multipart")
    assert response.status_code == 202, response.json()
    items = items_of(response.json()["id"])
    assert [item.name for item in items] == ["three.png", "notes.png"]
    assert bytes(items[0].image) == digit_png(3)
    # Content is judged by the worker: a non-image is stored and fails there with its reason.
    assert [item.status for item in items] == ["queued", "queued"]


@override_settings(MAX_IMAGE_BYTES=1000)
def test_an_oversized_multipart_image_fails_alone(client, chunks):
    files = [upload(digit_png(3), "big.png"), upload(b"\x89PNG" + b"0" * 10, "small.png")]
    response = client.post(URL, {"images": files}, format="multipart")
    assert response.status_code == 202
    first, second = items_of(response.json()["id"])
    assert (first.status, first.error_code, bytes(first.image)) == (
        "failed",
        "image_too_large",
        b"",
    )
    assert second.status == "queued"


def test_zip_members_in_archive_order_without_folders_or_metadata(client, chunks):
    archive = make_zip(
        {
            "digits/": b"",
            "digits/b.png": digit_png(2),
            "digits/a.png": digit_png(5),
            "__MACOSX/digits/._a.png": b"resource fork",
            "digits/.DS_Store": b"finder",
            "digits/readme.txt": b"hello",
        },
        compression=zipfile.ZIP_DEFLATED,
    )
    response = post_file(client, archive, "anything.dat")
    assert response.status_code == 202, response.json()
    items = items_of(response.json()["id"])
    assert [item.name for item in items] == ["digits/b.png", "digits/a.png", "digits/readme.txt"]
    assert bytes(items[1].image) == digit_png(5)


def test_npy_array_is_recognised_by_content_and_stored_losslessly(client, chunks):
    pixels = np.stack([mnist_digit(d) for d in (0, 1, 2)])
    response = post_file(client, npy(pixels), "looks-like-a.png")
    assert response.status_code == 202, response.json()
    items = items_of(response.json()["id"])
    assert [item.name for item in items] == [
        "looks-like-a.png[0]",
        "looks-like-a.png[1]",
        "looks-like-a.png[2]",
    ]
    assert {item.content_type for item in items} == {batches.ARRAY_CONTENT_TYPE}
    for item, row in zip(items, pixels, strict=True):
        # A PNG, so the admin's thumbnail shows it; lossless, so the worker sees the array's row.
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(bytes(item.image)))), row)


@pytest.mark.parametrize(
    "convert",
    [
        lambda a: a.astype(np.float32) / 255.0,
        lambda a: a.astype(np.int64),
        lambda a: a.reshape(len(a), 784),
        lambda a: a[:, None],
    ],
    ids=["float-0-1", "int64", "flat-784", "n-1-h-w"],
)
def test_npy_dtypes_and_shapes(client, chunks, convert):
    pixels = np.stack([mnist_digit(4), mnist_digit(9)])
    response = post_file(client, npy(convert(pixels)))
    assert response.status_code == 202, response.json()
    stored = [
        np.asarray(Image.open(io.BytesIO(bytes(i.image)))) for i in items_of(response.json()["id"])
    ]
    assert np.abs(np.stack(stored).astype(int) - pixels).max() <= 1


@pytest.mark.parametrize("gzipped", [False, True], ids=["idx", "idx-gz"])
def test_idx_file_as_mnist_ships_it(client, chunks, gzipped):
    pixels = np.stack([mnist_digit(d) for d in range(4)])
    data = idx(pixels)
    response = post_file(client, gzip.compress(data) if gzipped else data, "t10k.idx")
    assert response.status_code == 202, response.json()
    assert response.json()["total"] == 4


def test_a_single_image_as_file_is_a_one_item_job(client, chunks):
    response = post_file(client, digit_png(6), "six.png")
    assert response.status_code == 202
    assert [item.name for item in items_of(response.json()["id"])] == ["six.png"]


def _lying_npy() -> bytes:
    data = npy(np.zeros((2, 28, 28), np.uint8))
    return data.replace(b"(2, 28, 28)", b"(9, 28, 28)")


@pytest.mark.parametrize(
    ("request_kind", "payload", "status", "code"),
    [
        ("file", b"just some bytes that are no container", 415, "unsupported_file"),
        ("file", b"PK\x03\x04 a truncated zip", 400, "invalid_file"),
        ("file", _lying_npy(), 400, "invalid_file"),
        ("file", npy(np.array([{"a": 1}], dtype=object)), 400, "invalid_array"),
        ("file", npy(np.full((1, 28, 28), 300, np.int32)), 400, "invalid_array"),
        ("file", npy(np.full((1, 28, 28), np.nan, np.float32)), 400, "invalid_array"),
        ("file", npy(np.zeros((28, 28, 3, 2), np.uint8)), 400, "invalid_array"),
        ("file", idx(np.arange(5, dtype=np.uint8)), 400, "invalid_array"),
        ("file", b"\x00\x00\x08\x03\x00\x00\x00\x02", 400, "invalid_file"),
        ("file", b"\x1f\x8b not really gzip", 400, "invalid_file"),
        ("json", {"images": "nope"}, 400, "invalid"),
        ("json", {"images": []}, 400, "empty_batch"),
        ("json", {}, 400, "required"),
        ("file", make_zip({"folder/": b""}), 400, "empty_batch"),
    ],
    ids=[
        "unknown-bytes",
        "truncated-zip",
        "npy-header-lies",
        "npy-objects",
        "values-over-255",
        "nan",
        "wrong-shape",
        "idx-labels",
        "idx-truncated",
        "bad-gzip",
        "images-not-a-list",
        "no-images",
        "nothing",
        "zip-without-files",
    ],
)
def test_a_bad_container_is_a_4xx_with_code_and_message(
    client, chunks, request_kind, payload, status, code
):
    if request_kind == "file":
        response = post_file(client, payload)
    else:
        response = client.post(URL, payload, format="json")
    assert response.status_code == status, response.content
    assert response.json()["code"] == code
    assert response.json()["message"]
    assert BatchJob.objects.count() == 0
    assert chunks == []


def test_images_and_file_together_are_refused(client, chunks):
    response = client.post(
        URL,
        {
            "images": [upload(digit_png(1), "a.png")],
            "file": upload(npy(np.zeros((1, 28, 28))), "x"),
        },
        format="multipart",
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"


# --- Limits -------------------------------------------------------------------------------------


@override_settings(BATCH_MAX_ITEMS=3)
@pytest.mark.parametrize("shape", ["json", "npy", "zip"])
def test_too_many_items_is_413(client, chunks, shape):
    png = digit_png(1)
    if shape == "json":
        response = post_json(client, [{"image": data_url(png)}] * 4)
    elif shape == "npy":
        response = post_file(client, npy(np.zeros((4, 28, 28), np.uint8)))
    else:
        response = post_file(client, make_zip({f"{i}.png": png for i in range(4)}))
    assert response.status_code == 413
    assert response.json()["code"] == "too_many_items"
    assert "3" in response.json()["message"]


@override_settings(DATA_UPLOAD_MAX_NUMBER_FILES=3)
def test_too_many_multipart_files_is_413(client, chunks):
    files = [upload(digit_png(1), f"{i}.png") for i in range(4)]
    response = client.post(URL, {"images": files}, format="multipart")
    assert response.status_code == 413
    assert response.json()["code"] == "too_many_items"


@override_settings(BATCH_MAX_BYTES=20_000)
def test_a_body_over_the_byte_cap_is_413_before_parsing(client, chunks):
    response = post_json(client, [{"image": data_url(digit_png(1))}] * 10)
    assert response.status_code == 413
    assert response.json()["code"] == "batch_too_large"


@override_settings(BATCH_ZIP_MAX_MEMBERS=5)
def test_a_zip_with_too_many_entries_is_refused_before_it_is_read(client, chunks):
    archive = make_zip({f"d{i}/": b"" for i in range(6)} | {"a.png": digit_png(1)})
    response = post_file(client, archive)
    assert response.status_code == 413
    assert response.json()["code"] == "too_many_items"


@override_settings(BATCH_MAX_BYTES=3 * 1024 * 1024)
def test_zip_bomb_stops_at_the_byte_cap(client, chunks):
    zeros = bytes(1024 * 1024 + 1)  # each member under MAX_IMAGE_BYTES, all together over the cap
    archive = make_zip({f"{i}.png": zeros for i in range(4)}, zipfile.ZIP_DEFLATED)
    assert len(archive) < 50_000
    response = post_file(client, archive)
    assert response.status_code == 413
    assert response.json()["code"] == "batch_too_large"


def test_zip_member_over_the_image_cap_fails_alone(client, chunks):
    archive = make_zip(
        {"bomb.png": bytes(50 * 1024 * 1024), "ok.png": digit_png(8)}, zipfile.ZIP_DEFLATED
    )
    response = post_file(client, archive)
    assert response.status_code == 202
    bomb, ok = items_of(response.json()["id"])
    assert (bomb.status, bomb.error_code) == ("failed", "image_too_large")
    assert ok.status == "queued"


@override_settings(BATCH_MAX_BYTES=1024 * 1024)
def test_gzip_bomb_stops_at_the_byte_cap(client, chunks):
    response = post_file(client, gzip.compress(bytes(8 * 1024 * 1024)))
    assert response.status_code == 413
    assert response.json()["code"] == "batch_too_large"


# --- Who may see what ---------------------------------------------------------------------------


def test_anonymous_clients_get_401_everywhere(chunks):
    owner = make_client("owner")
    job_id = post_json(owner, [{"image": data_url(digit_png(1))}]).json()["id"]
    anonymous = APIClient()
    for response in (
        post_json(anonymous, [{"image": data_url(digit_png(1))}]),
        anonymous.get(URL),
        anonymous.get(f"{URL}{job_id}/"),
        anonymous.get(f"{URL}{job_id}/results/"),
        anonymous.delete(f"{URL}{job_id}/"),
    ):
        assert response.status_code == 401
        assert response.json()["code"] == "not_authenticated"
        assert response["WWW-Authenticate"].startswith("Token")
    assert BatchJob.objects.count() == 1


def test_a_bad_token_is_401(chunks):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    response = client.get(URL)
    assert response.status_code == 401
    assert response.json()["code"] == "authentication_failed"


def test_another_clients_job_is_not_found(client, chunks):
    job_id = post_json(client, [{"image": data_url(digit_png(1))}]).json()["id"]
    other = make_client("mallory")
    for response in (
        other.get(f"{URL}{job_id}/"),
        other.get(f"{URL}{job_id}/results/"),
        other.get(f"{URL}{job_id}/results/?format=csv"),
        other.delete(f"{URL}{job_id}/"),
    ):
        assert response.status_code == 404
    assert other.get(URL).json()["results"] == []
    assert BatchJob.objects.get(pk=job_id).status == "queued"


def test_list_shows_the_clients_jobs_newest_first(client, chunks):
    ids = [post_json(client, [{"image": data_url(digit_png(1))}]).json()["id"] for _ in range(3)]
    make_client("bob").post(URL, {"images": [{"image": data_url(digit_png(1))}]}, format="json")
    body = client.get(URL).json()
    assert body["count"] == 3
    assert [job["id"] for job in body["results"]] == ids[::-1]


# --- Scoring a chunk ----------------------------------------------------------------------------


def _mixed_job(client: APIClient) -> str:
    response = post_json(
        client,
        [
            {"name": "seven", "image": data_url(digit_png(7))},
            {"name": "corrupt", "image": data_url(digit_png(3)[:150])},
            {"name": "blank", "image": data_url(blank_png())},
            {"name": "two", "image": data_url(digit_png(2, "small"))},
        ],
    )
    assert response.status_code == 202
    return response.json()["id"]


def test_a_chunk_runs_the_model_once_and_bad_items_fail_alone(client, chunks):
    job_id = _mixed_job(client)
    predictor = score_all(job_id)
    assert predictor.calls == [(2, 28, 28)], "one model call for the chunk's good items"
    seven, corrupt, blank, two = items_of(job_id)
    for item in (seven, two):
        assert (item.status, item.prediction, item.model_version) == ("done", 7, "fake-1")
        assert item.confidence == pytest.approx(0.91)
        assert len(item.probabilities) == 10
        assert len(bytes(item.model_input)) == 784
        assert item.started_at <= item.finished_at
    assert (corrupt.status, corrupt.error_code) == ("failed", "invalid_image")
    assert (blank.status, blank.error_code) == ("failed", "empty_drawing")
    job = BatchJob.objects.get(pk=job_id)
    assert (job.status, job.done_count, job.failed_count) == ("done", 2, 2)
    assert job.finished_at is not None


def test_array_items_go_through_preprocess_array(client, chunks):
    pixels = np.stack([mnist_digit(5), np.zeros((28, 28), np.uint8)])
    job_id = post_file(client, npy(pixels)).json()["id"]
    score_all(job_id)
    digit, blank = items_of(job_id)
    assert digit.status == "done"
    expected = batches.preprocess_array(pixels[0]).image
    assert np.array_equal(
        np.frombuffer(bytes(digit.model_input), np.uint8).reshape(28, 28), expected
    )
    assert (blank.status, blank.error_code) == ("failed", "empty_drawing")


@override_settings(BATCH_CHUNK_SIZE=2)
def test_a_redelivered_chunk_counts_nothing_twice(client, chunks):
    job_id = _mixed_job(client)
    predictor = FakePredictor()
    batches.score_chunk(batch_id=job_id, start=0, stop=2, predictor=predictor)
    first = {item.pk: item.finished_at for item in items_of(job_id)}
    again = batches.score_chunk(batch_id=job_id, start=0, stop=2, predictor=predictor)
    assert (again.done, again.failed) == (0, 0)
    assert len(predictor.calls) == 1
    job = BatchJob.objects.get(pk=job_id)
    assert (job.status, job.done_count, job.failed_count) == ("running", 1, 1)
    assert {item.pk: item.finished_at for item in items_of(job_id)} == first


def test_items_left_processing_by_a_dead_worker_are_scored_once(client, chunks):
    job_id = _mixed_job(client)
    Submission.objects.filter(batch_id=job_id).update(status="processing", attempts=1)
    score_all(job_id)
    job = BatchJob.objects.get(pk=job_id)
    assert (job.status, job.done_count + job.failed_count) == ("done", 4)


def test_a_chunk_that_keeps_killing_workers_is_given_up(client, chunks, settings):
    job_id = _mixed_job(client)
    Submission.objects.filter(batch_id=job_id).update(
        status="processing", attempts=settings.MAX_PREDICTION_ATTEMPTS
    )
    predictor = score_all(job_id)
    assert predictor.calls == []
    assert {item.error_code for item in items_of(job_id)} == {"gave_up"}
    assert BatchJob.objects.get(pk=job_id).status == "done"


# --- Results ------------------------------------------------------------------------------------


def test_results_json_pages(client, chunks):
    job_id = _mixed_job(client)
    score_all(job_id)
    first = client.get(f"{URL}{job_id}/results/?limit=3").json()
    assert set(first) == {"results", "next"}
    assert [row["index"] for row in first["results"]] == [0, 1, 2]
    assert set(first["results"][0]) == {
        "index",
        "name",
        "status",
        "prediction",
        "confidence",
        "probabilities",
        "error_code",
        "error",
    }
    seven, corrupt = first["results"][:2]
    assert (seven["name"], seven["status"], seven["prediction"]) == ("seven", "done", 7)
    assert len(seven["probabilities"]) == 10
    assert (corrupt["status"], corrupt["prediction"], corrupt["error_code"]) == (
        "failed",
        None,
        "invalid_image",
    )
    assert corrupt["error"]
    assert "after=2" in first["next"] and "limit=3" in first["next"]
    second = client.get(first["next"]).json()
    assert [row["index"] for row in second["results"]] == [3]
    assert second["next"] is None


@pytest.mark.parametrize("query", ["limit=0", "limit=100000", "after=x"])
def test_bad_paging_parameters_are_400(client, chunks, query):
    job_id = _mixed_job(client)
    response = client.get(f"{URL}{job_id}/results/?{query}")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"


@pytest.mark.parametrize("how", ["query", "query-with-json-accept", "accept"])
def test_results_csv_is_streamed(client, chunks, how):
    job_id = _mixed_job(client)
    score_all(job_id)
    if how == "query":
        response = client.get(f"{URL}{job_id}/results/?format=csv")
    elif how == "query-with-json-accept":
        response = client.get(f"{URL}{job_id}/results/?format=csv", HTTP_ACCEPT="application/json")
    else:
        response = client.get(f"{URL}{job_id}/results/", HTTP_ACCEPT="text/csv")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert response.streaming
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [row["name"] for row in rows] == ["seven", "corrupt", "blank", "two"]
    assert rows[0]["prediction"] == "7" and float(rows[0]["p7"]) == pytest.approx(0.91)
    assert (rows[2]["status"], rows[2]["prediction"], rows[2]["error_code"]) == (
        "failed",
        "",
        "empty_drawing",
    )
    assert list(rows[0]) == batches.CSV_HEADER


def test_progress_while_running(client, chunks, settings):
    settings.BATCH_CHUNK_SIZE = 2
    job_id = _mixed_job(client)
    batches.score_chunk(batch_id=job_id, start=0, stop=2, predictor=FakePredictor())
    body = client.get(f"{URL}{job_id}/").json()
    assert (body["status"], body["done"], body["failed"], body["total"]) == ("running", 1, 1, 4)
    assert body["finished_at"] is None


# --- Cancel and the sweeper ---------------------------------------------------------------------


@override_settings(BATCH_CHUNK_SIZE=2)
def test_cancel_fails_what_has_not_run_and_chunks_then_skip_it(client, chunks):
    job_id = _mixed_job(client)
    batches.score_chunk(batch_id=job_id, start=0, stop=2, predictor=FakePredictor())
    response = client.delete(f"{URL}{job_id}/")
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["done"], body["failed"], body["total"]) == ("cancelled", 1, 3, 4)
    predictor = score_all(job_id)
    assert predictor.calls == []
    rows = client.get(f"{URL}{job_id}/results/").json()["results"]
    assert [row["error_code"] for row in rows] == ["", "invalid_image", "cancelled", "cancelled"]
    assert client.delete(f"{URL}{job_id}/").status_code == 200  # again: nothing changes
    assert BatchJob.objects.get(pk=job_id).failed_count == 3


def test_a_finished_job_cannot_be_cancelled(client, chunks):
    job_id = _mixed_job(client)
    score_all(job_id)
    response = client.delete(f"{URL}{job_id}/")
    assert response.status_code == 409
    assert response.json()["code"] == "already_done"


@override_settings(BATCH_CHUNK_SIZE=2, BATCH_STALL_SECONDS=60)
def test_the_sweeper_sends_a_stalled_jobs_chunks_again_once(client, chunks):
    job_id = _mixed_job(client)
    fresh = post_json(client, [{"image": data_url(digit_png(1))}]).json()["id"]
    chunks.clear()
    later = timezone.now() + timedelta(seconds=120)
    # The fresh job was sent 30 s before `later`: waiting, not stalled.
    BatchJob.objects.filter(pk=fresh).update(created_at=later - timedelta(seconds=30))
    Submission.objects.filter(batch_id=fresh).update(queued_at=later - timedelta(seconds=30))
    assert batches.requeue_stalled(now=later) == {"chunks": 2}
    assert {c["batch_id"] for c in chunks} == {job_id}, f"{fresh} has not waited long enough"
    assert batches.requeue_stalled(now=later) == {"chunks": 0}


# --- Schema -------------------------------------------------------------------------------------


def test_schema_documents_the_batch_api():
    schema = APIClient().get("/api/schema/").content.decode()
    for path in ("/api/v1/batches/", "/api/v1/batches/{id}/", "/api/v1/batches/{id}/results/"):
        assert f"{path}:" in schema
    assert "text/csv" in schema


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=10_000, FILE_UPLOAD_MAX_MEMORY_SIZE=10_000)
def test_batch_bodies_are_bounded_by_the_batch_cap_not_djangos_form_limits(client, chunks):
    png = digit_png(1)
    as_json = post_json(client, [{"image": data_url(png)}] * 5)
    assert as_json.status_code == 202, as_json.json()
    files = [upload(png, f"{i}.png") for i in range(150)]  # Django's own default allows 100
    as_files = client.post(URL, {"images": files}, format="multipart")
    assert as_files.status_code == 202, as_files.json()
    assert as_files.json()["total"] == 150


def test_malformed_json_is_400(client, chunks):
    response = client.post(URL, data='{"images": [', content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"


def test_creating_jobs_is_throttled_but_reading_them_is_not(client, chunks):
    from django.core.cache import cache
    from rest_framework.settings import api_settings
    from rest_framework.throttling import SimpleRateThrottle

    SimpleRateThrottle.THROTTLE_RATES = {**api_settings.DEFAULT_THROTTLE_RATES, "user": "2/min"}
    cache.clear()
    try:
        images = [{"image": data_url(digit_png(1))}]
        codes = [post_json(client, images).status_code for _ in range(3)]
        assert codes == [202, 202, 429]
        assert post_json(client, images).json()["code"] == "throttled"
        job_id = BatchJob.objects.first().pk
        assert [client.get(f"{URL}{job_id}/").status_code for _ in range(4)] == [200] * 4
    finally:
        SimpleRateThrottle.THROTTLE_RATES = api_settings.DEFAULT_THROTTLE_RATES
        cache.clear()
