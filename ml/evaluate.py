"""Evaluate weights on the MNIST test split (10,000 images), and on it re-drawn onto big canvases.

    python -m ml.evaluate [--weights ml/digit_model.pth] [--drawn] [--plots DIR]

Prints one JSON object: accuracy, n, per_class, parameters, confusion (and `drawn` with --drawn).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from ml.checkpoint import load_checkpoint
from ml.data import ensure_mnist, load_split
from ml.drawn import DRAWN_STYLES, render_drawn
from ml.model import NUM_CLASSES, DigitNet, parameter_count
from ml.preprocess import preprocess_many, to_model_input

DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "digit_model.pth"


@torch.inference_mode()
def predict_probabilities(model: DigitNet, inputs: torch.Tensor, batch: int = 1000) -> np.ndarray:
    """Softmax probabilities for normalised N x 1 x 28 x 28 inputs, N x 10."""
    model.eval()
    device = next(model.parameters()).device
    chunks = [
        torch.softmax(model(inputs[i : i + batch].to(device)), dim=1).cpu()
        for i in range(0, len(inputs), batch)
    ]
    return torch.cat(chunks).numpy()


def score(predicted: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy, per-class accuracy and the confusion matrix (rows true, columns predicted)."""
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    per_class = {
        str(d): round(float(confusion[d, d] / max(1, confusion[d].sum())), 4)
        for d in range(NUM_CLASSES)
    }
    return {
        "accuracy": round(float((predicted == labels).mean()), 4),
        "n": int(len(labels)),
        "per_class": per_class,
        "confusion": confusion.tolist(),
    }


def evaluate_images(model: DigitNet, images: np.ndarray, labels: np.ndarray) -> dict:
    """Score uint8 28x28 images (already in model form, like MNIST's)."""
    probabilities = predict_probabilities(model, to_model_input(images))
    return score(probabilities.argmax(axis=1), labels)


def evaluate_drawn(
    model: DigitNet, images: np.ndarray, labels: np.ndarray, style: str
) -> dict[str, float | int]:
    """Re-draw each digit onto a 280x280 PNG canvas in `style`, preprocess it as served, score."""
    batch = preprocess_many([render_drawn(image, style) for image in images])
    refused = [error for error in batch.errors if error is not None]
    if refused:
        raise refused[0]
    predicted = predict_probabilities(model, to_model_input(batch.images)).argmax(axis=1)
    return {"accuracy": round(float((predicted == labels).mean()), 4), "n": int(len(labels))}


def write_plots(model: DigitNet, images: np.ndarray, labels: np.ndarray, folder: Path) -> None:
    """confusion.png (counts, true down, predicted across) and mistakes.png (the 64 worst)."""
    folder.mkdir(parents=True, exist_ok=True)
    probabilities = predict_probabilities(model, to_model_input(images))
    predicted = probabilities.argmax(axis=1)
    confusion = np.array(score(predicted, labels)["confusion"])

    cell = 44
    plot = Image.new("RGB", (cell * 11, cell * 11), "white")
    draw = ImageDraw.Draw(plot)
    off_diagonal_max = max(1, (confusion - np.diag(np.diag(confusion))).max())
    for d in range(NUM_CLASSES):
        draw.text((cell * (d + 1) + 16, 14), str(d), fill="black")
        draw.text((16, cell * (d + 1) + 14), str(d), fill="black")
    for t in range(NUM_CLASSES):
        for p in range(NUM_CLASSES):
            count = int(confusion[t, p])
            box = (cell * (p + 1), cell * (t + 1), cell * (p + 2) - 1, cell * (t + 2) - 1)
            if t == p:
                fill = (200, 230, 200)
            else:
                shade = int(255 - 200 * min(1.0, count / off_diagonal_max))
                fill = (255, shade, shade)
            draw.rectangle(box, fill=fill, outline=(220, 220, 220))
            draw.text((box[0] + 6, box[1] + 14), str(count), fill="black")
    plot.save(folder / "confusion.png")

    wrong = np.flatnonzero(predicted != labels)
    worst = wrong[np.argsort(probabilities[wrong, labels[wrong]])][:64]
    tile = 28 * 3
    grid = Image.new("RGB", (tile * 8, (tile + 16) * max(1, (len(worst) + 7) // 8)), "white")
    draw = ImageDraw.Draw(grid)
    for k, i in enumerate(worst):
        x, y = (k % 8) * tile, (k // 8) * (tile + 16)
        grid.paste(
            Image.fromarray(images[i]).resize((tile, tile), Image.Resampling.NEAREST), (x, y)
        )
        draw.text((x + 4, y + tile + 2), f"true {labels[i]} got {predicted[i]}", fill="black")
    grid.save(folder / "mistakes.png")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--drawn", action="store_true", help="also score re-drawn canvases")
    parser.add_argument("--plots", type=Path, help="write confusion.png and mistakes.png here")
    parser.add_argument("--limit", type=int, help="only the first N test images")
    parser.add_argument("--download", action="store_true", help="fetch MNIST first if missing")
    args = parser.parse_args(argv)
    # Missing MNIST: fetched only when asked, else the exit message says where to put it.
    ensure_mnist(download_if_missing=args.download)

    model, _ = load_checkpoint(args.weights)
    test = load_split("test")
    images, labels = test.images[: args.limit], test.labels[: args.limit]
    result = evaluate_images(model, images, labels)
    result["parameters"] = parameter_count(model)
    result["weights"] = str(args.weights)
    if args.drawn:
        result["drawn"] = {
            style: evaluate_drawn(model, images, labels, style) for style in DRAWN_STYLES
        }
    if args.plots:
        write_plots(model, images, labels, args.plots)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
