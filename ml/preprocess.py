"""The one canonical preprocessing: any drawing -> what the model sees.

Serving runs every submitted image through `preprocess_bytes`; training runs every collected drawing
through the same function and every 28x28 image (MNIST's included) through `to_model_input`, so the
model sees in production exactly what it saw in training.

The steps are MNIST's own: grayscale, ink as white on black, crop to the ink's bounding box, scale
the longer side to 20 px keeping the aspect ratio (antialiased), place in 28x28 so that the
centre of mass sits at the centre, normalise with MNIST's mean and standard deviation.

It works on batches: `frame_inks` crops, scales and centres N ink maps at once in torch, and a
single drawing is a batch of one. Batch jobs call `preprocess_many` (image bytes) and
`preprocess_arrays` (N x H x W numbers, which never go through an image library). The scaling is
Pillow's antialiased bilinear filter written as two weight matrices per image, so one batched
matmul scales every crop and the pixels stay those the model's figures were measured with;
torchvision's roi_align would crop and scale as fast, but averages boxes instead, which changes
the pixels.
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
    its settings (PREPROCESS_MAX_PIXELS, PREPROCESS_MAX_SIDE); decoding and framing cost ~30
    bytes a pixel at peak, so the default 4 Mpx bounds one image at ~120 MiB."""

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
    image: np.ndarray  # 28 x 28 uint8, white ink on black: what the model saw, to store and show

    @property
    def tensor(self) -> torch.Tensor:
        """1 x 28 x 28 float32, normalised: the model's input. Made on demand: the web process
        stores `image` and never needs it (the worker normalises a whole batch at once)."""
        return to_model_input(self.image)[0]


def preprocess_bytes(data: bytes, *, limits: ImageLimits = DEFAULT_LIMITS) -> Preprocessed:
    """Decode a PNG, JPEG or WebP drawing and turn it into the model's input."""
    ink = decode_ink(data, limits=limits)
    return preprocess_ink(ink)


def preprocess_array(pixels: np.ndarray, *, limits: ImageLimits = DEFAULT_LIMITS) -> Preprocessed:
    """The same pipeline for a grayscale array (a 28x28 MNIST digit or any drawing as numbers)."""
    if pixels.ndim != 2 or min(pixels.shape) < 1:
        raise InvalidImage(f"expected a 2-D grayscale array, got shape {pixels.shape}")
    batch = preprocess_arrays(pixels[None], limits=limits)
    if batch.errors[0] is not None:
        raise batch.errors[0]
    return Preprocessed(image=batch.images[0])


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
    """Light-on-dark or dark-on-light to ink in [0, 1], the background taken from the border.

    `gray` is one H x W image or a batch N x H x W; each image has its own background."""
    border = np.concatenate(
        [gray[..., 0, :], gray[..., -1, :], gray[..., :, 0], gray[..., :, -1]], axis=-1
    )
    background = np.median(border, axis=-1).astype(np.float32)[..., None, None]
    ink = np.where(background > 0.5, background - gray, gray - background)
    scale = np.maximum(background, 1.0 - background)
    return np.clip(ink / scale, 0.0, 1.0).astype(np.float32)


def preprocess_ink(ink: np.ndarray) -> Preprocessed:
    """Crop, scale to a 20 px box, centre by mass in 28x28, normalise: a batch of one."""
    batch = frame_inks(torch.from_numpy(np.ascontiguousarray(ink, dtype=np.float32))[None])
    if batch.errors[0] is not None:
        raise batch.errors[0]
    return Preprocessed(image=batch.images[0])


@dataclass(frozen=True)
class PreprocessedBatch:
    """Many drawings at once: `images[i]` is item i's 28x28 uint8 input (zeros when refused) and
    `errors[i]` is None, or the PreprocessError that refused it."""

    images: np.ndarray  # N x 28 x 28 uint8
    errors: list[PreprocessError | None]

    @property
    def ok(self) -> np.ndarray:
        """Indices of the items that can be scored."""
        return np.array([i for i, error in enumerate(self.errors) if error is None], dtype=np.int64)


def preprocess_arrays(
    pixels: np.ndarray, *, limits: ImageLimits = DEFAULT_LIMITS
) -> PreprocessedBatch:
    """`preprocess_array` for N grayscale images at once (N x H x W, e.g. a .npy or IDX file's
    digits), with no image library in the way: numbers in, numbers out."""
    if pixels.ndim != 3 or min(pixels.shape[1:]) < 1:
        raise InvalidImage(f"expected N x H x W grayscale arrays, got shape {pixels.shape}")
    limits.check(pixels.shape[2], pixels.shape[1])
    step = max(1, FRAME_PIXELS_PER_CALL // (pixels.shape[1] * pixels.shape[2]))
    parts = [_frame_gray(pixels[start : start + step]) for start in range(0, len(pixels), step)]
    if not parts:
        return frame_inks(torch.zeros((0, *pixels.shape[1:])))
    return PreprocessedBatch(
        images=np.concatenate([part.images for part in parts]),
        errors=[error for part in parts for error in part.errors],
    )


def _frame_gray(pixels: np.ndarray) -> PreprocessedBatch:
    gray = pixels.astype(np.float32)
    # Per image, as preprocess_array decides: 0-255 unless every value is within 0-1.
    gray /= np.where(gray.reshape(len(gray), -1).max(axis=1) > 1.0, 255.0, 1.0)[:, None, None]
    return frame_inks(torch.from_numpy(_ink_from_gray(gray)))


# Pixels framed in one call: past a few megapixels the temporaries outgrow the CPU's caches and a
# batch of big canvases gets slower per image, not faster.
FRAME_PIXELS_PER_CALL = 2_000_000


def preprocess_many(
    images: list[bytes], *, limits: ImageLimits = DEFAULT_LIMITS
) -> PreprocessedBatch:
    """`preprocess_bytes` for many images: each one decoded, then all framed in batches of one
    size (a job's canvases usually share theirs). A bad image fails alone with its reason."""
    errors: list[PreprocessError | None] = [None] * len(images)
    by_shape: dict[tuple[int, int], list[tuple[int, np.ndarray]]] = {}
    for index, data in enumerate(images):
        try:
            ink = decode_ink(data, limits=limits)
        except PreprocessError as exc:
            errors[index] = exc
            continue
        by_shape.setdefault(ink.shape, []).append((index, ink))
    result = np.zeros((len(images), CANVAS, CANVAS), dtype=np.uint8)
    for (height, width), group in by_shape.items():
        step = max(1, FRAME_PIXELS_PER_CALL // (height * width))
        for start in range(0, len(group), step):
            part = group[start : start + step]
            indices = [index for index, _ in part]
            framed = frame_inks(torch.from_numpy(np.stack([ink for _, ink in part])))
            result[indices] = framed.images
            for index, error in zip(indices, framed.errors, strict=True):
                errors[index] = error
    return PreprocessedBatch(images=result, errors=errors)


# Inference mode: no autograd bookkeeping on its ~70 small ops (a sixth of a lone drawing's
# framing); it returns numpy arrays, so no inference tensor escapes.
@torch.inference_mode()
def frame_inks(ink: torch.Tensor) -> PreprocessedBatch:
    """The framing, vectorised over a batch of ink maps (N x H x W float32 in [0, 1]).

    Per image, as MNIST was made: crop to the ink's bounding box, scale its longer side to 20 px
    with Pillow's antialiased bilinear filter (the triangle widened by the scale, weights clipped to
    the crop and renormalised: written here as two matrices per image, so one batched matmul
    scales every crop at once), brighten to a peak of 1, then move it by whole pixels so that its
    centre of mass sits at (14, 14) of the 28x28 frame.
    """
    n, height, width = ink.shape
    errors: list[PreprocessError | None] = [None] * n
    if n == 0:
        return PreprocessedBatch(images=np.zeros((0, CANVAS, CANVAS), np.uint8), errors=errors)
    # Fuzz below half the threshold is dropped inside the crop; what the threshold keeps is ink.
    clean = torch.nn.functional.threshold(ink.to(torch.float32), INK_THRESHOLD / 2, 0.0)
    counts = (clean > INK_THRESHOLD).flatten(1).sum(1)
    rows = clean.amax(2) > INK_THRESHOLD  # N x H: rows with ink
    cols = clean.amax(1) > INK_THRESHOLD  # N x W
    # argmax finds the first True; on the flipped mask, the last one.
    top, left = rows.byte().argmax(1), cols.byte().argmax(1)
    box_h = (height - rows.flip(1).byte().argmax(1) - top).double()
    box_w = (width - cols.flip(1).byte().argmax(1) - left).double()
    longer = torch.maximum(box_h, box_w)
    blank = counts < MIN_INK_PIXELS
    speck = longer < MIN_INK_EXTENT * max(height, width)

    scale = DIGIT_BOX / longer.clamp(min=1)
    new_h = torch.round(box_h * scale).clamp(min=1)
    new_w = torch.round(box_w * scale).clamp(min=1)
    # Rows and columns in one call: N x 20 x H and N x 20 x W.
    if height == width:
        both = _resize_weights(
            torch.cat([top, left]), torch.cat([box_h, box_w]), torch.cat([new_h, new_w]), height
        )
        resize_rows, resize_cols = both[:n], both[n:]
    else:
        resize_rows = _resize_weights(top, box_h, new_h, height)
        resize_cols = _resize_weights(left, box_w, new_w, width)
    digit = resize_rows @ clean @ resize_cols.transpose(1, 2)  # N x 20 x 20
    peak = digit.flatten(1).amax(1)
    blank |= peak <= 0
    digit = digit / peak.clamp(min=1e-12)[:, None, None]

    positions = torch.arange(DIGIT_BOX, dtype=torch.float64)
    profiles = torch.stack([digit.sum(2), digit.sum(1)], 1).double()  # N x 2 x 20: y, x
    com = (profiles * positions).sum(2) / profiles[:, 0].sum(1, keepdim=True).clamp(min=1e-12)
    # Integer placement, as MNIST did; a digit may not be pushed out of the frame.
    offset = torch.round(CENTRE - com).clamp(min=0)
    offset = torch.minimum(offset, CANVAS - torch.stack([new_h, new_w], 1)).long()
    frame = _place(digit, offset[:, 0], offset[:, 1])

    images = torch.round(frame * 255.0).to(torch.uint8)
    for i in torch.flatten(torch.nonzero(blank | speck)).tolist():
        errors[i] = EmptyDrawing(
            "the drawing is blank" if blank[i] else "the drawing is only a speck"
        )
        images[i] = 0
    return PreprocessedBatch(images=images.numpy(), errors=errors)


def _resize_weights(
    start: torch.Tensor, length: torch.Tensor, out: torch.Tensor, size: int
) -> torch.Tensor:
    """N x 20 x size: row k holds Pillow's BILINEAR weights of output pixel k (k < out) over the
    input pixels [start, start + length); rows k >= out are zero."""
    step = (length / out)[:, None, None]  # input pixels per output pixel
    support = step.clamp(min=1.0)  # the triangle widens when shrinking: that is the antialiasing
    centre = _OUT_CENTRES * step
    pixel = torch.arange(size, dtype=torch.float64)[None, None, :] - start[:, None, None]
    weights = (1.0 - ((pixel + 0.5 - centre) / support).abs()).clamp(min=0.0)
    weights *= (pixel >= 0) & (pixel < length[:, None, None]) & (_OUT_INDEX < out[:, None, None])
    return (weights / weights.sum(2, keepdim=True).clamp(min=1e-12)).to(torch.float32)


_OUT_INDEX = torch.arange(DIGIT_BOX, dtype=torch.float64)[None, :, None]
_OUT_CENTRES = _OUT_INDEX + 0.5


def _place(digit: torch.Tensor, off_y: torch.Tensor, off_x: torch.Tensor) -> torch.Tensor:
    """N x 28 x 28 frames with each 20x20 digit's top-left corner at (off_y, off_x)."""
    n = len(digit)
    span = torch.arange(CANVAS)
    src_y = span[None, :] - off_y[:, None]  # N x 28: the digit row each frame row shows
    src_x = span[None, :] - off_x[:, None]
    valid_y = (src_y >= 0) & (src_y < DIGIT_BOX)
    valid_x = (src_x >= 0) & (src_x < DIGIT_BOX)
    src_y = src_y.clamp(0, DIGIT_BOX - 1)
    src_x = src_x.clamp(0, DIGIT_BOX - 1)
    rows = digit.gather(1, src_y[:, :, None].expand(n, CANVAS, DIGIT_BOX)) * valid_y[:, :, None]
    return rows.gather(2, src_x[:, None, :].expand(n, CANVAS, CANVAS)) * valid_x[:, None, :]


def to_model_input(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 28x28 images (H x W or N x H x W) -> normalised N x 1 x 28 x 28 float32."""
    batch = torch.tensor(np.asarray(images))
    if batch.ndim == 2:
        batch = batch.unsqueeze(0)
    batch = batch.to(torch.float32).div_(255.0).unsqueeze(1)
    return (batch - MNIST_MEAN) / MNIST_STD
