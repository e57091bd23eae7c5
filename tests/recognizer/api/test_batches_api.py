"""The batch-jobs API as a client sees it: request shapes, limits, who may see what, results,
cancelling. The chunk tasks are recorded instead of sent (see tests/worker for a real worker)."""

from __future__ import annotations

import base64
import csv
import gzip
import io
import zipfile

import numpy as np
import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from recognizer.batches import results, scoring
from recognizer.models import BatchJob
from tests.factories import FakePredictor, blank_png, data_url, digit_png, npy
from tests.mnist_sample import idx
from tests.recognizer.batch_helpers import (
    URL,
    items_of,
    lying_npy,
    make_client,
    make_zip,
    mixed_job,
    post_file,
    post_json,
    score_all,
    upload,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def client() -> APIClient:
    return make_client()


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
    # Each image's header is read on arrival: a non-image fails there, alone, with its reason.
    assert [(item.status, item.error_code) for item in items] == [
        ("queued", ""),
        ("failed", "invalid_image"),
    ]


@override_settings(MAX_IMAGE_BYTES=1000)
def test_an_oversized_multipart_image_fails_alone(client, chunks):
    files = [upload(digit_png(3), "big.png"), upload(blank_png(28), "small.png")]
    response = client.post(URL, {"images": files}, format="multipart")
    assert response.status_code == 202
    first, second = items_of(response.json()["id"])
    assert (first.status, first.error_code, bytes(first.image)) == (
        "failed",
        "image_too_large",
        b"",
    )
    assert second.status == "queued"


@pytest.mark.parametrize(
    ("request_kind", "payload", "status", "code"),
    [
        ("file", b"just some bytes that are no container", 415, "unsupported_file"),
        ("file", b"PK\x03\x04 a truncated zip", 400, "invalid_file"),
        ("file", lying_npy(), 400, "invalid_file"),
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


@override_settings(BATCH_MAX_BYTES=1024 * 1024)
def test_gzip_bomb_stops_at_the_byte_cap(client, chunks):
    response = post_file(client, gzip.compress(bytes(8 * 1024 * 1024)))
    assert response.status_code == 413
    assert response.json()["code"] == "batch_too_large"


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


def test_results_json_pages(client, chunks):
    job_id = mixed_job(client.user)
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
        "is_digit",
        "digit_score",
        "error_code",
        "error",
    }
    seven, corrupt = first["results"][:2]
    assert (seven["name"], seven["status"], seven["prediction"]) == ("seven", "done", 7)
    assert seven["is_digit"] is True and seven["digit_score"] == pytest.approx(0.9, abs=1e-3)
    assert (corrupt["is_digit"], corrupt["digit_score"]) == (None, None)
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
    job_id = mixed_job(client.user)
    response = client.get(f"{URL}{job_id}/results/?{query}")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"


@pytest.mark.parametrize("how", ["query", "query-with-json-accept", "accept"])
def test_results_csv_is_streamed(client, chunks, how):
    job_id = mixed_job(client.user)
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
    assert list(rows[0]) == results.CSV_HEADER
    assert (rows[0]["is_digit"], float(rows[0]["digit_score"])) == ("true", pytest.approx(0.9))
    assert (rows[2]["is_digit"], rows[2]["digit_score"]) == ("", "")


def test_results_say_which_items_are_not_digits(client, chunks):
    job_id = mixed_job(client.user)
    score_all(job_id, FakePredictor(4, flat=True))
    rows = client.get(f"{URL}{job_id}/results/").json()["results"]
    # Still done, with the closest digit and its probabilities; marked as not a digit.
    seven = rows[0]
    assert (seven["status"], seven["prediction"], seven["is_digit"]) == ("done", 4, False)
    assert len(seven["probabilities"]) == 10 and seven["digit_score"] < 0.1
    response = client.get(f"{URL}{job_id}/results/?format=csv")
    lines = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    first_line = (lines[0]["status"], lines[0]["prediction"], lines[0]["is_digit"])
    assert first_line == ("done", "4", "false")


def test_progress_while_running(client, chunks, settings):
    settings.BATCH_CHUNK_SIZE = 2
    job_id = mixed_job(client.user)
    scoring.score_chunk(batch_id=job_id, start=0, stop=2, predictor=FakePredictor())
    body = client.get(f"{URL}{job_id}/").json()
    assert (body["status"], body["done"], body["failed"], body["total"]) == ("running", 1, 1, 4)
    assert body["finished_at"] is None


@override_settings(BATCH_CHUNK_SIZE=2)
def test_cancel_fails_what_has_not_run_and_chunks_then_skip_it(client, chunks):
    job_id = mixed_job(client.user)
    scoring.score_chunk(batch_id=job_id, start=0, stop=2, predictor=FakePredictor())
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
    job_id = mixed_job(client.user)
    score_all(job_id)
    response = client.delete(f"{URL}{job_id}/")
    assert response.status_code == 409
    assert response.json()["code"] == "already_done"


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
