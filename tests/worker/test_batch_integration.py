"""Batch jobs through real parts: the API in this process, a real broker (Redis or the embedded
Valkey) and a real `celery worker -Q batch` process on the same test database."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.test import override_settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from recognizer.models import BatchJob, Submission
from tests.conftest import WorkerProcess
from tests.factories import blank_png, data_url, digit_png, mnist_test

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

URL = "/api/v1/batches/"


@pytest.fixture(scope="module")
def batch_worker(worker_factory) -> Iterator[WorkerProcess]:
    worker = worker_factory("batch", "batch")
    yield worker
    # Stopped with this module: other modules count live workers (readiness, for one).
    worker.stop()


@pytest.fixture
def live_batch_worker(batch_worker: WorkerProcess, transactional_db: None) -> WorkerProcess:
    if not batch_worker.running:
        batch_worker.start()
    return batch_worker


def token_client(username: str = "batcher") -> APIClient:
    user = get_user_model().objects.create_user(username)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


def npy_upload(array: np.ndarray, name: str = "slice.npy") -> io.BytesIO:
    stream = io.BytesIO()
    np.save(stream, array)
    stream.seek(0)
    stream.name = name
    return stream


def wait_finished(client: APIClient, job_id: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"{URL}{job_id}/").json()
        if body["status"] in ("done", "cancelled"):
            return body
        time.sleep(0.3)
    raise AssertionError(f"batch {job_id} not finished in {timeout}s: {body}")


def all_results(client: APIClient, job_id: str) -> list[dict]:
    results, url = [], f"{URL}{job_id}/results/?limit=200"
    while url:
        page = client.get(url).json()
        results += page["results"]
        url = page["next"]
    return results


def test_a_mixed_job_is_answered_item_by_item(live_batch_worker):
    client = token_client()
    images = [
        {"name": "seven-large", "image": data_url(digit_png(7, "large"))},
        {"name": "corrupt", "image": data_url(digit_png(3)[:200])},
        {"name": "two-small", "image": data_url(digit_png(2, "small"))},
        {"name": "blank", "image": data_url(blank_png())},
        {"name": "zero-offcentre", "image": data_url(digit_png(0, "offcentre"))},
    ]
    created = client.post(URL, {"images": images}, format="json")
    assert created.status_code == 202, created.content
    job = wait_finished(client, created.json()["id"])
    assert (job["status"], job["total"], job["done"], job["failed"]) == ("done", 5, 3, 2)

    results = {row["name"]: row for row in all_results(client, job["id"])}
    for name, digit in (("seven-large", 7), ("two-small", 2), ("zero-offcentre", 0)):
        assert results[name]["status"] == "done"
        assert results[name]["prediction"] == digit, results[name]
        assert abs(sum(results[name]["probabilities"]) - 1) < 1e-3
    assert (results["corrupt"]["status"], results["corrupt"]["error_code"]) == (
        "failed",
        "invalid_image",
    )
    assert (results["blank"]["status"], results["blank"]["error_code"]) == (
        "failed",
        "empty_drawing",
    )

    response = client.get(f"{URL}{job['id']}/results/?format=csv")
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [row["name"] for row in rows] == [image["name"] for image in images]
    assert rows[0]["prediction"] == "7"
    assert rows[1]["error_code"] == "invalid_image"

    stored = Submission.objects.filter(batch_id=job["id"], status="done")
    assert {item.source for item in stored} == {"batch"}
    assert all(len(bytes(item.model_input)) == 784 for item in stored)


def test_an_mnist_slice_as_an_array_file_scores_99_percent(live_batch_worker):
    images, labels = mnist_test()
    count = 500
    client = token_client()
    created = client.post(
        URL, {"file": npy_upload(images[:count], "mnist-test.npy")}, format="multipart"
    )
    assert created.status_code == 202, created.content
    job = wait_finished(client, created.json()["id"])
    assert (job["status"], job["done"], job["failed"]) == ("done", count, 0)

    results = all_results(client, job["id"])
    assert [row["index"] for row in results] == list(range(count))
    assert results[0]["name"] == "mnist-test.npy[0]"
    predictions = np.array([row["prediction"] for row in results])
    accuracy = float((predictions == labels[:count]).mean())
    assert accuracy >= 0.99, f"accuracy {accuracy:.3f} on the first {count} MNIST test digits"


def test_limits_and_auth_are_clear_4xx(live_batch_worker):
    anonymous = APIClient().post(
        URL, {"images": [{"image": data_url(digit_png(1))}]}, format="json"
    )
    assert anonymous.status_code == 401
    assert anonymous.json()["code"] == "not_authenticated"

    client = token_client()
    with override_settings(BATCH_MAX_ITEMS=10):
        too_many = client.post(
            URL, {"file": npy_upload(np.zeros((11, 28, 28), np.uint8))}, format="multipart"
        )
    assert too_many.status_code == 413
    assert too_many.json()["code"] == "too_many_items"

    not_a_container = client.post(URL, {"file": npy_upload(np.zeros(3))}, format="multipart")
    assert not_a_container.status_code == 400
    assert not_a_container.json()["code"] == "invalid_array"

    job_id = client.post(
        URL, {"images": [{"image": data_url(digit_png(1))}]}, format="json"
    ).json()["id"]
    assert token_client("someone-else").get(f"{URL}{job_id}/").status_code == 404
    assert BatchJob.objects.count() == 1
    wait_finished(client, job_id)


def test_cancel_stops_pending_chunks(live_batch_worker, settings):
    settings.BATCH_CHUNK_SIZE = 100
    client = token_client()
    images, _ = mnist_test()
    live_batch_worker.stop()  # the job's chunks wait in the broker
    try:
        created = client.post(URL, {"file": npy_upload(images[:300])}, format="multipart")
        assert created.status_code == 202, created.content
        job_id = created.json()["id"]
        cancelled = client.delete(f"{URL}{job_id}/")
        assert cancelled.status_code == 200
        assert (cancelled.json()["status"], cancelled.json()["failed"]) == ("cancelled", 300)
    finally:
        live_batch_worker.start()

    # One worker process takes tasks in order: once a later job is done, the cancelled job's three
    # chunks have been taken from the queue too.
    later = client.post(URL, {"file": npy_upload(images[300:310])}, format="multipart")
    assert wait_finished(client, later.json()["id"])["done"] == 10

    job = client.get(f"{URL}{job_id}/").json()
    assert (job["status"], job["done"], job["failed"]) == ("cancelled", 0, 300)
    items = Submission.objects.filter(batch_id=job_id)
    assert set(items.values_list("status", "error_code")) == {("failed", "cancelled")}
    assert not items.exclude(model_version="").exists()
    assert not items.filter(started_at__isnull=False).exists()


def test_the_command_line_client_scores_a_folder_and_writes_the_csv(
    live_batch_worker, live_server, tmp_path
):
    from bench.batch_client import main

    folder = tmp_path / "digits"
    (folder / "more").mkdir(parents=True)
    (folder / "a-seven.png").write_bytes(digit_png(7))
    (folder / "more" / "b-four.png").write_bytes(digit_png(4, "offcentre"))
    (folder / "notes.txt").write_text("not sent: the client sends image files only")
    user = get_user_model().objects.create_user("cli")
    out = tmp_path / "results.csv"

    argv = [str(folder), "--url", live_server.url, "--token", Token.objects.create(user=user).key]
    assert main([*argv, "-o", str(out), "--quiet", "--poll", "0.2"]) == 0

    rows = list(csv.DictReader(out.open()))
    assert [(row["name"], row["status"], row["prediction"]) for row in rows] == [
        ("a-seven.png", "done", "7"),
        ("more/b-four.png", "done", "4"),
    ]
    assert main([str(folder), "--url", live_server.url, "--token", "wrong", "--quiet"]) == 1
