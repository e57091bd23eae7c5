"""Staff review in the admin, through the Django test client: filters, bulk labelling and
exclusion (each recording who and when), model versions with their accuracies, Retrain now."""

from __future__ import annotations

import json

import pytest
import redis
from django.urls import reverse

from ml.paired_stats import PairedTable
from recognizer import model_registry
from recognizer.models import Submission
from recognizer.retrain_gate import gate
from tests.factories import SubmissionFactory

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:recognizer_submission_changelist"
VERSIONS = "admin:recognizer_modelversion_changelist"


@pytest.fixture(autouse=True)
def models_folder(settings, tmp_path, untrained_weights):
    settings.MODELS_DIR = tmp_path / "models"
    settings.MODEL_WEIGHTS = untrained_weights
    settings.REVIEW_LOW_CONFIDENCE = 0.8
    # Plain static storage: the hashed-name manifest exists only after collectstatic.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


def answered(prediction: int, confidence: float = 0.99, **fields: object) -> Submission:
    return SubmissionFactory(
        status="done", prediction=prediction, confidence=confidence, model_version="v1", **fields
    )


def run_action(client, action: str, submissions: list, url: str = CHANGELIST):
    return client.post(
        reverse(url),
        {"action": action, "_selected_action": [str(s.pk) for s in submissions], "index": 0},
        follow=True,
    )


def listed(client, **query: str) -> set:
    response = client.get(reverse(CHANGELIST), query)
    assert response.status_code == 200
    return {s.pk for s in response.context["cl"].result_list}


def test_accept_the_users_label_records_who_and_when(admin_client, admin_user):
    flagged = answered(7, correct_label=1)
    confirmed = answered(3, correct_label=3)
    unlabelled = answered(5)
    response = run_action(admin_client, "accept_user_label", [flagged, confirmed, unlabelled])
    assert "Accepted the user&#x27;s label on 2 submission(s)" in response.content.decode()

    for submission, label in ((flagged, 1), (confirmed, 3)):
        submission.refresh_from_db()
        assert submission.reviewed_label == label
        assert submission.reviewed_by == admin_user
        assert submission.reviewed_at is not None
    unlabelled.refresh_from_db()
    assert (unlabelled.reviewed_label, unlabelled.reviewed_at) == (None, None)


def test_label_as_a_digit_overrides_the_user(admin_client, admin_user):
    wrong_flag = answered(4, correct_label=9)
    run_action(admin_client, "label_as_4", [wrong_flag])
    wrong_flag.refresh_from_db()
    assert (wrong_flag.reviewed_label, wrong_flag.reviewed_by) == (4, admin_user)
    assert wrong_flag.correct_label == 9  # what the user said is kept


def test_exclude_keeps_a_drawing_out_of_training(admin_client, admin_user):
    scribble = answered(8, correct_label=8)
    run_action(admin_client, "accept_user_label", [scribble])
    run_action(admin_client, "exclude_not_a_digit", [scribble])
    scribble.refresh_from_db()
    assert scribble.excluded and scribble.reviewed_label is None
    assert scribble.reviewed_by == admin_user


def test_review_filters(admin_client):
    flagged = answered(7, correct_label=1)
    confirmed = answered(3, correct_label=3)
    unsure = answered(5, confidence=0.42)
    sure = answered(6, confidence=0.99)
    reviewed = answered(7, correct_label=1, reviewed_label=1, reviewed_at="2026-01-01T00:00Z")

    assert listed(admin_client, review="todo") == {flagged.pk, confirmed.pk, unsure.pk}
    unreviewed = {flagged.pk, confirmed.pk, unsure.pk, sure.pk}
    assert listed(admin_client, review="unreviewed") == unreviewed
    assert listed(admin_client, labelled="flagged") == {flagged.pk, reviewed.pk}
    assert listed(admin_client, confidence_below="0.8") == {unsure.pk}
    # Predicted vs labelled: "the model said 7, the user says 1".
    pair = listed(admin_client, prediction__exact="7", labelled_digit="1")
    assert pair == {flagged.pk, reviewed.pk}
    assert listed(admin_client, labelled_digit="3") == {confirmed.pk}


def test_rejected_drawings_have_a_filter_and_stay_out_of_the_queue_until_labelled(admin_client):
    digit = answered(6, confidence=0.42, is_digit=True, digit_score=0.36)
    heart = answered(4, confidence=0.2, is_digit=False, digit_score=0.11)
    labelled_heart = answered(7, confidence=0.25, is_digit=False, digit_score=0.15, correct_label=7)

    assert listed(admin_client, is_digit="no") == {heart.pk, labelled_heart.pk}
    assert listed(admin_client, is_digit="yes") == {digit.pk}
    # Low confidence is what a rejected drawing has by nature: it waits for review only when a
    # user says which digit it was.
    assert listed(admin_client, review="todo") == {digit.pk, labelled_heart.pk}
    page = admin_client.get(reverse(CHANGELIST)).content.decode()
    assert "not a digit (0.11)" in page and "Rejected: not a digit" in page


def test_the_list_shows_the_drawing_beside_the_28x28_input(admin_client):
    answered(2, correct_label=2)
    page = admin_client.get(reverse(CHANGELIST)).content.decode()
    assert 'alt="the drawing as sent"' in page
    assert 'alt="the 28x28 model input"' in page


def test_only_staff_can_review(client, django_user_model):
    user = django_user_model.objects.create_user("visitor", password="pw-123456789")
    client.force_login(user)
    submission = answered(7, correct_label=1)
    response = run_action(client, "accept_user_label", [submission])
    assert response.redirect_chain and "/admin/login/" in response.redirect_chain[-1][0]
    submission.refresh_from_db()
    assert submission.reviewed_label is None


def test_versions_show_metrics_and_live_accuracy(admin_client):
    version = model_registry.active_version()
    version.metrics = {"mnist": {"accuracy": 0.9921, "n": 10000, "correct": 9921}}
    version.save()
    answered(3, correct_label=3)
    answered(3, correct_label=3)
    answered(3, correct_label=3)
    answered(3, correct_label=8)
    page = admin_client.get(reverse(VERSIONS)).content.decode()
    assert "99.21% of 10000" in page
    assert "75.0% of 4" in page
    detail = admin_client.get(reverse("admin:recognizer_modelversion_change", args=[version.pk]))
    assert "75.0% of 4" in detail.content.decode()


def test_versions_show_the_gates_verdict_and_reasoning(admin_client):
    decision = gate(
        tables={
            "mnist": PairedTable(a=9900, b=60, c=10, d=30),
            "holdout": PairedTable(a=40, b=0, c=12, d=8),
        }
    )
    version = model_registry.active_version()
    version.metrics = {"gate": decision.as_metrics()}
    version.save()
    page = admin_client.get(reverse(VERSIONS)).content.decode()
    assert "rejected: MNIST non-inferiority" in page
    detail = admin_client.get(reverse("admin:recognizer_modelversion_change", args=[version.pk]))
    text = detail.content.decode()
    assert "MNIST non-inferiority: FAIL: -0.50 points, gained 10 lost 60" in text
    assert "holdout gain: pass: +20.00 points, gained 12 lost 0" in text


@pytest.mark.integration
@pytest.mark.parametrize("ticked", [True, False], ids=["a-row-ticked", "nothing-ticked"])
def test_retrain_now_queues_a_task_on_the_training_queue(admin_client, redis_url, ticked):
    client = redis.Redis.from_url(redis_url)
    client.delete("training", "interactive")
    version = model_registry.active_version()
    response = run_action(admin_client, "retrain_now", [version] if ticked else [], url=VERSIONS)
    assert "Retraining queued on the training queue" in response.content.decode()
    messages = [json.loads(raw) for raw in client.lrange("training", 0, -1)]
    assert [m["headers"]["task"] for m in messages] == ["recognizer.retrain"]
    assert client.llen("interactive") == 0


def test_promote_and_roll_back_from_the_admin(admin_client, tmp_path):
    from ml.checkpoint import save_checkpoint
    from ml.model import DigitNet

    model_registry.active_version()
    save_checkpoint(DigitNet(), tmp_path / "c.pth", meta={})
    v2 = model_registry.register_candidate(weights=tmp_path / "c.pth", trained_on={}, metrics={})
    run_action(admin_client, "promote_selected", [v2], url=VERSIONS)
    assert model_registry.active_version().name == "v2"
    run_action(admin_client, "roll_back", [], url=VERSIONS)  # acts on the registry: no row needed
    assert model_registry.active_version().name == "v1"
