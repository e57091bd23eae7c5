"""MNIST digits re-drawn the way a browser sends them: dark ink on a 280x280 white PNG canvas.

Used to check that the preprocessing undoes size and position: `small` (digit ~25% of the canvas
height, in a corner), `large` (~80%, centred) and `offcentre` (~50%, towards the bottom right).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

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
