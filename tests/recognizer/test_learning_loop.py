"""The learning loop end to end, with the shipped weights, a real broker and a running worker.

A few hundred reviewed drawings in a style the active model gets wrong (a pen much thicker than
MNIST's; see tests/recognizer/drawings.py) are retrained on with a short schedule; the candidate
improves significantly on that style's holdout and is shown to lose less than the allowed 0.3
points on MNIST, so it is promoted, and the worker that was already running answers the next
drawing with the new version. A candidate taught deliberately wrong labels is rejected by the gate
and nothing changes. The same candidate judged again and again gets the same verdict.

To keep the test near a minute of CPU, the fine-tune sees a slice of MNIST's training split
(`manage.py retrain` uses all of it) and, being short, averages its weights over fewer steps; the
judging is the command's own, on the whole MNIST test split.
"""

from __future__ import annotations

import time
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings as django_settings
from rest_framework.test import APIClient

from recognizer import drawings, model_registry, retraining
from recognizer.models import ModelVersion, Submission
from tests.conftest import require
from tests.factories import data_url
from tests.recognizer.drawings import store_reviewed, thick_pen_drawings

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("requires_full_mnist"),
]

DRAWINGS = 400  # reviewed thick-pen drawings; 20% of them (by id) form the holdout
SHORT = {"epochs": 2, "mnist_limit": 8000, "ema_decay": 0.98, "seed": 1}
PROBE_INDEX = 50000  # MNIST training digits from here on are never stored as reviewed drawings


@cache
def thick_drawings() -> tuple[list[bytes], np.ndarray, np.ndarray]:
    return thick_pen_drawings(DRAWINGS)


@pytest.fixture
def shipped_model(settings, tmp_path) -> ModelVersion:
    require(
        Path(django_settings.MODEL_WEIGHTS).exists(),
        f"the shipped weights {django_settings.MODEL_WEIGHTS} are missing: "
        "train them with `python -m ml.train`",
    )
    settings.MODELS_DIR = tmp_path / "models"
    settings.HOLDOUT_PERCENT = 20
    settings.RETRAIN_MIN_HOLDOUT = 40
    settings.RETRAIN_SIGNIFICANCE = 0.05
    settings.RETRAIN_MNIST_MARGIN_POINTS = 0.3
    # Registered here rather than by the worker, so its copy lands in this test's folder.
    return model_registry.active_version()


def answer(png: bytes, timeout: float = 30) -> dict:
    client = APIClient()
    created = client.post("/api/v1/submissions/", {"image": data_url(png)}, format="json")
    assert created.status_code == 202, created.content
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/api/v1/submissions/{created.json()['id']}/?wait=2").json()
        if body["status"] in ("done", "failed"):
            assert body["status"] == "done", body
            return body
    raise AssertionError(f"no answer in {timeout}s: {body}")


def probe(nth: int) -> bytes:
    pngs, _, _ = thick_pen_drawings(1, start=PROBE_INDEX + nth)
    return pngs[0]


def test_reviewed_drawings_become_the_next_model_and_a_running_worker_uses_it(
    shipped_model, live_worker
):
    pid = live_worker.process.pid
    assert answer(probe(0))["model_version"] == "v1"

    pngs, inputs, labels = thick_drawings()
    store_reviewed(pngs, inputs, labels, id_seed=7)
    result = retraining.retrain(options=retraining.RetrainOptions(**SHORT))
    print(result.table)
    before = result.active_metrics
    # The style really is hard for the shipped model, which is good on MNIST.
    assert retraining.points(before["mnist"]) > 99
    assert retraining.points(before["holdout"]) < 80
    assert before["holdout"]["n"] >= 40

    assert result.gate.holdout_gain >= 10, result.table
    assert all(check.passed for check in result.gate.checks), result.table
    assert result.promoted
    assert (result.candidate.name, result.candidate.status) == ("v2", "active")
    assert ModelVersion.objects.get(name="v1").status == "retired"

    # The worker that answered with v1 answers with v2, without a restart.
    assert answer(probe(1))["model_version"] == "v2"
    assert live_worker.process.pid == pid and live_worker.running


def test_a_candidate_taught_wrong_labels_is_rejected_and_nothing_changes(
    shipped_model, live_worker
):
    pngs, inputs, labels = thick_drawings()
    reviewed = store_reviewed(pngs, inputs, labels, id_seed=7)
    # A careless reviewer bulk-applied "Label as 1" to every drawing that is trained on. The
    # holdout keeps the true labels, as it would when the mistakes are in what is trained on.
    wrong = [s.pk for s in reviewed if not drawings.in_holdout(s.id) and s.reviewed_label != 1]
    Submission.objects.filter(pk__in=wrong).update(reviewed_label=1)

    result = retraining.retrain(options=retraining.RetrainOptions(**SHORT))
    print(result.table)
    assert not result.gate.promote and not result.promoted
    assert not result.gate.checks[1].passed  # the holdout gain
    assert result.gate.holdout_gain < -10, result.table
    assert ModelVersion.objects.get(name="v2").status == "candidate"
    assert model_registry.active_version().name == "v1"
    assert answer(probe(2))["model_version"] == "v1"


@pytest.mark.usefixtures("shipped_model")
def test_the_same_candidate_judged_five_times_gets_the_same_verdict():
    pngs, inputs, labels = thick_drawings()
    store_reviewed(pngs, inputs, labels, id_seed=7)
    result = retraining.retrain(options=retraining.RetrainOptions(**SHORT, dry_run=True))
    recorded = result.candidate.metrics["gate"]
    holdout = drawings.reviewed_drawings(holdout=True)
    verdicts = [
        retraining.judge(
            candidate_weights=result.candidate.weights_path,
            active_weights=result.active.weights_path,
            holdout=holdout,
        ).gate.as_metrics()
        for _ in range(5)
    ]
    # Same answers, same tables, same p-values, same verdict: and the ones the retrain recorded.
    assert all(verdict == recorded for verdict in verdicts), result.table
    assert recorded["paired"]["mnist"]["a"] + recorded["paired"]["mnist"]["b"] > 9900
