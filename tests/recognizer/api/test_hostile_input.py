"""What an attacker sends, against the real stack: the API in this process (the web side), a real
interactive and a real batch worker process, and the embedded Valkey (or REDIS_URL's Redis).

Every case must get a JSON 4xx with a stable `code`, never a 5xx. Where memory is the attack, the
peak RSS of the process that does the work (this one for the request, the worker for scoring) is
measured during the request and must stay under the bound stated beside it.
"""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import OperationalError, connection
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from recognizer import drawings, model_registry, queue
from recognizer.models import ModelVersion, Submission
from tests.factories import record_sent_tasks
from tests.recognizer.api import payloads
from tests.recognizer.api.payloads import GiB, MiB, PeakRSS, data_url, digit_png

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SUBMISSIONS = "/api/v1/submissions/"
BATCHES = "/api/v1/batches/"
SELF = __import__("os").getpid()


@pytest.fixture(autouse=True)
def fresh_throttles(redis_url, shared_cache):
    # redis_url: every task an accepted request sends goes to the session's own broker.
    # shared_cache: throttle counts live in Redis, as in the service, emptied around each test.
    yield


@pytest.fixture
def rates(monkeypatch):
    """Set throttle rates for one test (DRF reads them once, into a class attribute)."""
    from rest_framework.settings import api_settings
    from rest_framework.throttling import SimpleRateThrottle

    def set_rates(**scoped: str) -> None:
        rates = {**api_settings.DEFAULT_THROTTLE_RATES, **scoped}
        monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", rates)

    return set_rates


def refused(response: object, status: int, code: str) -> dict:
    """A JSON answer with this status and stable code (and never a server error)."""
    assert response.status_code == status, (response.status_code, response.content[:500])
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert body["code"] == code, body
    assert body["message"]
    return body


def token_client(username: str) -> APIClient:
    user = get_user_model().objects.create_user(username)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    client.user = user
    return client


def submit(client: APIClient, body: dict, **extra: object) -> object:
    return client.post(SUBMISSIONS, body, format="json", **extra)


def wait_done(submission_id: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = APIClient().get(f"{SUBMISSIONS}{submission_id}/?wait=2").json()
        if body["status"] in ("done", "failed"):
            return body
    raise AssertionError(f"{submission_id} not answered in {timeout}s")


class Unreadable(io.RawIOBase):
    """A request body that must not be read: the server has to refuse it from its headers."""

    def read(self, *args: object) -> bytes:
        raise AssertionError("the body was read before its size was checked")

    readline = read


# --- Images -------------------------------------------------------------------------------------


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _jpeg() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.open(io.BytesIO(digit_png())).save(buffer, format="JPEG")
    return buffer.getvalue()


BAD_IMAGES = {
    "truncated-png": lambda: _truncated(digit_png()),
    "truncated-jpeg": lambda: _truncated(_jpeg()),
    "png-signature-then-junk": lambda: b"\x89PNG\r\n\x1a\n" + b"\x00junk" * 50,
    "jpeg-marker-then-junk": lambda: b"\xff\xd8\xff\xe0" + b"junk" * 50,
    "gif": payloads.gif_bytes,
    "bmp-magic": lambda: b"BM" + bytes(100),
    "text": lambda: b"hello, I am not an image",
    "header-only-png": lambda: payloads.png_claiming(280, 280),
}


@pytest.mark.parametrize("kind", BAD_IMAGES)
def test_broken_or_foreign_images_are_400_invalid_image(kind):
    refused(submit(APIClient(), {"image": data_url(BAD_IMAGES[kind]())}), 400, "invalid_image")


def test_bad_base64_is_400():
    refused(submit(APIClient(), {"image": "data:image/png;base64,@@@@"}), 400, "invalid_base64")


HUGE_IMAGES = {
    # 164 KB of valid PNG that decodes to 169 Mpx (the admin case of the issue, sent to the API).
    "png-13000x13000": lambda: payloads.huge_png(13000, 13000),
    # 748 bytes of WebP that decode to 16.7 Mpx: ~580 MiB as float arrays before the cap fell.
    "webp-4096x4096": lambda: payloads.blank_webp(4096),
    "png-header-claims-2^31-wide": lambda: payloads.png_claiming(2**31 - 1, 1),
    "png-one-side-too-long": lambda: payloads.huge_png(5000, 1),
}


@pytest.mark.parametrize("kind", HUGE_IMAGES)
def test_huge_dimensions_are_refused_from_the_header(kind):
    body = {"image": data_url(HUGE_IMAGES[kind]())}
    started = time.perf_counter()
    with PeakRSS(SELF) as rss:
        response = submit(APIClient(), body)
    refused(response, 413, "image_too_large")
    seconds = time.perf_counter() - started
    print(f"\n{kind}: web +{rss.mib:.0f} MiB peak, {seconds:.2f} s")
    assert seconds < 2
    assert rss.mib < 32, f"web process grew {rss.mib:.0f} MiB"


def test_the_largest_drawing_accepted_costs_a_bounded_amount(settings, live_worker):
    # At the cap (PREPROCESS_MAX_PIXELS, 4 Mpx by default) decoding costs tens of MiB, not hundreds.
    side = int(settings.PREPROCESS_MAX_PIXELS**0.5)
    with PeakRSS(SELF) as rss:
        response = submit(APIClient(), {"image": data_url(digit_png(side))})
    assert response.status_code == 202, response.content
    print(f"\naccepted {side}x{side} drawing: web +{rss.mib:.0f} MiB peak")
    assert rss.mib < 160, f"web process grew {rss.mib:.0f} MiB for a {side}x{side} drawing"
    assert wait_done(response.json()["id"])["status"] == "done"


# --- Bodies: size before reading, depth before recursing, shape before storing ------------------


@pytest.mark.parametrize(
    "path, code",
    [
        (SUBMISSIONS, "request_too_large"),
        (f"{SUBMISSIONS}00000000-0000-0000-0000-000000000000/label/", "request_too_large"),
        (BATCHES, "batch_too_large"),
    ],
)
@pytest.mark.parametrize("content_type", ["application/json", "multipart/form-data; boundary=x"])
@pytest.mark.parametrize("auth", ["token", "session"])
def test_an_oversized_body_is_refused_before_it_is_read(path, code, content_type, auth):
    # A session's CSRF check would parse a multipart body to look for its token: the size comes
    # first, before authentication.
    client = token_client("big-sender")
    if auth == "session":
        client.credentials()
        client.force_login(client.user)
    response = client.generic(
        "POST",
        path,
        b"",
        content_type=content_type,
        CONTENT_LENGTH=str(2**40),
        **{"wsgi.input": Unreadable()},
    )
    refused(response, 413, code)


def test_a_large_multipart_upload_is_refused_without_being_spooled(settings):
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 1  # anything read would be written to a temp file
    big = io.BytesIO(bytes(64 * MiB))
    big.name = "big.png"
    started = time.perf_counter()
    response = APIClient().post(SUBMISSIONS, {"image": big}, format="multipart")
    refused(response, 413, "request_too_large")
    assert time.perf_counter() - started < 5


DEEP = 5000


@pytest.mark.parametrize("endpoint", ["submissions", "batches", "label"])
def test_deeply_nested_json_is_400_parse_error(endpoint):
    client = token_client("nester")
    if endpoint == "label":
        labelled = Submission.objects.create(image=digit_png(), status="done", prediction=7)
        path = f"{SUBMISSIONS}{labelled.pk}/label/"
    else:
        path = SUBMISSIONS if endpoint == "submissions" else BATCHES
    bodies = [
        payloads.nested_list(DEEP),
        '{"image": "x", "strokes": ' + payloads.nested_list(DEEP) + "}",
        '{"images": [' + '{"a":' * DEEP + "1" + "}" * DEEP + "]}",
        '{"strokes": ' + payloads.nested_list(17) + "}",  # just over JSON_MAX_DEPTH (16)
    ]
    for body in bodies:
        refused(client.post(path, body, content_type="application/json"), 400, "parse_error")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_json_numbers_are_400_parse_error(literal):
    body = '{"image": "x", "strokes": [[[0, ' + literal + "]]]}"
    response = APIClient().post(SUBMISSIONS, body, content_type="application/json")
    refused(response, 400, "parse_error")


@pytest.mark.parametrize(
    "strokes",
    [
        "nope",
        7,
        {"x": 1},
        [1, 2],
        [[1, 2]],
        [["a", "b"]],
        [[[1]]],
        [[[1, 2, 3, 4]]],
        [[[1, "2"]]],
        [[[True, False]]],
        [[[1, None]]],
        [[{"x": 1, "y": 2}]],
        [[[1, 2**60]]],
    ],
    ids=lambda value: json.dumps(value)[:40],
)
def test_strokes_of_the_wrong_shape_are_400_invalid_strokes(strokes):
    body = {"image": data_url(digit_png()), "strokes": strokes}
    refused(submit(APIClient(), body), 400, "invalid_strokes")


def test_a_huge_number_in_strokes_is_400():
    body = '{"image": "' + data_url(digit_png()) + '", "strokes": [[[1e400, 2]]]}'
    response = APIClient().post(SUBMISSIONS, body, content_type="application/json")
    refused(response, 400, "invalid_strokes")


def test_strokes_in_multipart_are_parsed_with_the_same_limits():
    def post(strokes: str) -> object:
        image = io.BytesIO(digit_png())
        image.name = "seven.png"
        return APIClient().post(
            SUBMISSIONS, {"image": image, "strokes": strokes}, format="multipart"
        )

    refused(post(payloads.nested_list(DEEP)), 400, "invalid_strokes")
    refused(post("[[[0, NaN]]]"), 400, "invalid_strokes")
    refused(post("[[[0, 1, 2, 3]]]"), 400, "invalid_strokes")
    assert post("[[[0.1, 0.2, 0], [0.3, 0.4, 16]]]").status_code == 202


def test_too_many_stroke_points_are_413(settings):
    strokes = [[[0, 0, 0]] * 1000] * (settings.MAX_STROKE_POINTS // 1000 + 1)
    body = {"image": data_url(digit_png()), "strokes": strokes}
    refused(submit(APIClient(), body), 413, "strokes_too_large")


@pytest.mark.parametrize("body", ['"a string"', "[1, 2]", "42", "null"])
def test_a_body_that_is_not_an_object_is_400(body):
    response = APIClient().post(SUBMISSIONS, body, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"]


# --- Batch uploads: archives, arrays, images on arrival -----------------------------------------


@pytest.fixture(scope="module")
def batch_worker(worker_factory):
    worker = worker_factory("batch", "hostile-batch")
    yield worker
    worker.stop()  # other modules count live workers


@pytest.fixture
def batcher() -> APIClient:
    return token_client("batcher")


def post_file(client: APIClient, data: bytes, name: str = "upload.bin") -> object:
    upload = io.BytesIO(data)
    upload.name = name
    return client.post(BATCHES, {"file": upload}, format="multipart")


def a_zip(*members: dict) -> bytes:
    return payloads.zip_archive(list(members))


def good_member(name: str = "seven.png") -> dict:
    return {"name": name, "data": digit_png()}


def test_the_bzip2_bomb_is_what_it_claims():
    import bz2

    inflater = bz2.BZ2Decompressor()
    assert len(inflater.decompress(payloads.BZIP2_GIB_OF_ZEROS, 64 * MiB)) == 64 * MiB
    assert not inflater.eof  # and more behind it: 1 GiB in all


ARCHIVE_BOMBS = {
    # 893 bytes that declare 1 KiB and inflate to 1 GiB: zipfile has no output cap for bzip2.
    "bzip2-1GiB-declares-1KiB": (
        lambda: a_zip({"name": "a.png", "data": payloads.BZIP2_GIB_OF_ZEROS, "method": 12,
                       "declared": 1024}),
        415,
        "unsupported_compression",
    ),
    "lzma-128MiB-declares-1KiB": (
        lambda: a_zip({"name": "a.png", "data": payloads.lzma_zip_member(128 * MiB),
                       "method": 14, "declared": 1024}),
        415,
        "unsupported_compression",
    ),
    # 1 MiB of deflate that declares 1 KiB and inflates to 1 GiB: a lie, the archive is refused.
    "deflate-1GiB-declares-1KiB": (
        lambda: a_zip(good_member(), {"name": "b.png", "data": payloads.deflate_zeros(GiB),
                                      "method": 8, "declared": 1024}),
        400,
        "invalid_file",
    ),
    "gzip-1GiB": (
        lambda: payloads.gzip_of_raw_deflate(payloads.deflate_zeros(GiB), GiB),
        413,
        "batch_too_large",
    ),
}  # fmt: skip


@pytest.mark.parametrize("kind", ARCHIVE_BOMBS)
def test_archive_bombs_are_refused_within_a_memory_bound(batcher, kind):
    build, status, code = ARCHIVE_BOMBS[kind]
    data = build()
    started = time.perf_counter()
    with PeakRSS(SELF) as rss:
        response = post_file(batcher, data, "bomb.zip")
    seconds = time.perf_counter() - started
    refused(response, status, code)
    print(f"\n{kind}: {len(data)} bytes sent, web +{rss.mib:.0f} MiB peak, {seconds:.2f} s")
    assert rss.mib < 48, f"web process grew {rss.mib:.0f} MiB"
    assert seconds < 10
    assert not Submission.objects.exists()


def test_an_honest_member_over_the_image_cap_fails_alone_without_being_inflated(batcher):
    big = {"name": "big.png", "data": payloads.deflate_zeros(GiB), "method": 8,
           "declared": GiB}  # fmt: skip
    with PeakRSS(SELF) as rss:
        response = post_file(batcher, a_zip(good_member(), big), "digits.zip")
    assert response.status_code == 202, response.content
    items = Submission.objects.filter(batch_id=response.json()["id"]).order_by("batch_index")
    assert [(i.name, i.error_code) for i in items] == [
        ("seven.png", ""),
        ("big.png", "image_too_large"),
    ]
    assert rss.mib < 48


ARCHIVE_TRICKS = {
    "end-record-announces-too-many": (lambda: payloads.zip_with_entries(3, announce=65535), 413,
                                      "too_many_items"),
    # The end record says 1 entry; the directory holds 150: walked and counted, not believed.
    "end-record-hides-entries": (lambda: payloads.zip_with_entries(150, announce=1), 413,
                                 "too_many_items"),
    "directory-of-2GiB": (lambda: _with_directory_size(a_zip(good_member()), 2**31), 413,
                          "too_many_items"),
    "truncated": (lambda: a_zip(good_member())[:-30], 400, "invalid_file"),
    "local-header-only": (lambda: b"PK\x03\x04" + bytes(200), 400, "invalid_file"),
    "no-images": (lambda: a_zip({"name": "folder/", "data": b""},
                                {"name": "__MACOSX/._a.png", "data": b"x"}), 400, "empty_batch"),
    "directory-offset-past-the-end": (lambda: _with_directory_offset(a_zip(good_member()), 2**31),
                                      400, "invalid_file"),
}  # fmt: skip


def _with_directory_size(archive: bytes, size: int) -> bytes:
    return archive[:-10] + size.to_bytes(4, "little") + archive[-6:]


def _with_directory_offset(archive: bytes, offset: int) -> bytes:
    return archive[:-6] + offset.to_bytes(4, "little") + archive[-2:]


@pytest.mark.parametrize("kind", ARCHIVE_TRICKS)
def test_archive_tricks_are_refused(batcher, settings, kind):
    settings.BATCH_ZIP_MAX_MEMBERS = 100
    build, status, code = ARCHIVE_TRICKS[kind]
    refused(post_file(batcher, build(), "tricks.zip"), status, code)
    assert not Submission.objects.exists()


def test_encrypted_and_corrupt_members_fail_alone(batcher):
    archive = a_zip(
        good_member(),
        {"name": "locked.png", "data": digit_png(), "flags": 0x1},
        {"name": "bad-crc.png", "data": digit_png(), "crc": 1234},
        {"name": "not-an-image.png", "data": b"hello"},
        {"name": "huge.png", "data": payloads.huge_png(13000, 13000)},
    )
    response = post_file(batcher, archive, "mixed.zip")
    assert response.status_code == 202, response.content
    items = Submission.objects.filter(batch_id=response.json()["id"]).order_by("batch_index")
    assert [(i.name, i.status, i.error_code) for i in items] == [
        ("seven.png", "queued", ""),
        ("locked.png", "failed", "unreadable_member"),
        ("bad-crc.png", "failed", "unreadable_member"),
        ("not-an-image.png", "failed", "invalid_image"),
        ("huge.png", "failed", "image_too_large"),  # from its header, on arrival
    ]
    assert all(bytes(i.image) == b"" for i in items[1:])  # nothing refused is stored


def test_zip64_archives_still_work(batcher):
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for n in range(3):
            with archive.open(f"{n}.png", "w", force_zip64=True) as member:
                member.write(digit_png())
    response = post_file(batcher, buffer.getvalue(), "zip64.zip")
    assert response.status_code == 202, response.content
    assert response.json()["total"] == 3 and response.json()["failed"] == 0


ARRAY_HEADERS = {
    "npy-2^32-by-2^32": (lambda: payloads.npy_with_header("(4294967296, 4294967296)"),
                         400, "invalid_file"),
    "npy-negative-shape": (lambda: payloads.npy_with_header("(-2, -392)", bytes(784)),
                           400, "invalid_array"),
    "npy-wraps-to-0-in-int64": (lambda: payloads.npy_with_header("(65536, 65536, 65536, 65536)"),
                                400, "invalid_file"),
    "npy-40-dimensions": (lambda: payloads.npy_with_header("(" + "1, " * 40 + ")", b"\x00"),
                          400, "invalid_array"),
    "npy-bool-dimension": (lambda: payloads.npy_with_header("(True, 28, 28)", bytes(784)),
                           400, "invalid_array"),
    "npy-float-dimension": (lambda: payloads.npy_with_header("(1.5, 28, 28)", bytes(784)),
                            400, "invalid_array"),
    "npy-objects": (lambda: payloads.npy_with_header("(1,)", bytes(8), dtype="|O"),
                    400, "invalid_array"),
    "npy-header-not-a-dict": (lambda: b"\x93NUMPY\x01\x00\x04\x00[1]\n", 400, "invalid_file"),
    "npy-header-length-2GiB": (lambda: b"\x93NUMPY\x02\x00" + (2**31).to_bytes(4, "little"),
                               400, "invalid_file"),
    "npy-billion-rows-no-body": (lambda: payloads.npy_with_header("(1000000000, 28, 28)"),
                                 400, "invalid_file"),
    "npy-one-huge-image": (lambda: payloads.npy_of(np.zeros((1, 2049, 2049), np.uint8)),
                           413, "image_too_large"),
    "idx-wraps-to-0": (lambda: payloads.idx_with_dims([65536, 65536, 65536, 65536]),
                       400, "invalid_file"),
    "idx-255-dimensions": (lambda: payloads.idx_with_dims([1] * 255, b"\x00"), 400,
                           "invalid_file"),
    "idx-zero-images": (lambda: payloads.idx_with_dims([0, 28, 28]), 400, "empty_batch"),
    "idx-billion-images-no-body": (lambda: payloads.idx_with_dims([10**9, 28, 28]), 400,
                                   "invalid_file"),
    "idx-truncated-header": (lambda: bytes([0, 0, 8, 3, 0, 0]), 400, "invalid_file"),
    "idx-unknown-type": (lambda: payloads.idx_with_dims([1, 28, 28], bytes(784), 0x42), 400,
                         "invalid_file"),
}  # fmt: skip


@pytest.mark.parametrize("kind", ARRAY_HEADERS)
def test_absurd_array_headers_are_refused_before_allocation(batcher, kind):
    build, status, code = ARRAY_HEADERS[kind]
    with PeakRSS(SELF) as rss:
        response = post_file(batcher, build(), "digits.npy")
    refused(response, status, code)
    assert rss.mib < 48, f"web process grew {rss.mib:.0f} MiB"


def test_a_huge_image_in_a_batch_is_refused_on_arrival(batcher, batch_worker):
    images = [
        {"name": "bomb.png", "image": data_url(payloads.huge_png(13000, 13000))},
        {"name": "webp.webp", "image": data_url(payloads.blank_webp(4096), "webp")},
        {"name": "seven.png", "image": data_url(digit_png())},
    ]
    response = batcher.post(BATCHES, {"images": images}, format="json")
    assert response.status_code == 202, response.content
    job = wait_job(batcher, response.json()["id"])
    rows = batcher.get(f"{BATCHES}{job['id']}/results/").json()["results"]
    assert [(r["name"], r["status"], r["error_code"]) for r in rows] == [
        ("bomb.png", "failed", "image_too_large"),
        ("webp.webp", "failed", "image_too_large"),
        ("seven.png", "done", ""),
    ]


def wait_job(client: APIClient, job_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"{BATCHES}{job_id}/").json()
        if body["status"] in ("done", "cancelled"):
            return body
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} not done in {timeout}s")


def test_the_worker_never_decodes_a_huge_stored_item(batcher, batch_worker):
    """An item stored before the arrival check (or by any other path): the worker reads its size
    from the header and fails it, at no cost to its memory."""
    from recognizer.batches import jobs
    from recognizer.batches.parsing import Item

    big = payloads.huge_png(13000, 13000)
    child = batch_worker_child(batch_worker)
    with PeakRSS(child) as rss:
        job = jobs.create_job(
            owner=batcher.user,
            items=[Item("bomb.png", big, "image/png"), Item("seven.png", digit_png(), "image/png")],
        )
        wait_job(batcher, str(job.pk))
    rows = batcher.get(f"{BATCHES}{job.pk}/results/").json()["results"]
    assert [(r["status"], r["error_code"]) for r in rows] == [
        ("failed", "image_too_large"),
        ("done", ""),
    ]
    print(f"\nbatch worker: +{rss.mib:.0f} MiB peak scoring a 13000x13000 item")
    assert rss.mib < 64


def batch_worker_child(worker: object) -> int:
    """The pid that runs tasks: Celery's prefork pool child of the worker process."""
    import psutil

    children = psutil.Process(worker.process.pid).children(recursive=True)
    assert len(children) == 1, children
    return children[0].pid


def test_csv_results_never_start_a_formula(batcher, batch_worker):
    names = ["=HYPERLINK(\"http://evil.example\",\"x\")", "+1", "-2", "@SUM(A1)", "\tx",
             "\rx", "plain"]  # fmt: skip
    images = [{"name": name, "image": data_url(digit_png())} for name in names]
    response = batcher.post(BATCHES, {"images": images}, format="json")
    job = wait_job(batcher, response.json()["id"])
    body = b"".join(batcher.get(f"{BATCHES}{job['id']}/results/?format=csv").streaming_content)
    import csv

    rows = list(csv.reader(io.StringIO(body.decode())))[1:]
    assert [row[1] for row in rows] == ["'" + name for name in names[:-1]] + ["plain"]


def test_a_soft_time_limit_is_raised_again_not_blamed_on_an_item(batcher, monkeypatch):
    """The chunk ran out of time while preprocessing item 1: the task must fail (the sweeper
    sends the chunk again), and no item may be recorded as failed for it."""
    from celery.exceptions import SoftTimeLimitExceeded

    from recognizer.batches import jobs, scoring
    from recognizer.batches.parsing import Item
    from tests.factories import FakePredictor

    monkeypatch.setattr("recognizer.queue.send", lambda *args, **kwargs: True)
    job = jobs.create_job(
        owner=batcher.user, items=[Item(f"{n}.png", digit_png(), "image/png") for n in range(3)]
    )

    def slow(*args: object, **kwargs: object) -> object:
        raise SoftTimeLimitExceeded()  # the chunk's images are preprocessed together

    monkeypatch.setattr(scoring, "preprocess_many", slow)
    with pytest.raises(SoftTimeLimitExceeded):
        scoring.score_chunk(batch_id=job.pk, start=0, stop=256, predictor=FakePredictor())
    items = Submission.objects.filter(batch=job)
    assert not items.filter(status="failed").exists()
    assert set(items.values_list("error_code", flat=True)) == {""}
    job.refresh_from_db()
    assert (job.done_count, job.failed_count) == (0, 0)


# --- Client address: forged X-Forwarded-For -----------------------------------------------------


def test_a_new_forwarded_address_per_request_does_not_escape_the_throttle(rates):
    rates(anon="3/min")
    client = APIClient()
    codes = [
        submit(
            client, {"image": data_url(digit_png())}, HTTP_X_FORWARDED_FOR=f"10.0.{n}.{n}"
        ).status_code
        for n in range(6)
    ]
    assert codes == [202, 202, 202, 429, 429, 429]
    refused(
        submit(client, {"image": data_url(digit_png())}, HTTP_X_FORWARDED_FOR="10.9.9.9"),
        429,
        "throttled",
    )


def test_behind_a_configured_proxy_the_forwarded_address_counts(rates, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    rates(anon="2/min")
    client = APIClient()

    def send(address: str) -> int:
        # The proxy appends the address it saw to whatever the client claimed.
        forwarded = f"6.6.6.6, {address}"
        return submit(
            client, {"image": data_url(digit_png())}, HTTP_X_FORWARDED_FOR=forwarded
        ).status_code

    assert [send("203.0.113.1") for _ in range(3)] == [202, 202, 429]
    assert send("203.0.113.2") == 202  # another client behind the same proxy


# --- Labels: only the sender, and throttled ------------------------------------------------------


def test_only_the_client_that_sent_a_drawing_may_label_it(live_worker):
    created = submit(APIClient(), {"image": data_url(digit_png())}).json()
    assert wait_done(created["id"])["status"] == "done"
    url = f"{SUBMISSIONS}{created['id']}/label/"
    stranger = APIClient()
    refused(stranger.post(url, {"correct_label": 1}, format="json"), 403, "permission_denied")
    forged = {"correct_label": 1, "label_token": "0" * 64}
    refused(stranger.post(url, forged, format="json"), 403, "permission_denied")
    other_user = token_client("mallory")
    refused(other_user.post(url, {"correct_label": 1}, format="json"), 403, "permission_denied")
    assert Submission.objects.get(pk=created["id"]).correct_label is None

    mine = {"correct_label": 7, "label_token": created["label_token"]}
    assert APIClient().post(url, mine, format="json").status_code == 200
    assert Submission.objects.get(pk=created["id"]).correct_label == 7


def test_a_token_client_labels_its_own_drawing_without_the_label_token(live_worker):
    owner = token_client("owner")
    created = submit(owner, {"image": data_url(digit_png())}).json()
    wait_done(created["id"])
    url = f"{SUBMISSIONS}{created['id']}/label/"
    assert owner.post(url, {"correct_label": 7}, format="json").status_code == 200


def test_the_label_token_is_only_in_the_answer_to_the_post(live_worker):
    created = submit(APIClient(), {"image": data_url(digit_png())}).json()
    assert created["label_token"]
    shown = wait_done(created["id"])
    assert "label_token" not in shown
    assert created["label_token"] not in json.dumps(shown)


def test_labelling_is_throttled(rates):
    rates(label="3/min")
    submission = Submission.objects.create(
        image=digit_png(), status="done", prediction=7, confidence=0.9, model_input=bytes(784)
    )
    url = f"{SUBMISSIONS}{submission.pk}/label/"
    client = APIClient()
    codes = [
        client.post(
            url, {"correct_label": 1}, format="json", HTTP_X_FORWARDED_FOR=f"10.1.1.{n}"
        ).status_code
        for n in range(5)
    ]
    # Refused (no token) three times, then throttled: guessing tokens costs the rate too.
    assert codes == [403, 403, 403, 429, 429]
    refused(client.post(url, {"correct_label": 1}, format="json"), 429, "throttled")


def test_a_user_label_is_never_trained_on_without_a_reviewer():
    submission = Submission.objects.create(
        image=digit_png(), status="done", prediction=7, confidence=0.9, model_input=bytes(784),
        correct_label=1,
    )  # fmt: skip
    assert not drawings.reviewed_submissions().filter(pk=submission.pk).exists()


# --- Database outage -----------------------------------------------------------------------------


def test_a_database_outage_is_a_json_503_with_retry_after(monkeypatch, settings):
    submission = Submission.objects.create(image=digit_png(), model_input=bytes(784))

    def unreachable(*args: object, **kwargs: object) -> object:
        raise OperationalError('connection to server at "db" failed: Connection refused')

    monkeypatch.setattr(connection, "cursor", unreachable)
    for response in [
        APIClient().get(f"{SUBMISSIONS}{submission.pk}/"),
        submit(APIClient(), {"image": data_url(digit_png())}),
        APIClient().get(BATCHES, HTTP_AUTHORIZATION="Token 0123456789abcdef"),
    ]:
        body = refused(response, 503, "database_unavailable")
        assert response["Retry-After"] == str(settings.DATABASE_RETRY_AFTER)
        assert "refused" not in body["message"]  # nothing of the driver's message (host names)


# --- /readyz ------------------------------------------------------------------------------------


def test_readyz_names_no_hosts_to_the_anonymous_and_is_cached(settings, monkeypatch, admin_user):
    from digitsite import health

    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # a broker that is not there
    settings.READINESS_CACHE_SECONDS = 60
    monkeypatch.setattr(health, "_cached", (0.0, {}))

    def unreachable(**kwargs: object) -> list:
        raise OSError("Error 111 connecting to broker.internal:6379. Connection refused.")

    monkeypatch.setattr(health.app.control, "ping", unreachable)
    runs = []
    real = health._run_checks
    monkeypatch.setattr(health, "_run_checks", lambda: runs.append(1) or real())

    anonymous = APIClient().get("/readyz")
    assert anonymous.status_code == 503
    assert anonymous.json() == {
        "status": "unavailable",
        "checks": {"database": "working", "broker": "unavailable", "workers": "unavailable"},
    }
    staff = APIClient()
    staff.force_login(admin_user)
    assert "broker.internal:6379" in staff.get("/readyz").content.decode()  # staff see why

    for _ in range(20):
        APIClient().get("/readyz")
    assert len(runs) == 1  # one round of checks for 22 probes within READINESS_CACHE_SECONDS


# --- The admin: permissions and thumbnails --------------------------------------------------------


def staff_with(*codenames: str) -> APIClient:
    user = get_user_model().objects.create_user(
        f"staff-{'-'.join(codenames) or 'none'}", is_staff=True
    )
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client = APIClient()
    client.force_login(user)
    return client


@pytest.fixture(autouse=True)
def plain_static_files(settings):
    # The admin's pages name static files; the hashed-name manifest exists only after collectstatic.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture
def versions(settings, tmp_path, untrained_weights):
    """An active v1 and a gate-rejected candidate v2 that it would be a mistake to promote."""
    settings.MODELS_DIR = tmp_path / "models"
    settings.MODEL_WEIGHTS = untrained_weights
    v1 = model_registry.active_version()
    ModelVersion.objects.create(
        name="v2",
        weights_path=v1.weights_path,
        sha256=v1.sha256,
        metrics={"gate": {"promote": False}},
    )
    return v1


@pytest.fixture
def retrains(monkeypatch) -> list:
    return record_sent_tasks(monkeypatch, queue.RETRAIN)


def admin_action(client: APIClient, model: str, action: str, pks: list) -> object:
    return client.post(
        reverse(f"admin:recognizer_{model}_changelist"),
        {"action": action, "_selected_action": [str(pk) for pk in pks], "index": 0},
    )


def test_a_view_only_staff_user_changes_nothing(versions, retrains):
    client = staff_with("view_submission", "view_modelversion")
    submission = Submission.objects.create(
        image=digit_png(), status="done", prediction=7, model_input=bytes(784), correct_label=1
    )
    for action in ["accept_user_label", "label_as_3", "exclude_not_a_digit"]:
        response = admin_action(client, "submission", action, [submission.pk])
        assert response.status_code < 500
    submission.refresh_from_db()
    assert submission.reviewed_label is None and not submission.excluded
    assert submission.reviewed_at is None

    candidate = ModelVersion.objects.get(name="v2")
    registry = [("promote_selected", [candidate.pk]), ("roll_back", []), ("retrain_now", [])]
    for action, pks in registry:
        response = admin_action(client, "modelversion", action, pks)
        assert response.status_code < 500
    assert model_registry.active_version().name == "v1"
    assert retrains == []
    # The change form refuses a POST too.
    url = reverse("admin:recognizer_submission_change", args=[submission.pk])
    assert client.post(url, {"reviewed_label": 3}).status_code == 403


def test_reviewing_needs_the_change_permission_and_models_need_their_own(versions, retrains):
    reviewer = staff_with("view_submission", "change_submission", "view_modelversion")
    submission = Submission.objects.create(
        image=digit_png(), status="done", prediction=7, model_input=bytes(784)
    )
    admin_action(reviewer, "submission", "label_as_3", [submission.pk])
    submission.refresh_from_db()
    assert submission.reviewed_label == 3

    candidate = ModelVersion.objects.get(name="v2")
    admin_action(reviewer, "modelversion", "promote_selected", [candidate.pk])
    admin_action(reviewer, "modelversion", "retrain_now", [])
    assert model_registry.active_version().name == "v1" and retrains == []

    manager = staff_with("view_modelversion", "manage_models")
    admin_action(manager, "modelversion", "promote_selected", [candidate.pk])
    assert model_registry.active_version().name == "v2"
    admin_action(manager, "modelversion", "roll_back", [])
    assert model_registry.active_version().name == "v1"
    admin_action(manager, "modelversion", "retrain_now", [])
    assert len(retrains) == 1


def test_the_admin_list_never_decodes_a_huge_original(admin_user):
    # 164 KB on disk, 169 Mpx decoded: the list page must show it without decoding it.
    Submission.objects.create(
        image=payloads.huge_png(13000, 13000), status="failed", source="batch", name="bomb.png"
    )
    small = Submission.objects.create(image=digit_png(), status="done", model_input=bytes(784))
    client = APIClient()
    client.force_login(admin_user)
    started = time.perf_counter()
    with PeakRSS(SELF) as rss:
        response = client.get(reverse("admin:recognizer_submission_changelist"))
    assert response.status_code == 200
    print(f"\nadmin list with a 13000x13000 original: web +{rss.mib:.0f} MiB peak")
    assert time.perf_counter() - started < 5
    assert rss.mib < 48, f"web process grew {rss.mib:.0f} MiB"
    page = response.content.decode()
    assert page.count('alt="the drawing as sent"') == 1  # the small one only
    assert str(small.pk)[:8] in page


# --- Fuzzing: random values in every field of every endpoint that takes a body -------------------


def random_json(rng: object, depth: int = 0) -> object:
    """Any JSON value: the kinds a fuzzer throws at an API, nested a little."""
    kinds = [
        lambda: None,
        lambda: True,
        lambda: rng.randrange(-(2**70), 2**70),
        lambda: rng.random() * 10 ** rng.randrange(-5, 300),
        lambda: "",
        lambda: "".join(chr(rng.randrange(1, 0x2FFF)) for _ in range(rng.randrange(1, 40))),
        lambda: "data:image/png;base64," + "A" * rng.randrange(0, 64),
        lambda: rng.choice(["7", "-1", "1e999", "NaN", "\x00", "=1+1", "../../etc/passwd"]),
        lambda: [random_json(rng, depth + 1) for _ in range(rng.randrange(4))],
        lambda: {str(random_json(rng, 3))[:8]: random_json(rng, depth + 1) for _ in range(3)},
        lambda: [[[random_json(rng, 3) for _ in range(3)]]],
        lambda: {"image": random_json(rng, depth + 1), "name": random_json(rng, depth + 1)},
    ]
    return kinds[rng.randrange(len(kinds) if depth < 3 else 8)]()


def test_random_values_in_every_field_never_make_a_5xx():
    import random

    rng = random.Random(13)
    client = token_client("fuzzer")
    labelled = Submission.objects.create(image=digit_png(), status="done", prediction=7)
    fields = {
        SUBMISSIONS: ["image", "strokes", "source"],
        f"{SUBMISSIONS}{labelled.pk}/label/": ["correct_label", "label_token"],
        BATCHES: ["images"],
    }
    valid = {"image": data_url(digit_png()), "correct_label": 3, "label_token": "x"}
    seen = set()
    for path, names in fields.items():
        for _ in range(60):
            body = {name: valid.get(name) for name in names if rng.random() < 0.5}
            body[rng.choice(names)] = random_json(rng)
            if rng.random() < 0.1:
                body = random_json(rng)
            response = client.post(path, json.dumps(body), content_type="application/json")
            assert response.status_code < 500, (path, body, response.content[:300])
            if response.status_code >= 400:
                assert response.json()["code"], response.content
            seen.add(response.status_code)
    assert 400 in seen and 202 in seen  # both refused and accepted bodies were sent
