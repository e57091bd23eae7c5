"""Calibrated probabilities and the "is it a digit at all?" score.

- Temperature scaling (Guo et al., 2017, "On Calibration of Modern Neural Networks"): one scalar T
  divides the logits; fitted by minimising the negative log-likelihood on validation digits. It
  changes confidences, never the predicted digit.
- The digit score is the maximum softmax probability (Hendrycks and Gimpel, 2017) after temperature
  scaling, stretched from [0.1, 1] to [0, 1]. The network is fine-tuned with outlier exposure
  (Hendrycks, Mazeika and Dietterich, 2019: non-digits pushed towards the uniform distribution over
  the same 10 outputs), so a non-digit's probabilities are flat and its score is low.
- The threshold is the score below which only `reject_rate` of held-out validation digits fall:
  set on digits, so the share of real digits turned away is what was asked for.
- Expected calibration error (Naeini et al., 2015; 15 equal-width confidence bins, as Guo et al.).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

NUM_CLASSES = 10
DEFAULT_REJECT_RATE = 0.003


@dataclass(frozen=True)
class Calibration:
    """What the checkpoint stores so that serving scores exactly as evaluation did."""

    temperature: float = 1.0
    threshold: float = 0.0  # digit_score below this: not a digit (0: nothing is rejected)
    reject_rate: float = DEFAULT_REJECT_RATE  # the share of validation digits it was set to reject

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_meta(cls, meta: dict) -> Calibration:
        """The calibration saved in a checkpoint's meta; weights without one reject nothing."""
        saved = meta.get("calibration") or {}
        return cls(**{k: float(v) for k, v in saved.items() if k in cls.__dataclass_fields__})


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature that minimises the NLL of `labels` (LBFGS on log T, so T stays positive)."""
    logits, labels = logits.detach().double(), labels.detach().long()
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.exp().item())


def digit_scores(probabilities: np.ndarray) -> np.ndarray:
    """0..1 per row: 0 when the probabilities are flat (nothing digit-like), 1 when certain."""
    top = np.asarray(probabilities, dtype=np.float64).max(axis=1)
    return np.clip((top - 1 / NUM_CLASSES) / (1 - 1 / NUM_CLASSES), 0.0, 1.0)


def fit_threshold(scores: np.ndarray, reject_rate: float = DEFAULT_REJECT_RATE) -> float:
    """The score under which `reject_rate` of these (held-out, genuine) digits fall."""
    return float(np.quantile(np.asarray(scores, dtype=np.float64), reject_rate))


def expected_calibration_error(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = 15
) -> float:
    """Weighted mean |accuracy - confidence| over equal-width confidence bins."""
    table = reliability(probabilities, labels, bins)
    n = sum(row["n"] for row in table)
    return float(sum(row["n"] * abs(row["accuracy"] - row["confidence"]) for row in table) / n)


def reliability(probabilities: np.ndarray, labels: np.ndarray, bins: int = 15) -> list[dict]:
    """Per non-empty confidence bin: its range, count, mean confidence and accuracy."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    table = []
    for b in range(bins):
        inside = which == b
        if inside.any():
            table.append(
                {
                    "low": float(edges[b]),
                    "high": float(edges[b + 1]),
                    "n": int(inside.sum()),
                    "confidence": float(confidence[inside].mean()),
                    "accuracy": float(correct[inside].mean()),
                }
            )
    return table


def softmax(logits: torch.Tensor, temperature: float) -> np.ndarray:
    return torch.softmax(logits.float() / temperature, dim=1).cpu().numpy()
