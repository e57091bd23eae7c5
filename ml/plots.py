"""The PNGs `python -m ml.evaluate --plots DIR` writes (drawn with Pillow: no plotting library).

reliability.png       confidence against accuracy per bin, MNIST test and the drawn evaluation
mistakes.png          the 64 worst mistakes (least probability on the true digit), as seen
rejected_nondigits.png  test non-digits turned away, captioned with their score
accepted_nondigits.png  test non-digits taken for digits (the failures), if any
rejected_digits.png   genuine digits turned away (the cost of the threshold)
confusion.png         counts, true down, predicted across
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ml.calibration import reliability
from ml.drawn import EVAL_STYLES, drawn_set
from ml.model import NUM_CLASSES
from ml.predictor import Answers, Predictor

TILE = 28 * 3


def write_plots(
    predictor: Predictor,
    images: np.ndarray,
    labels: np.ndarray,
    outliers: np.ndarray,
    outlier_names: list[str],
    folder: Path,
    drawn_n: int,
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    mnist = predictor.answer_images(images)
    sets = [drawn_set(images[:drawn_n], style) for style in EVAL_STYLES]
    drawn_images = np.concatenate([inputs for inputs, _ in sets])
    drawn_labels = np.concatenate([labels[kept] for _, kept in sets])
    drawn = predictor.answer_images(drawn_images)
    reliability_plot(
        {"MNIST test": (mnist, labels), "drawn": (drawn, drawn_labels)}, folder / "reliability.png"
    )

    all_images = np.concatenate([images, drawn_images])
    all_labels = np.concatenate([labels, drawn_labels])
    probabilities = np.concatenate([mnist.probabilities, drawn.probabilities])
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != all_labels)
    worst = wrong[np.argsort(probabilities[wrong, all_labels[wrong]])][:64]
    captions = [f"{all_labels[i]} -> {predicted[i]}" for i in worst]
    grid(all_images[worst], captions, folder / "mistakes.png")

    scores = np.concatenate([mnist.digit_score, drawn.digit_score])
    rejected = np.flatnonzero(~np.concatenate([mnist.is_digit, drawn.is_digit]))
    rejected = rejected[np.argsort(scores[rejected])][:64]
    captions = [f"{all_labels[i]} s={scores[i]:.2f}" for i in rejected]
    grid(all_images[rejected], captions, folder / "rejected_digits.png")

    outlier_answers = predictor.answer_images(outliers)
    for name, chosen in (
        ("rejected_nondigits.png", ~outlier_answers.is_digit),
        ("accepted_nondigits.png", outlier_answers.is_digit),
    ):
        picked = np.flatnonzero(chosen)[:64]
        captions = [
            f"{outlier_names[i][:6]} {outlier_answers.prediction[i]} "
            f"{outlier_answers.digit_score[i]:.2f}"
            for i in picked
        ]
        grid(outliers[picked], captions, folder / name)

    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    np.add.at(confusion, (labels, mnist.prediction), 1)
    confusion_plot(confusion, folder / "confusion.png")


def grid(images: np.ndarray, captions: list[str], path: Path) -> None:
    """Up to 64 images, eight to a row, each 84 px with a 16 px caption under it."""
    rows = max(1, (len(images) + 7) // 8)
    picture = Image.new("RGB", (TILE * 8, (TILE + 16) * rows), "white")
    draw = ImageDraw.Draw(picture)
    for k, (image, caption) in enumerate(zip(images, captions, strict=True)):
        x, y = (k % 8) * TILE, (k // 8) * (TILE + 16)
        picture.paste(Image.fromarray(image).resize((TILE, TILE), Image.Resampling.NEAREST), (x, y))
        draw.text((x + 4, y + TILE + 2), caption, fill="black")
    picture.save(path)


def reliability_plot(sets: dict[str, tuple[Answers, np.ndarray]], path: Path) -> None:
    """One panel per set: bars of accuracy per confidence bin against the diagonal."""
    size, pad = 320, 40
    picture = Image.new("RGB", ((size + pad * 2) * len(sets), size + pad * 2), "white")
    draw = ImageDraw.Draw(picture)
    for k, (name, (answers, labels)) in enumerate(sets.items()):
        x0, y0 = k * (size + pad * 2) + pad, pad
        draw.rectangle((x0, y0, x0 + size, y0 + size), outline="black")
        draw.line((x0, y0 + size, x0 + size, y0), fill=(160, 160, 160))
        for row in reliability(answers.probabilities, labels):
            left, right = x0 + row["low"] * size, x0 + row["high"] * size - 1
            top = y0 + size * (1 - row["accuracy"])
            draw.rectangle((left, top, right, y0 + size), fill=(90, 130, 200), outline="white")
            gap = y0 + size * (1 - row["confidence"])
            draw.line((left, gap, right, gap), fill=(220, 60, 60), width=2)
        draw.text((x0, 8), f"{name}: accuracy (bars) vs confidence (red)", fill="black")
        draw.text((x0, y0 + size + 8), "confidence 0 .. 1", fill="black")
    picture.save(path)


def confusion_plot(confusion: np.ndarray, path: Path) -> None:
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
    plot.save(path)
