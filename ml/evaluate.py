"""Evaluate weights: MNIST test, the drawn-digit evaluation, non-digit rejection, calibration.

    python -m ml.evaluate [--weights PATH] [--drawn] [--plots DIR] [--limit N] [--card]

Prints one JSON object on stdout, and a readable summary on stderr:
- MNIST test (10,000): accuracy, per_class, confusion, `rejected` (share called "not a digit"), ece;
- `nondigits`: the test non-digits (ml/nondigits.py's test generator) and the share rejected;
- with --drawn, `drawn`: every style of ml/drawn.py's evaluation (MNIST test digits re-drawn with
  pens, placements, canvases, low-res scans) and `overall`: accuracy, rejected, ece.
Everything is predicted through ml.predictor.Predictor, as served. --plots writes
reliability.png, mistakes.png, rejected_nondigits.png, rejected_digits.png and confusion.png;
--card stores the report in the model card beside the weights (`evaluation`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from ml.calibration import (
    Calibration,
    digit_scores,
    expected_calibration_error,
    fit_temperature,
    fit_threshold,
    softmax,
)
from ml.data import Split, ensure_mnist, load_split
from ml.drawn import EVAL_STYLES, canvas_digits, drawn_set
from ml.model import NUM_CLASSES, DigitNet, parameter_count
from ml.nondigits import TRAIN_SEED, nondigits, nondigits_for_testing
from ml.predictor import Answers, Predictor, logits_of
from ml.preprocess import to_model_input
from ml.strokes import TRAIN_PEN

DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "digit_model.pth"
DRAWN_N = 1000  # MNIST test digits per drawn style
NONDIGITS_N = 2000
VALIDATION_NONDIGITS_SEED = TRAIN_SEED + 1  # the training generator, a stream training never saw


def _predictor(model: DigitNet | Predictor) -> Predictor:
    return model if isinstance(model, Predictor) else Predictor(model=model, device="cpu")


def predict_probabilities(model: DigitNet | Predictor, inputs: torch.Tensor) -> np.ndarray:
    """Calibrated probabilities (N x 10) for normalised inputs, through the one inference path."""
    return _predictor(model).predict(inputs)


def score(predicted: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy, per-class accuracy and the confusion matrix (rows true, columns predicted)."""
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    per_class = {
        str(d): round(float(confusion[d, d] / max(1, confusion[d].sum())), 4)
        for d in range(NUM_CLASSES)
    }
    return {
        "accuracy": round(float((predicted == labels).mean()), 4) if len(labels) else 0.0,
        "n": int(len(labels)),
        "per_class": per_class,
        "confusion": confusion.tolist(),
    }


def score_answers(answers: Answers, labels: np.ndarray) -> dict:
    """`score` plus the share rejected as "not a digit" and the expected calibration error."""
    result = score(answers.prediction, labels)
    result["rejected"] = round(float((~answers.is_digit).mean()), 4) if len(labels) else 0.0
    result["ece"] = (
        round(expected_calibration_error(answers.probabilities, labels), 4) if len(labels) else 0.0
    )
    return result


def evaluate_images(model: DigitNet | Predictor, images: np.ndarray, labels: np.ndarray) -> dict:
    """Score uint8 28x28 images (already in model form, like MNIST's)."""
    return score_answers(_predictor(model).answer_images(images), labels)


def evaluate_nondigits(model: DigitNet | Predictor, images: np.ndarray) -> dict:
    """The share of non-digits rejected (higher is better)."""
    answers = _predictor(model).answer_images(images)
    return {
        "n": int(len(images)),
        "rejected": round(float((~answers.is_digit).mean()), 4) if len(images) else 0.0,
    }


def evaluate_drawn(model: DigitNet | Predictor, images: np.ndarray, labels: np.ndarray) -> dict:
    """Every drawn style, and all of them together as `overall`."""
    predictor = _predictor(model)
    styles, inputs, truths = {}, [], []
    for style in EVAL_STYLES:
        drawn, kept = drawn_set(images, style)
        inputs.append(drawn)
        truths.append(labels[kept])
        entry = score_answers(predictor.answer_images(drawn), labels[kept])
        styles[style] = {k: entry[k] for k in ("accuracy", "n", "rejected", "ece")}
    every = predictor.answer_images(np.concatenate(inputs))
    overall = score_answers(every, np.concatenate(truths))
    styles["overall"] = {k: overall[k] for k in ("accuracy", "n", "rejected", "ece")}
    return styles


def calibrate(
    model: DigitNet, val: Split, seed: int, reject_rate: float
) -> tuple[Calibration, dict]:
    """Fit the temperature and the digit threshold on validation digits: the held-out MNIST
    training images and the same images as canvas digits. Returns the calibration and the
    validation figures it gives (accuracy, rejection, ECE; non-digits from a validation stream)."""
    drawn, drawn_labels = canvas_digits(val.images, val.labels, seed=seed + 100)
    images = np.concatenate([val.images, drawn])
    labels = np.concatenate([val.labels, drawn_labels])
    logits = logits_of(model, to_model_input(images))
    temperature = fit_temperature(logits, torch.from_numpy(labels))
    probabilities = softmax(logits, temperature)
    threshold = fit_threshold(digit_scores(probabilities), reject_rate)
    calibration = Calibration(temperature, threshold, reject_rate)

    predictor = Predictor(model=model, device="cpu", calibration=calibration)
    outliers, _ = nondigits(NONDIGITS_N, VALIDATION_NONDIGITS_SEED, TRAIN_PEN)
    mnist = evaluate_images(predictor, val.images, val.labels)
    canvas = evaluate_images(predictor, drawn, drawn_labels)
    validation = {
        "mnist": {k: mnist[k] for k in ("accuracy", "n", "rejected", "ece")},
        "canvas": {k: canvas[k] for k in ("accuracy", "n", "rejected", "ece")},
        "nondigits": evaluate_nondigits(predictor, outliers),
    }
    return calibration, validation


def summary_lines(result: dict) -> list[str]:
    """The report as a table for people."""

    def row(name: str, entry: dict) -> str:
        accuracy = f"{100 * entry['accuracy']:6.2f}%" if "accuracy" in entry else "      -"
        ece = f"{100 * entry['ece']:5.2f}%" if "ece" in entry else "    -"
        return f"{name:<22}{entry['n']:>7}  {accuracy}  {100 * entry['rejected']:6.2f}%  {ece}"

    lines = [f"{'set':<22}{'n':>7}  accuracy  rejected    ECE", row("MNIST test", result)]
    for style, entry in result.get("drawn", {}).items():
        lines.append(row(f"drawn: {style}", entry))
    lines.append(row("test non-digits", result["nondigits"]))
    return lines


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--drawn", action="store_true", help="also score the drawn evaluation")
    parser.add_argument("--drawn-n", type=int, default=DRAWN_N, help="test digits per style")
    parser.add_argument("--nondigits-n", type=int, default=NONDIGITS_N)
    parser.add_argument("--plots", type=Path, help="write the PNG plots into this folder")
    parser.add_argument("--limit", type=int, help="only the first N test images")
    parser.add_argument(
        "--card", action="store_true", help="also store the report in the weights' model card"
    )
    parser.add_argument("--download", action="store_true", help="fetch MNIST first if missing")
    args = parser.parse_args(argv)
    # Missing MNIST: fetched only when asked, else the exit message says where to put it.
    ensure_mnist(download_if_missing=args.download)

    predictor = Predictor(args.weights, device="cpu")
    test = load_split("test")
    images, labels = test.images[: args.limit], test.labels[: args.limit]
    answers = predictor.answer_images(images)
    result = score_answers(answers, labels)
    result["parameters"] = parameter_count(predictor.model)
    result["weights"] = str(args.weights)
    result["calibration"] = predictor.calibration.as_dict()
    outliers, outlier_names = nondigits_for_testing(args.nondigits_n)
    result["nondigits"] = evaluate_nondigits(predictor, outliers)
    drawn_n = min(args.drawn_n, len(images))
    if args.drawn:
        result["drawn"] = evaluate_drawn(predictor, images[:drawn_n], labels[:drawn_n])
    if args.plots:
        from ml.plots import write_plots

        write_plots(predictor, images, labels, outliers, outlier_names, args.plots, drawn_n)
    print(json.dumps(result))
    print("\n".join(summary_lines(result)), file=sys.stderr)
    if args.card:
        card_file = args.weights.with_suffix(".json")
        card = json.loads(card_file.read_text()) if card_file.exists() else {}
        card["evaluation"] = {k: v for k, v in result.items() if k != "weights"}
        card_file.write_text(json.dumps(card, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
