"""Synthetic non-digits drawn with the same pen as the digits (ml/strokes.py).

Families: capital letters that nobody reads as a digit, symbols, shapes (a heart, a smiley, a
star...), scribbles, hatching and several digits' worth of random strokes. Every glyph is a set of
polylines in a unit box (y down) that the pen jitters, rotates, shears and places.

Training and testing use separate generators: `TRAIN_SEED` and `TEST_SEED` seed different streams,
and the test set also draws its glyphs with a different pen (`TEST_PEN`), so a test non-digit is
never a training non-digit.

Letters that look like digits (O, I, l, S, Z, B, G, q, T, L, J, b, g) are left out on purpose, and
so are bare circles, lines and question marks: a person may mean a digit by them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ml.strokes import TRAIN_PEN, Pen, Polyline, draw_strokes, to_28

TRAIN_SEED = 20_190_101  # Hendrycks et al. (2019)'s year: outlier exposure
TEST_SEED = 7_777_777
TEST_PEN = Pen(height=(0.45, 0.85), width=(0.05, 0.18), rotation_deg=12.0, centre_spread=0.15)


def _p(*xy: float) -> Polyline:
    return np.array(xy, dtype=np.float32).reshape(-1, 2)


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int = 24) -> Polyline:
    t = np.radians(np.linspace(a0, a1, n))
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1).astype(np.float32)


LETTERS: dict[str, list[Polyline]] = {
    "A": [_p(0.1, 1, 0.5, 0, 0.9, 1), _p(0.28, 0.58, 0.72, 0.58)],
    "E": [_p(0.85, 0, 0.15, 0, 0.15, 1, 0.85, 1), _p(0.15, 0.5, 0.7, 0.5)],
    "F": [_p(0.85, 0, 0.15, 0, 0.15, 1), _p(0.15, 0.48, 0.7, 0.48)],
    "H": [_p(0.15, 0, 0.15, 1), _p(0.85, 0, 0.85, 1), _p(0.15, 0.5, 0.85, 0.5)],
    "K": [_p(0.15, 0, 0.15, 1), _p(0.85, 0, 0.15, 0.55), _p(0.35, 0.42, 0.85, 1)],
    "M": [_p(0.05, 1, 0.12, 0, 0.5, 0.65, 0.88, 0, 0.95, 1)],
    "N": [_p(0.15, 1, 0.15, 0, 0.85, 1, 0.85, 0)],
    "R": [
        np.concatenate([_p(0.15, 1, 0.15, 0, 0.5, 0), _arc(0.5, 0.25, 0.3, 0.25, -90, 90)]),
        _p(0.5, 0.5, 0.15, 0.5),
        _p(0.45, 0.5, 0.85, 1),
    ],
    "W": [_p(0.0, 0, 0.22, 1, 0.5, 0.35, 0.78, 1, 1.0, 0)],
    "X": [_p(0.1, 0, 0.9, 1), _p(0.9, 0, 0.1, 1)],
    "Y": [_p(0.1, 0, 0.5, 0.5, 0.9, 0), _p(0.5, 0.5, 0.5, 1)],
    "V": [_p(0.1, 0, 0.5, 1, 0.9, 0)],
    "k": [_p(0.2, 0, 0.2, 1), _p(0.75, 0.4, 0.2, 0.75), _p(0.4, 0.65, 0.8, 1)],
    "h": [_p(0.2, 0, 0.2, 1), np.concatenate([_arc(0.5, 0.65, 0.3, 0.2, 180, 360), _p(0.8, 1)])],
    "e": [np.concatenate([_p(0.15, 0.55, 0.85, 0.55), _arc(0.5, 0.6, 0.35, 0.4, 0, -300)])],
    "m": [
        np.concatenate(
            [_p(0.05, 1, 0.05, 0.5), _arc(0.275, 0.6, 0.225, 0.2, 180, 360), _p(0.5, 1)]
        ),
        np.concatenate([_arc(0.725, 0.6, 0.225, 0.2, 180, 360), _p(0.95, 1)]),
    ],
}


def _star(points: int = 5) -> list[Polyline]:
    order = [(i * 2) % points for i in range(points + 1)]
    angle = [math.radians(-90 + 360 * k / points) for k in order]
    return [np.array([(0.5 + 0.5 * math.cos(a), 0.5 + 0.5 * math.sin(a)) for a in angle], "f4")]


def _heart() -> list[Polyline]:
    t = np.linspace(0, 2 * np.pi, 60)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return [np.stack([x / 34 + 0.5, (y + 17) / 34], axis=1).astype(np.float32)]


def _smiley() -> list[Polyline]:
    return [
        _arc(0.5, 0.5, 0.5, 0.5, 0, 360, 48),
        _p(0.33, 0.33, 0.34, 0.37),
        _p(0.67, 0.33, 0.66, 0.37),
        _arc(0.5, 0.55, 0.27, 0.22, 20, 160),
    ]


SHAPES: dict[str, list[Polyline]] = {
    "triangle": [_p(0.5, 0, 1, 0.9, 0, 0.9, 0.5, 0)],
    "square": [_p(0, 0, 1, 0, 1, 1, 0, 1, 0, 0)],
    "star": _star(5),
    "heart": _heart(),
    "smiley": _smiley(),
    "house": [_p(0.1, 1, 0.1, 0.45, 0.5, 0, 0.9, 0.45, 0.9, 1, 0.1, 1), _p(0.1, 0.45, 0.9, 0.45)],
    "arrow": [_p(0, 0.5, 1, 0.5), _p(0.7, 0.2, 1, 0.5, 0.7, 0.8)],
    "crossed circle": [_arc(0.5, 0.5, 0.5, 0.5, 0, 360, 48), _p(0.15, 0.15, 0.85, 0.85)],
    "spiral": [
        np.stack([0.5 + r * np.cos(t), 0.5 + r * np.sin(t)], axis=1).astype(np.float32)
        for t, r in [(np.linspace(0, 6 * np.pi, 90), np.linspace(0.02, 0.5, 90))]
    ],
    "envelope": [_p(0, 0.2, 1, 0.2, 1, 0.8, 0, 0.8, 0, 0.2), _p(0, 0.2, 0.5, 0.55, 1, 0.2)],
}

SYMBOLS: dict[str, list[Polyline]] = {
    "+": [_p(0.5, 0, 0.5, 1), _p(0, 0.5, 1, 0.5)],
    "=": [_p(0, 0.3, 1, 0.3), _p(0, 0.7, 1, 0.7)],
    "#": [_p(0.35, 0, 0.25, 1), _p(0.75, 0, 0.65, 1), _p(0, 0.33, 1, 0.33), _p(0, 0.67, 1, 0.67)],
    "*": [_p(0.5, 0, 0.5, 1), _p(0.07, 0.25, 0.93, 0.75), _p(0.93, 0.25, 0.07, 0.75)],
    "%": [
        _arc(0.22, 0.2, 0.17, 0.17, 0, 360),
        _p(0.85, 0.05, 0.15, 0.95),
        _arc(0.78, 0.8, 0.17, 0.17, 0, 360),
    ],
    "@": [
        np.concatenate(
            [_arc(0.55, 0.5, 0.18, 0.2, 0, 360), _p(0.73, 0.7), _arc(0.5, 0.5, 0.45, 0.48, 20, 340)]
        )
    ],
    "x marks": [_p(0, 0, 0.4, 0.4), _p(0.4, 0, 0, 0.4), _p(0.6, 0.6, 1, 1), _p(1, 0.6, 0.6, 1)],
}


def _scribble(rng: np.random.Generator) -> list[Polyline]:
    """A scrawl: a random walk that keeps turning, one to three strokes."""
    lines = []
    for _ in range(rng.integers(1, 4)):
        n = int(rng.integers(40, 120))
        heading = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.5, n))
        steps = np.stack([np.cos(heading), np.sin(heading)], axis=1) * rng.uniform(0.02, 0.05)
        lines.append((np.cumsum(steps, axis=0) + rng.uniform(0.3, 0.7, 2)).astype(np.float32))
    return lines


def _zigzag(rng: np.random.Generator) -> list[Polyline]:
    n = int(rng.integers(5, 12))
    x = np.linspace(0, 1, n)
    y = np.where(np.arange(n) % 2 == 0, 0.0, 1.0) + rng.normal(0, 0.08, n)
    line = np.stack([x, y], axis=1) if rng.random() < 0.5 else np.stack([y, x], axis=1)
    return [line.astype(np.float32)]


def _hatching(rng: np.random.Generator) -> list[Polyline]:
    n = int(rng.integers(4, 8))
    slope = rng.uniform(-0.4, 0.4)
    return [_p(0, k / (n - 1), 1, k / (n - 1) + slope) for k in range(n)]


def _random_strokes(rng: np.random.Generator) -> list[Polyline]:
    """Several digits' worth of strokes: 4 to 9 random arcs and lines anywhere in the box."""
    lines = []
    for _ in range(rng.integers(4, 10)):
        if rng.random() < 0.5:
            lines.append(rng.uniform(0, 1, (2, 2)).astype(np.float32))
        else:
            c = rng.uniform(0.2, 0.8, 2)
            r = rng.uniform(0.1, 0.35, 2)
            a0 = rng.uniform(0, 360)
            lines.append(_arc(c[0], c[1], r[0], r[1], a0, a0 + rng.uniform(90, 300)))
    return lines


def _letter_pair(rng: np.random.Generator) -> list[Polyline]:
    """Two letters side by side, as someone writing a word would."""
    names = list(LETTERS)
    a, b = (LETTERS[names[i]] for i in rng.choice(len(names), 2))
    return [line * [0.45, 1] for line in a] + [line * [0.45, 1] + [0.55, 0] for line in b]


GENERATED: dict[str, Callable[[np.random.Generator], list[Polyline]]] = {
    "scribble": _scribble,
    "zigzag": _zigzag,
    "hatching": _hatching,
    "random strokes": _random_strokes,
    "letter pair": _letter_pair,
}
FAMILIES = ("letter", "symbol", "shape", "generated")


def glyph(rng: np.random.Generator) -> tuple[str, list[Polyline]]:
    """A random non-digit (its name and polylines), the families drawn evenly."""
    family = FAMILIES[rng.integers(len(FAMILIES))]
    table: dict = {"letter": LETTERS, "symbol": SYMBOLS, "shape": SHAPES}.get(family, GENERATED)
    name = list(table)[rng.integers(len(table))]
    lines = table[name](rng) if family == "generated" else table[name]
    return name, lines


def nondigits(n: int, seed: int, pen: Pen = TRAIN_PEN) -> tuple[np.ndarray, list[str]]:
    """n non-digits drawn and preprocessed as served: uint8 n x 28 x 28, and what each one is."""
    rng = np.random.default_rng(seed)
    images: list[np.ndarray] = []
    names: list[str] = []
    while len(images) < n:
        name, lines = glyph(rng)
        image = to_28(draw_strokes(lines, pen, rng))
        if image is not None:
            images.append(image)
            names.append(name)
    return np.stack(images) if images else np.zeros((0, 28, 28), np.uint8), names


def nondigits_for_training(n: int) -> tuple[np.ndarray, list[str]]:
    return nondigits(n, TRAIN_SEED, TRAIN_PEN)


def nondigits_for_testing(n: int) -> tuple[np.ndarray, list[str]]:
    return nondigits(n, TEST_SEED, TEST_PEN)
