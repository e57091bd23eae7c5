"""The one canonical preprocessing: any drawing -> what the model sees.

Serving runs every submitted image through `preprocess_bytes`; training runs every collected drawing
through the same function and every 28x28 image (MNIST's included) through `to_model_input`, so the
model sees in production exactly what it saw in training.

The steps are MNIST's own: grayscale, ink as white on black, crop to the ink's bounding box, scale
the longer side to 20 px keeping the aspect ratio (antialiased), place in 28x28 so that the
centre of mass sits at the centre, normalise with MNIST's mean and standard deviation.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

CANVAS = 28
DIGIT_BOX = 20
# MNIST's digits have their centre of mass at (14.0, 14.0) in pixel-index coordinates
# (measured over the 60,000 training images).
CENTRE = 14.0

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP")

# Ink is whatever differs from the background by more than this share of full scale; below it is
# paper grain, JPEG noise or antialiasing fuzz.
INK_THRESHOLD = 0.2
# A drawing whose ink fits in a box smaller than this share of the image's longer side is a speck.
MIN_INK_EXTENT = 0.02
MIN_INK_PIXELS = 4


class PreprocessError(ValueError):
    """Base for every input the preprocessing refuses; `code` is stable for API clients."""

    code = "invalid_image"


class InvalidImage(PreprocessError):
    code = "invalid_image"


class ImageTooLarge(PreprocessError):
    code = "image_too_large"


class EmptyDrawing(PreprocessError):
    code = "empty_drawing"


@dataclass(frozen=True)
class ImageLimits:
    """The largest image decoded, checked from its header before any pixel is. The service passes
    its settings (PREPROCESS_MAX_PIXELS, PREPROCESS_MAX_SIDE); decoding costs ~10 bytes a pixel,
    so the default 4 Mpx bounds one image at ~40 MiB."""

    max_pixels: int = 4 * 1024 * 1024
    max_side: int = 4096

    def check(self, width: int, height: int) -> None:
        if width * height > self.max_pixels or max(width, height) > self.max_side:
            raise ImageTooLarge(
                f"{width}x{height} is over the limit of {self.max_pixels} pixels "
                f"or {self.max_side} px a side"
            )


DEFAULT_LIMITS = ImageLimits()


@dataclass(frozen=True)
class Preprocessed:
    tensor: torch.Tensor  # 1 x 28 x 28 float32, normalised: the model's input
    image: np.ndarray  # 28 x 28 uint8, white ink on black: what the model saw, to store and show


def preprocess_bytes(data: bytes, *, limits: ImageLimits = DEFAULT_LIMITS) -> Preprocessed:
    """Decode a PNG, JPEG or WebP drawing and turn it into the model's input."""
    ink = decode_ink(data, limits=limits)
    return preprocess_ink(ink)


def preprocess_array(pixels: np.ndarray, *, limits: ImageLimits = DEFAULT_LIMITS) -> Preprocessed:
    """The same pipeline for a grayscale array (a 28x28 MNIST digit or any drawing as numbers)."""
    if pixels.ndim != 2 or min(pixels.shape) < 1:
        raise InvalidImage(f"expected a 2-D grayscale array, got shape {pixels.shape}")
    limits.check(pixels.shape[1], pixels.shape[0])
    gray = pixels.astype(np.float32)
    if gray.max() > 1.0:
        gray = gray / 255.0
    return preprocess_ink(_ink_from_gray(gray))


def open_image(data: bytes, *, limits: ImageLimits = DEFAULT_LIMITS) -> Image.Image:
    """Open a PNG, JPEG or WebP and check its size from the header: nothing is decoded yet, so a
    few hundred bytes that claim 20000x20000 pixels cost nothing. The caller decodes (`load()`),
    which never makes more pixels than the header checked here said."""
    try:
        with warnings.catch_warnings():
            # Pillow warns before it refuses; our own limit speaks first.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(str(exc)) from exc
    except UnidentifiedImageError as exc:
        raise InvalidImage("not a PNG, JPEG or WebP image") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidImage(f"the image could not be read: {exc}") from exc
    limits.check(*image.size)
    return image


def decode_ink(data: bytes, *, limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Decode image bytes to an ink map in [0, 1] (1 = full ink), whatever the polarity or alpha."""
    image = open_image(data, limits=limits)
    try:
        image.load()
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(str(exc)) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidImage(f"the image could not be decoded: {exc}") from exc

    image = _upright(image)
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        # One float band, not four: a few megapixels must not cost hundreds of MiB.
        alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32) / 255.0
        # A canvas with a transparent background: the paint is where alpha is, whatever its colour.
        if alpha.min() < 0.99:
            return alpha
        del alpha
        gray = np.asarray(rgba.convert("L"), dtype=np.float32) / 255.0
    elif image.mode.startswith("I;16"):
        # Pillow's convert("L") clips 16-bit greyscale at 255 instead of scaling it.
        gray = np.asarray(image, dtype=np.float32) / 65535.0
    else:
        gray = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    return _ink_from_gray(gray)


def _upright(image: Image.Image) -> Image.Image:
    """Turn a photo the way its EXIF orientation says, as browsers show it to the person."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:
        # Corrupt EXIF fails in many ways (struct.error, TypeError, ...); the pixels are still good.
        return image


def _ink_from_gray(gray: np.ndarray) -> np.ndarray:
    """Light-on-dark or dark-on-light to ink in [0, 1], the background taken from the border."""
    border = np.concatenate([gray[0, :], gray[-1, :], gray[:, 0], gray[:, -1]])
    background = float(np.median(border))
    if background > 0.5:
        ink = background - gray
    else:
        ink = gray - background
    scale = max(background, 1.0 - background)
    return np.clip(ink / scale, 0.0, 1.0)


def preprocess_ink(ink: np.ndarray) -> Preprocessed:
    """Crop, scale to a 20 px box, centre by mass in 28x28, normalise."""
    mask = ink > INK_THRESHOLD
    if mask.sum() < MIN_INK_PIXELS:
        raise EmptyDrawing("the drawing is blank")
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    if max(bottom - top, right - left) < MIN_INK_EXTENT * max(ink.shape):
        raise EmptyDrawing("the drawing is only a speck")

    crop = np.where(ink[top:bottom, left:right] > INK_THRESHOLD / 2, ink[top:bottom, left:right], 0)
    height, width = crop.shape
    scale = DIGIT_BOX / max(height, width)
    new_w = max(1, round(width * scale))
    new_h = max(1, round(height * scale))
    # Pillow's resampling filters widen with the scale factor, so downscaling is antialiased.
    resized = Image.fromarray(crop.astype(np.float32), mode="F").resize(
        (new_w, new_h), Image.Resampling.BILINEAR
    )
    digit = np.clip(np.asarray(resized, dtype=np.float32), 0.0, None)
    peak = digit.max()
    if peak <= 0:
        raise EmptyDrawing("the drawing is blank")
    digit /= peak

    ys, xs = np.mgrid[0:new_h, 0:new_w]
    mass = digit.sum()
    com_y = float((digit * ys).sum() / mass)
    com_x = float((digit * xs).sum() / mass)
    # Integer placement, as MNIST did; a digit may not be pushed out of the frame.
    off_y = int(np.clip(round(CENTRE - com_y), 0, CANVAS - new_h))
    off_x = int(np.clip(round(CENTRE - com_x), 0, CANVAS - new_w))
    frame = np.zeros((CANVAS, CANVAS), dtype=np.float32)
    frame[off_y : off_y + new_h, off_x : off_x + new_w] = digit

    image = np.round(frame * 255.0).astype(np.uint8)
    return Preprocessed(tensor=to_model_input(image)[0], image=image)


def to_model_input(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 28x28 images (H x W or N x H x W) -> normalised N x 1 x 28 x 28 float32."""
    batch = torch.tensor(np.asarray(images))
    if batch.ndim == 2:
        batch = batch.unsqueeze(0)
    batch = batch.to(torch.float32).div_(255.0).unsqueeze(1)
    return (batch - MNIST_MEAN) / MNIST_STD
