"""Model versions: the shipped weights become v1, one version is active, promote and roll back,
the workers' holder follows, and live accuracy counts labelled answers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from django.db import IntegrityError, transaction

from ml.checkpoint import file_sha256, save_checkpoint
from ml.model import DigitNet
from recognizer import model_registry
from recognizer.models import ModelVersion
from tests.factories import SubmissionFactory
from worker import model_holder

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def models_folder(settings, tmp_path, untrained_weights):
    settings.MODELS_DIR = tmp_path / "models"
    settings.MODEL_WEIGHTS = untrained_weights
    model_holder.forget_predictor()
    yield settings.MODELS_DIR
    model_holder.forget_predictor()


def make_weights(folder: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    path = folder / f"weights-{seed}.pth"
    save_checkpoint(DigitNet(), path, meta={})
    return path


def candidate(tmp_path: Path, seed: int) -> ModelVersion:
    return model_registry.register_candidate(
        weights=make_weights(tmp_path, seed), trained_on={"seed": seed}, metrics={}
    )


def test_the_shipped_weights_become_the_active_v1_on_first_use(models_folder, untrained_weights):
    assert not ModelVersion.objects.exists()
    version = model_registry.active_version()
    assert (version.name, version.status) == ("v1", "active")
    stored = Path(version.weights_path)
    # A copy under the models folder, named by its content, with the hash it was registered with.
    assert stored.parent == models_folder
    assert stored.name == f"v1-{version.sha256[:12]}.pth"
    assert file_sha256(stored) == file_sha256(untrained_weights) == version.sha256

    assert model_registry.active_version().pk == version.pk
    assert model_registry.register_shipped_model().pk == version.pk
    assert ModelVersion.objects.count() == 1


def test_missing_shipped_weights_are_a_clear_error(settings, tmp_path):
    settings.MODEL_WEIGHTS = tmp_path / "nowhere.pth"
    with pytest.raises(model_registry.RegistryError, match="nowhere.pth"):
        model_registry.active_version()


def test_candidates_get_the_next_name_and_a_content_addressed_file(tmp_path):
    model_registry.active_version()
    source = make_weights(tmp_path, seed=2)
    sha = file_sha256(source)
    version = model_registry.register_candidate(weights=source, trained_on={}, metrics={})
    assert (version.name, version.status, version.sha256) == ("v2", "candidate", sha)
    assert Path(version.weights_path).name == f"v2-{sha[:12]}.pth"
    assert not source.exists()  # moved into the models folder, not left behind
    assert candidate(tmp_path, seed=3).name == "v3"


def test_promote_keeps_exactly_one_version_active(tmp_path):
    v1 = model_registry.active_version()
    v2 = candidate(tmp_path, seed=2)
    promoted = model_registry.promote(name="v2")
    assert promoted.status == "active"
    assert promoted.previous_id == v1.pk
    assert promoted.activated_at is not None
    v1.refresh_from_db()
    assert v1.status == "retired"
    assert list(ModelVersion.objects.filter(status="active")) == [v2]
    assert model_registry.active_version().name == "v2"
    # Promoting the active one again changes nothing.
    assert model_registry.promote(name="v2").pk == v2.pk
    assert ModelVersion.objects.filter(status="active").count() == 1


def test_active_row_follows_every_promotion(tmp_path):
    # What each worker compares before every batch: it must see a promotion at once.
    assert model_registry.active_row() is None  # nothing registered yet
    v1 = model_registry.active_version()
    assert model_registry.active_row() == (v1.name, v1.weights_path, v1.sha256)
    v2 = candidate(tmp_path, seed=2)
    model_registry.promote(name="v2")
    assert model_registry.active_row() == ("v2", v2.weights_path, v2.sha256)
    model_registry.promote(name="v1")
    assert model_registry.active_row() == ("v1", v1.weights_path, v1.sha256)


def test_the_database_refuses_a_second_active_version(tmp_path):
    model_registry.active_version()
    v2 = candidate(tmp_path, seed=2)
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelVersion.objects.filter(pk=v2.pk).update(status="active")


def test_promote_refuses_unknown_versions_and_missing_weights(tmp_path):
    model_registry.active_version()
    with pytest.raises(model_registry.RegistryError, match="no model version 'v9'"):
        model_registry.promote(name="v9")
    v2 = candidate(tmp_path, seed=2)
    Path(v2.weights_path).unlink()
    with pytest.raises(model_registry.RegistryError, match="missing"):
        model_registry.promote(name="v2")
    assert model_registry.active_version().name == "v1"


def test_rollback_walks_back_through_the_promotions(tmp_path):
    model_registry.active_version()
    candidate(tmp_path, seed=2)
    candidate(tmp_path, seed=3)
    model_registry.promote(name="v2")
    model_registry.promote(name="v3")

    assert model_registry.rollback().name == "v2"
    assert ModelVersion.objects.get(name="v3").status == "retired"
    assert model_registry.rollback().name == "v1"
    assert ModelVersion.objects.filter(status="active").get().name == "v1"
    with pytest.raises(model_registry.RegistryError, match="nothing to roll back to"):
        model_registry.rollback()


def test_rollback_returns_to_the_version_actually_replaced(tmp_path):
    model_registry.active_version()
    candidate(tmp_path, seed=2)
    candidate(tmp_path, seed=3)
    model_registry.promote(name="v3")
    model_registry.rollback()  # back to v1
    model_registry.promote(name="v2")
    assert model_registry.rollback().name == "v1"


def test_the_worker_holder_follows_a_promotion_without_a_restart(tmp_path):
    first = model_holder.get_predictor()
    assert first.version == "v1"
    assert model_holder.get_predictor() is first  # no reload while nothing changes

    v2 = candidate(tmp_path, seed=2)
    model_registry.promote(name="v2")
    second = model_holder.get_predictor()
    assert second.version == "v2"
    assert second.predictor.sha256 == v2.sha256

    model_registry.rollback()
    assert model_holder.get_predictor().version == "v1"


def test_a_worker_that_cannot_read_the_promoted_weights_keeps_answering(tmp_path):
    assert model_holder.get_predictor().version == "v1"
    v2 = candidate(tmp_path, seed=2)
    model_registry.promote(name="v2")
    Path(v2.weights_path).unlink()  # as on a worker that does not share the models folder
    assert model_holder.get_predictor().version == "v1"


def test_live_accuracy_counts_labelled_answers_of_that_version_only():
    right = {"status": "done", "prediction": 3, "model_version": "v1"}
    SubmissionFactory(**right, correct_label=3)
    SubmissionFactory(**right, correct_label=5)  # flagged wrong
    SubmissionFactory(**right, correct_label=5, reviewed_label=3)  # the reviewer overrules
    SubmissionFactory(**right, correct_label=3, excluded=True)  # not a digit: never counted
    SubmissionFactory(**right)  # unlabelled
    SubmissionFactory(status="done", prediction=3, model_version="v2", correct_label=3)

    live = model_registry.live_accuracy(version="v1")
    assert (live.labelled, live.correct) == (3, 2)
    assert live.accuracy == pytest.approx(2 / 3)
    assert model_registry.live_accuracy(version="v9").accuracy is None


def test_the_drawing_page_names_the_active_version(client, settings, tmp_path):
    # Plain static storage: the hashed-name manifest exists only after collectstatic.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    assert "Model v1" in client.get("/").content.decode()
    candidate(tmp_path, seed=2)
    model_registry.promote(name="v2")
    assert "Model v2" in client.get("/").content.decode()


def test_a_worker_restores_the_shipped_weights_when_the_models_folder_lost_them(models_folder):
    version = model_registry.active_version()
    stored = Path(version.weights_path)
    stored.unlink()  # the database was kept, the folder was not
    assert model_holder.get_predictor().version == "v1"
    assert file_sha256(stored) == version.sha256


def test_other_missing_weights_are_not_invented(models_folder, tmp_path):
    model_registry.active_version()
    v2 = candidate(tmp_path, seed=2)
    model_registry.promote(name=v2.name)
    Path(v2.weights_path).unlink()
    assert not model_registry.restore_shipped_weights(
        name=v2.name, weights_path=v2.weights_path, sha256=v2.sha256
    )
    with pytest.raises(FileNotFoundError):
        model_holder.get_predictor()
