"""The submissions API as a client sees it; the broker is replaced by a recorder (unit level).

Integration with a real broker and worker is in tests/worker/test_integration.py.
"""

from __future__ import annotations

import io
import json

import pytest
from django.test import override_settings
from PIL import Image
from rest_framework.test import APIClient

from recognizer import queue, services
from recognizer.models import Submission
from recognizer.ownership import label_token
from tests.factories import (
    FakePredictor,
    SubmissionFactory,
    blank_png,
    data_url,
    digit_png,
    record_sent_tasks,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def client() -> APIClient:
    return APIClient()


@pytest.fixture
def enqueued(monkeypatch) -> list[str]:
    """The ids of the submissions that would have gone to the broker."""
    return record_sent_tasks(monkeypatch, queue.PREDICT_SUBMISSION, key="submission_id")


def post_json(client: APIClient, body: dict):
    return client.post("/api/v1/submissions/", body, format="json")


def test_json_data_url_is_stored_and_enqueued_after_commit(
    client, enqueued, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = post_json(
            client, {"image": data_url(digit_png(7)), "strokes": [[[0.1, 0.2, 0]]]}
        )
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued"
    assert response["Location"] == body["url"]
    assert body["url"].endswith(f"/api/v1/submissions/{body['id']}/")
    submission = Submission.objects.get(pk=body["id"])
    assert bytes(submission.image) == digit_png(7)
    assert submission.strokes == [[[0.1, 0.2, 0]]]
    assert len(bytes(submission.model_input)) == 28 * 28
    assert enqueued == [body["id"]]


def test_nothing_is_enqueued_before_the_transaction_commits(
    client, enqueued, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        post_json(client, {"image": data_url(digit_png(1))})
    assert enqueued == []
    assert len(callbacks) == 1


def test_multipart_upload(client, enqueued):
    upload = io.BytesIO(digit_png(4))
    upload.name = "four.png"
    response = client.post("/api/v1/submissions/", {"image": upload}, format="multipart")
    assert response.status_code == 202, response.json()


def test_plain_base64_without_data_url_prefix(client, enqueued):
    import base64

    response = post_json(client, {"image": base64.b64encode(digit_png(2)).decode()})
    assert response.status_code == 202


def _jpeg(png: bytes) -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").save(out, format="JPEG")
    return out.getvalue()


def test_jpeg_accepted(client, enqueued):
    response = post_json(client, {"image": data_url(_jpeg(digit_png(5)))})
    assert response.status_code == 202


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"image": data_url(b"this is not an image at all")}, 400, "invalid_image"),
        ({"image": data_url(digit_png(3)[:200])}, 400, "invalid_image"),
        ({"image": "@@@ not base64 @@@"}, 400, "invalid_base64"),
        ({"image": data_url(blank_png())}, 400, "empty_drawing"),
        ({}, 400, "required"),
        ({"image": 12}, 400, "invalid"),
        ({"image": data_url(digit_png(3)), "strokes": "nope"}, 400, "invalid_strokes"),
        ({"image": data_url(digit_png(3)), "source": "batch"}, 400, "invalid_choice"),
    ],
    ids=[
        "not-image",
        "truncated",
        "bad-base64",
        "blank",
        "missing",
        "wrong-type",
        "bad-strokes",
        "bad-source",
    ],
)
def test_bad_input_is_a_4xx_with_code_and_message(client, enqueued, body, status, code):
    response = post_json(client, body)
    assert response.status_code == status
    error = response.json()
    assert error["code"] == code
    assert error["message"]
    assert Submission.objects.count() == 0
    assert enqueued == []


@override_settings(MAX_IMAGE_BYTES=1000)
def test_image_over_the_byte_cap_is_413(client, enqueued):
    response = post_json(client, {"image": data_url(digit_png(8))})
    assert response.status_code == 413
    assert response.json()["code"] == "image_too_large"


def test_image_over_the_pixel_cap_is_413(client, enqueued):
    big = io.BytesIO()
    Image.new("1", (6000, 6000), 1).save(big, format="PNG")
    response = post_json(client, {"image": data_url(big.getvalue())})
    assert response.status_code == 413
    assert response.json()["code"] == "image_too_large"


def test_wrong_content_type_is_415(client, enqueued):
    response = client.post("/api/v1/submissions/", data=digit_png(3), content_type="image/png")
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"


def test_malformed_json_is_400(client, enqueued):
    response = client.post("/api/v1/submissions/", data="{nope", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=10_000)
def test_request_body_over_the_cap_is_413(client, enqueued):
    response = client.post(
        "/api/v1/submissions/",
        data=json.dumps({"image": "A" * 20_000}),
        content_type="application/json",
    )
    assert response.status_code == 413


def test_detail_shows_the_answer_and_input_png():
    submission = SubmissionFactory(
        status="done",
        prediction=3,
        confidence=0.97,
        probabilities=[0.003] * 10,
        is_digit=True,
        digit_score=0.966,
        model_version="v1",
    )
    response = APIClient().get(f"/api/v1/submissions/{submission.pk}/")
    body = response.json()
    assert body["status"] == "done"
    assert body["prediction"] == 3
    assert (body["is_digit"], body["digit_score"]) == (True, 0.966)
    assert body["model_version"] == "v1"
    png = APIClient().get(body["input_url"].replace("http://testserver", ""))
    assert png["Content-Type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).size == (28, 28)


def test_a_drawing_that_is_not_a_digit_is_done_and_says_so():
    submission = SubmissionFactory(status="queued")
    services.predict_one(submission_id=submission.pk, predictor=FakePredictor(5, flat=True))
    body = APIClient().get(f"/api/v1/submissions/{submission.pk}/").json()
    assert (body["status"], body["prediction"], body["is_digit"]) == ("done", 5, False)
    assert len(body["probabilities"]) == 10 and body["digit_score"] < 0.1


def test_unknown_submission_is_404_json():
    response = APIClient().get("/api/v1/submissions/00000000-0000-0000-0000-000000000000/")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


@pytest.mark.parametrize(("label", "flagged"), [(5, True), (3, False)])
def test_label_records_flag_or_confirmation(label, flagged):
    submission = SubmissionFactory(status="done", prediction=3, confidence=0.9)
    response = APIClient().post(
        f"/api/v1/submissions/{submission.pk}/label/",
        {"correct_label": label, "label_token": label_token(submission.pk)},
        format="json",
    )
    assert response.status_code == 200
    assert response.json()["flagged"] is flagged
    submission.refresh_from_db()
    assert submission.correct_label == label
    assert submission.labelled_at is not None


@pytest.mark.parametrize("label", [10, -1, "seven", None])
def test_bad_label_is_400(label):
    submission = SubmissionFactory(status="done", prediction=3)
    response = APIClient().post(
        f"/api/v1/submissions/{submission.pk}/label/", {"correct_label": label}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_label"
    assert "0 to 9" in response.json()["message"]
    submission.refresh_from_db()
    assert submission.correct_label is None


def test_label_before_the_answer_is_409():
    submission = SubmissionFactory(status="queued")
    response = APIClient().post(
        f"/api/v1/submissions/{submission.pk}/label/",
        {"correct_label": 3, "label_token": label_token(submission.pk)},
        format="json",
    )
    assert response.status_code == 409
    assert response.json()["code"] == "not_done"


def test_creation_is_throttled_but_polling_is_not(enqueued, settings):
    from rest_framework.settings import api_settings
    from rest_framework.throttling import SimpleRateThrottle

    rates = {**api_settings.DEFAULT_THROTTLE_RATES, "anon": "2/min"}
    SimpleRateThrottle.THROTTLE_RATES = rates
    try:
        from django.core.cache import cache

        cache.clear()
        client = APIClient()
        codes = [post_json(client, {"image": data_url(digit_png(1))}).status_code for _ in range(3)]
        assert codes == [202, 202, 429]
        throttled = post_json(client, {"image": data_url(digit_png(1))})
        assert throttled.json()["code"] == "throttled"
        submission_id = Submission.objects.first().pk
        polls = [client.get(f"/api/v1/submissions/{submission_id}/").status_code for _ in range(5)]
        assert polls == [200] * 5
    finally:
        SimpleRateThrottle.THROTTLE_RATES = api_settings.DEFAULT_THROTTLE_RATES
        cache.clear()


def test_anonymous_clients_are_held_to_throttle_anon_and_users_to_throttle_user(
    enqueued, django_user_model
):
    from rest_framework.settings import api_settings
    from rest_framework.throttling import SimpleRateThrottle

    # THROTTLE_USER is the stricter here: it must bind users, and only them.
    rates = {**api_settings.DEFAULT_THROTTLE_RATES, "anon": "3/min", "user": "1/min"}
    SimpleRateThrottle.THROTTLE_RATES = rates
    try:
        from django.core.cache import cache

        cache.clear()
        anonymous = APIClient()
        codes = [
            post_json(anonymous, {"image": data_url(digit_png(1))}).status_code for _ in range(4)
        ]
        assert codes == [202, 202, 202, 429]
        signed_in = APIClient()
        signed_in.force_authenticate(django_user_model.objects.create_user("ada"))
        codes = [
            post_json(signed_in, {"image": data_url(digit_png(1))}).status_code for _ in range(2)
        ]
        assert codes == [202, 429]
    finally:
        SimpleRateThrottle.THROTTLE_RATES = api_settings.DEFAULT_THROTTLE_RATES
        cache.clear()


def test_answers_from_one_serializer_class_never_share_field_objects(enqueued):
    # The fields are built once per class (FieldsBuiltOnce), then copied: DRF binds each field to
    # its serializer, so two answers in flight at once must not share one.
    from recognizer.api.serializers import SubmissionSerializer

    submission = Submission.objects.create(image=b"x")
    first, second = SubmissionSerializer(submission), SubmissionSerializer(submission)
    assert list(first.fields) == list(second.fields)
    assert all(first.fields[name] is not second.fields[name] for name in first.fields)
    assert first.fields["status"].parent is first and second.fields["status"].parent is second
    # Binding a copy leaves the fields kept for the next instances unbound.
    kept = SubmissionSerializer._built[SubmissionSerializer]
    assert all(getattr(field, "parent", None) is None for field in kept.values())


def test_schema_and_docs_are_served():
    client = APIClient()
    schema = client.get("/api/schema/")
    assert schema.status_code == 200
    assert b"/api/v1/submissions/" in schema.content
    assert client.get("/api/docs/").status_code == 200
