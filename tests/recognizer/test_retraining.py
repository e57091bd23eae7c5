"""Retraining's parts: the frozen holdout, the training set, the gate, the export, the table, and
one tiny retrain that records a candidate without promoting it."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from django.core.management import call_command

from ml.data import load_extra
from recognizer import model_registry, retraining
from recognizer.models import ModelVersion
from recognizer.retraining import gate, in_holdout
from tests.recognizer.drawings import store_reviewed, thick_pen_drawings

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def models_folder(settings, tmp_path, untrained_weights):
    settings.MODELS_DIR = tmp_path / "models"
    settings.MODEL_WEIGHTS = untrained_weights
    settings.HOLDOUT_PERCENT = 20
    return settings.MODELS_DIR


@pytest.fixture
def reviewed() -> list:
    pngs, inputs, labels = thick_pen_drawings(60)
    return store_reviewed(pngs, inputs, labels)


# --- The holdout --------------------------------------------------------------------------------


def test_the_holdout_is_stable_and_about_the_configured_share(settings):
    ids = [uuid.UUID(int=i * 7919 + 1, version=4) for i in range(4000)]
    first = [in_holdout(i) for i in ids]
    assert [in_holdout(str(i)) for i in ids] == first  # same answer for the same id, any form
    assert 0.17 < np.mean(first) < 0.23
    settings.HOLDOUT_PERCENT = 0
    assert not any(in_holdout(i) for i in ids)


def test_time_ordered_ids_spread_into_the_holdout_too():
    # Consecutive ids differing only in their low bits must not all land on one side.
    base = uuid.uuid4().int
    share = np.mean([in_holdout(uuid.UUID(int=base + i)) for i in range(2000)])
    assert 0.15 < share < 0.25


def test_training_set_and_holdout_are_disjoint_and_cover_the_reviewed_drawings(reviewed):
    training = retraining.reviewed_drawings(holdout=False)
    holdout = retraining.reviewed_drawings(holdout=True)
    assert set(training.ids).isdisjoint(holdout.ids)
    assert set(training.ids) | set(holdout.ids) == {str(s.id) for s in reviewed}
    assert len(holdout) > 0 and len(training) > len(holdout)
    assert all(in_holdout(i) for i in holdout.ids)
    # The pixels and labels are the stored 28x28 inputs and the reviewers' labels.
    by_id = {str(s.id): s for s in reviewed}
    first = by_id[training.ids[0]]
    assert training.images[0].tobytes() == bytes(first.model_input)
    assert training.labels[0] == first.reviewed_label


def test_unreviewed_and_excluded_drawings_are_never_trained_on(reviewed):
    pngs, inputs, labels = thick_pen_drawings(5, start=500)
    unreviewed = store_reviewed(pngs, inputs, labels, reviewed_at=None, reviewed_label=None)
    excluded = store_reviewed(pngs, inputs, labels, excluded=True)
    every = retraining.reviewed_drawings(holdout=None)
    assert len(every) == len(reviewed)
    assert not {str(s.id) for s in unreviewed + excluded} & set(every.ids)


# --- The gate -----------------------------------------------------------------------------------


def metrics(mnist_correct: int, holdout_correct: int, mnist_n=10000, holdout_n=80) -> dict:
    return {
        "mnist": {"correct": mnist_correct, "n": mnist_n},
        "holdout": {"correct": holdout_correct, "n": holdout_n},
    }


def test_gate_promotes_a_candidate_better_on_drawings_and_as_good_on_mnist():
    decision = gate(candidate=metrics(9920, 70), active=metrics(9921, 40))
    assert decision.promote
    assert decision.holdout_gain == pytest.approx(37.5)
    assert decision.mnist_change == pytest.approx(-0.01)


def test_gate_allows_exactly_the_configured_mnist_loss_and_no_more():
    assert gate(candidate=metrics(9911, 70), active=metrics(9921, 40)).promote  # -0.10
    rejected = gate(candidate=metrics(9910, 70), active=metrics(9921, 40))  # -0.11
    assert not rejected.promote
    assert any("MNIST test -0.11 points <" in reason for reason in rejected.reasons)


def test_gate_rejects_a_candidate_worse_on_the_holdout():
    assert gate(candidate=metrics(9921, 40), active=metrics(9921, 40)).promote  # as good: ok
    decision = gate(candidate=metrics(9950, 39), active=metrics(9921, 40))
    assert not decision.promote


def test_gate_thresholds_come_from_settings(settings):
    settings.RETRAIN_MAX_MNIST_DROP_POINTS = 0.5
    settings.RETRAIN_MIN_HOLDOUT_GAIN_POINTS = 10
    assert gate(candidate=metrics(9871, 50), active=metrics(9921, 40)).promote  # -0.5, +12.5
    assert not gate(candidate=metrics(9921, 47), active=metrics(9921, 40)).promote  # +8.75


def test_gate_refuses_to_judge_on_a_tiny_holdout(settings):
    settings.RETRAIN_MIN_HOLDOUT = 20
    decision = gate(
        candidate=metrics(9921, 19, holdout_n=19), active=metrics(9921, 0, holdout_n=19)
    )
    assert not decision.promote
    assert "fewer than 20" in decision.reasons[0]


def test_drawings_are_weighted_to_their_share_of_an_epoch(settings):
    settings.RETRAIN_DRAWN_SHARE = 0.1
    settings.RETRAIN_MAX_EXTRA_WEIGHT = 30
    # 300 drawings x 21 = 6,300 beside 55,000 MNIST images: about a tenth of the epoch.
    assert retraining.drawn_weight(n_mnist=55000, n_drawings=300) == 21
    assert retraining.drawn_weight(n_mnist=55000, n_drawings=10) == 30  # capped
    assert retraining.drawn_weight(n_mnist=55000, n_drawings=100000) == 1


def test_comparison_table_shows_both_versions_and_the_change():
    table = retraining.comparison_table(
        active_name="v1", candidate_name="v2", active=metrics(9921, 40), candidate=metrics(9918, 74)
    )
    lines = table.splitlines()
    assert "v1 (active)" in lines[0] and "v2 (candidate)" in lines[0]
    assert lines[1].split() == ["MNIST", "test", "(10000)", "99.21%", "99.18%", "-0.03"]
    assert lines[2].split() == ["drawn", "holdout", "(80)", "50.00%", "92.50%", "+42.50"]


# --- Export -------------------------------------------------------------------------------------


def test_export_writes_what_ml_train_reads_and_keeps_the_holdout_out(reviewed, tmp_path):
    path = tmp_path / "drawings"
    count = retraining.export_drawings(path=path)
    exported = load_extra(path)
    holdout = retraining.reviewed_drawings(holdout=True)
    assert count == len(exported) == len(reviewed) - len(holdout)
    assert exported.images.shape == (count, 28, 28) and exported.images.dtype == np.uint8
    with np.load(path) as archive:
        ids = list(archive["ids"])
    assert not set(ids) & set(holdout.ids)
    by_id = {str(s.id): s.reviewed_label for s in reviewed}
    assert list(exported.labels) == [by_id[i] for i in ids]

    call_command("export_drawings", str(path), "--include-holdout", stdout=open("/dev/null", "w"))
    assert len(load_extra(path)) == len(reviewed)


# --- One tiny retrain ---------------------------------------------------------------------------


def test_a_dry_run_records_the_candidate_and_never_promotes(reviewed, settings):
    settings.RETRAIN_MIN_HOLDOUT = 1
    # From untrained weights nothing is meaningful: let any candidate pass, to see that a dry
    # run still does not promote it.
    settings.RETRAIN_MAX_MNIST_DROP_POINTS = 100
    settings.RETRAIN_MIN_HOLDOUT_GAIN_POINTS = -100
    said = []
    result = retraining.retrain(
        options=retraining.RetrainOptions(
            epochs=1, dry_run=True, mnist_limit=256, eval_mnist_limit=200, threads=1
        ),
        progress=said.append,
    )
    assert result.gate.promote and not result.promoted
    candidate = ModelVersion.objects.get(name=result.candidate.name)
    assert candidate.status == "candidate"
    assert model_registry.active_version().name == "v1"
    assert candidate.trained_on["drawings"] == len(retraining.reviewed_drawings(holdout=False))
    assert candidate.trained_on["init"] == "v1"
    assert candidate.metrics["holdout"]["n"] == len(retraining.reviewed_drawings(holdout=True))
    assert candidate.metrics["mnist"]["n"] == 200
    assert candidate.metrics["compared_with"]["version"] == "v1"
    assert any(line.startswith("epoch 1/1") for line in said)
    assert "--dry-run: not promoted" in said[-1]
    # Only the registered, content-addressed weights remain in the models folder.
    names = sorted(p.name for p in settings.MODELS_DIR.iterdir())
    assert f"{candidate.name}-{candidate.sha256[:12]}.pth" in names
    assert not [n for n in names if n.startswith(".")]


def test_retrain_needs_reviewed_drawings():
    with pytest.raises(retraining.RetrainError, match="no reviewed drawings"):
        retraining.retrain(options=retraining.RetrainOptions(epochs=1, mnist_limit=64))
