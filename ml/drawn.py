"""MNIST digits re-drawn the way people send them, and the drawn-digit evaluation built from them.

`render_drawn` scales the bitmap onto a 280x280 white PNG canvas: `small` (digit ~25% of the canvas
height, in a corner), `large` (~80%, centred) and `offcentre` (~50%, towards the bottom right);
the benchmarks and the service's tests send these.

`drawn_set` is the drawn-digit evaluation (`python -m ml.evaluate --drawn`): MNIST test digits
re-drawn as pen strokes (ml/strokes.py) with pens of several widths, small and off-centre, on opaque
and transparent canvases, and as low-resolution upscaled scans, each decoded and preprocessed as
served. A re-drawing whose loops differ from the original's is left out of the set (about 8%: a
thick pen fills small loops, thinning opens loops that are nearly inked over), so every label is
still true. `canvas_digits` renders training digits the same ways for training.
"""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
from PIL import Image

from ml.preprocess import preprocess_many
from ml.strokes import Pen, hole_count, redraw, redraw_batch, to_28

CANVAS_PX = 280
# style -> (digit height as a share of the canvas, top-left corner of the digit as shares)
DRAWN_STYLES: dict[str, tuple[float, tuple[float, float]]] = {
    "small": (0.25, (0.04, 0.05)),
    "large": (0.80, (0.10, 0.10)),
    "offcentre": (0.50, (0.45, 0.40)),
}


def render_drawn(image: np.ndarray, style: str, canvas_px: int = CANVAS_PX) -> bytes:
    """PNG bytes of a 28x28 white-on-black digit re-drawn black-on-white at `style`'s size/place."""
    height_share, (left_share, top_share) = DRAWN_STYLES[style]
    rows = np.flatnonzero(image.max(axis=1) > 0)
    cols = np.flatnonzero(image.max(axis=0) > 0)
    crop = image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    target_h = round(canvas_px * height_share)
    target_w = max(1, round(crop.shape[1] * target_h / crop.shape[0]))
    digit = Image.fromarray(crop).resize((target_w, target_h), Image.Resampling.BICUBIC)
    canvas = Image.new("L", (canvas_px, canvas_px), 0)
    left = min(round(canvas_px * left_share), canvas_px - target_w)
    top = min(round(canvas_px * top_share), canvas_px - target_h)
    canvas.paste(digit, (left, top))
    inverted = Image.eval(canvas, lambda v: 255 - v)
    buffer = io.BytesIO()
    inverted.save(buffer, format="PNG")
    return buffer.getvalue()


# --- The drawn-digit evaluation and the canvas digits trained on ---------------------------------
# Built from MNIST *test* digits for the evaluation (never trained on) and from training digits for
# the training pool; the two share the renderers, never the digits.

PEN_CANVAS_PX = 280
_PEN = Pen(canvas_px=PEN_CANVAS_PX * 2, height=(0.6, 0.8), width=(0.09, 0.12), centre_spread=0.05)
# style -> (pen, transparent canvas); the pen is drawn at twice the canvas and downscaled, which
# antialiases the edges as a browser's canvas does.
PEN_STYLES: dict[str, tuple[Pen, bool]] = {
    "pen thin": (replace(_PEN, width=(0.045, 0.065)), False),
    "pen medium": (_PEN, False),
    "pen thick": (replace(_PEN, width=(0.15, 0.2)), False),
    "small corner": (replace(_PEN, height=(0.15, 0.25), centre=(0.15, 0.15)), False),
    "off-centre": (replace(_PEN, height=(0.35, 0.5), centre=(0.68, 0.7)), False),
    "transparent": (_PEN, True),
    "transparent small": (replace(_PEN, height=(0.2, 0.3), centre=(0.75, 0.25)), True),
}
LOWRES_STYLES = ("low-res upscaled", "low-res scan")
EVAL_STYLES = (*PEN_STYLES, *LOWRES_STYLES)
EVAL_SEED = 14_014
TRAIN_LOWRES_SIDES = (9, 16)  # a little harder than the evaluation's 10-16 px


def pen_png(image: np.ndarray, pen: Pen, transparent: bool, rng: np.random.Generator) -> bytes:
    """An MNIST digit re-drawn with a pen: PNG bytes, black on white or black on transparent."""
    ink = Image.fromarray(np.round(redraw(image, pen, rng) * 255).astype(np.uint8))
    ink = ink.resize((pen.canvas_px // 2,) * 2, Image.Resampling.BOX)
    if transparent:
        black = Image.new("L", ink.size, 0)
        picture = Image.merge("RGBA", (black, black, black, ink))
    else:
        picture = Image.eval(ink, lambda v: 255 - v)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def lowres_ink(
    image: np.ndarray, rng: np.random.Generator, sides: tuple[int, int] = (10, 16)
) -> np.ndarray:
    """A digit scanned small (`sides` px, inclusive) and blown up 10-20x: a low-res scan."""
    side = int(rng.integers(sides[0], sides[1] + 1))
    small = Image.fromarray(image).resize((side, side), Image.Resampling.BOX)
    big = int(side * rng.uniform(10, 20))
    method = (Image.Resampling.NEAREST, Image.Resampling.BILINEAR, Image.Resampling.BICUBIC)
    up = small.resize((big, big), method[int(rng.integers(3))])
    return np.asarray(up, dtype=np.float32) / 255.0


def lowres_png(image: np.ndarray, rng: np.random.Generator, scan: bool) -> bytes:
    """A low-res digit as PNG (dark on white), or with `scan` as a grey, noisy JPEG page."""
    ink = lowres_ink(image, rng)
    if scan:
        paper = rng.uniform(0.75, 0.95)
        gray = paper - ink * (paper - rng.uniform(0.05, 0.25))
        gray = gray + rng.normal(0, 0.02, gray.shape)
        picture = Image.fromarray(np.clip(gray * 255, 0, 255).astype(np.uint8))
        buffer = io.BytesIO()
        picture.save(buffer, format="JPEG", quality=int(rng.integers(60, 90)))
        return buffer.getvalue()
    picture = Image.fromarray(np.round(255 - ink * 255).astype(np.uint8))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def drawn_style_png(image: np.ndarray, style: str, rng: np.random.Generator) -> bytes:
    if style in PEN_STYLES:
        pen, transparent = PEN_STYLES[style]
        return pen_png(image, pen, transparent, rng)
    return lowres_png(image, rng, scan=style == "low-res scan")


def drawn_set(images: np.ndarray, style: str) -> tuple[np.ndarray, np.ndarray]:
    """The evaluation's 28x28 model inputs for `style`, and which of `images` they are: each digit
    drawn as PNG/JPEG bytes and run through `preprocess_many`, as served. A pen re-drawing that
    lost or gained a loop is left out (it is no longer that digit: `hole_count`). Seeded: the same
    set on every run."""
    rng = np.random.default_rng([EVAL_SEED, EVAL_STYLES.index(style)])
    batch = preprocess_many([drawn_style_png(image, style, rng) for image in images])
    refused = [error for error in batch.errors if error is not None]
    if refused:
        raise refused[0]
    if style not in PEN_STYLES:
        return batch.images, np.arange(len(images))
    same = hole_count(batch.images) == hole_count(images)
    return batch.images[same], np.flatnonzero(same)


def canvas_digits(
    images: np.ndarray, labels: np.ndarray, seed: int, lowres_share: float = 0.2
) -> tuple[np.ndarray, np.ndarray]:
    """Training digits as they arrive on canvases: most re-drawn with a random pen, a share as
    low-res scans; preprocessed as served (`preprocess_ink`). uint8 M x 28 x 28 and labels."""
    rng = np.random.default_rng(seed)
    lowres = rng.random(len(images)) < lowres_share
    drawn, drawn_labels = redraw_batch(images[~lowres], labels[~lowres], seed=seed + 1)
    scans = [to_28(lowres_ink(image, rng, TRAIN_LOWRES_SIDES)) for image in images[lowres]]
    kept = [i for i, scan in enumerate(scans) if scan is not None]
    scan_images = np.array([scans[i] for i in kept], dtype=np.uint8).reshape(-1, 28, 28)
    return (
        np.concatenate([drawn, scan_images]),
        np.concatenate([drawn_labels, labels[lowres][kept]]),
    )
