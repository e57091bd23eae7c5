"""The worker holds one model per process and reloads only when the active version changes."""

from __future__ import annotations

import pytest

from worker import model_holder
from worker.model_holder import ActiveModel


@pytest.fixture(autouse=True)
def fresh_holder():
    model_holder.forget_predictor()
    yield
    model_holder.forget_predictor()


def test_the_model_is_loaded_once_and_reused(monkeypatch, untrained_weights):
    loads = []
    real = model_holder.ServingPredictor

    def counting(model):
        loads.append(model.version)
        return real(model)

    monkeypatch.setattr(model_holder, "ServingPredictor", counting)
    monkeypatch.setattr(
        model_holder, "active_model", lambda: ActiveModel(version="a", weights=untrained_weights)
    )
    first = model_holder.get_predictor()
    assert model_holder.get_predictor() is first
    assert loads == ["a"]

    monkeypatch.setattr(
        model_holder, "active_model", lambda: ActiveModel(version="b", weights=untrained_weights)
    )
    assert model_holder.get_predictor().version == "b"
    assert loads == ["a", "b"]
