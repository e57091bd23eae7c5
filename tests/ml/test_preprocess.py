"""The canonical preprocessing: any drawing a client sends -> MNIST-framed 28x28."""

from __future__ import annotations

import io
import random
import struct
import time
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from ml.drawn import DRAWN_STYLES, render_drawn
from ml.preprocess import (
    MNIST_MEAN,
    MNIST_STD,
    EmptyDrawing,
    ImageTooLarge,
    InvalidImage,
    PreprocessError,
    frame_inks,
    preprocess_array,
    preprocess_arrays,
    preprocess_bytes,
    preprocess_many,
    to_model_input,
)


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


def shifted_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Mean abs difference, forgiving the one-pixel shift that integer centring may round to."""
    return min(
        mean_abs_diff(np.roll(a, (dy, dx), axis=(0, 1)), b)
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
    )


def zero_png(width: int, height: int, bit_depth: int = 8) -> bytes:
    """A real, valid all-black greyscale PNG of any size, built without holding it in memory."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    row = b"\x00" * (1 + (width * bit_depth + 7) // 8)  # filter byte + packed pixels
    compressor = zlib.compressobj(9)
    rows_per_step = max(1, (1 << 22) // len(row))
    idat = b""
    for start in range(0, height, rows_per_step):
        idat += compressor.compress(row * min(rows_per_step, height - start))
    idat += compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def test_small_in_a_corner_and_large_in_the_centre_give_nearly_the_same_image(mnist_test):
    same, plain = [], []
    for i in range(30):
        small = preprocess_bytes(render_drawn(mnist_test.images[i], "small")).image
        large = preprocess_bytes(render_drawn(mnist_test.images[i], "large")).image
        j = next(k for k in range(i + 1, 200) if mnist_test.labels[k] != mnist_test.labels[i])
        other = preprocess_bytes(render_drawn(mnist_test.images[j], "large")).image
        same.append(shifted_diff(small, large))
        plain.append(mean_abs_diff(small, large))
        # On a 0-255 scale; two different digits differ by 25-60.
        assert same[-1] < 12, f"test image {i}"
        assert same[-1] < shifted_diff(other, large) / 2, f"test image {i} against {j}"
    assert np.median(plain) < 2


def test_dark_on_light_and_light_on_dark_give_the_same_result(canvas, png_bytes):
    dark_on_light = preprocess_bytes(png_bytes(canvas))
    light_on_dark = preprocess_bytes(png_bytes(255 - canvas))
    np.testing.assert_array_equal(dark_on_light.image, light_on_dark.image)
    assert dark_on_light.image.max() == 255


@pytest.mark.parametrize("ink", [(0, 0, 0), (255, 255, 255), (30, 60, 200)])
def test_transparent_background_takes_the_ink_from_alpha_whatever_its_colour(
    canvas, png_bytes, ink
):
    rgba = np.zeros((*canvas.shape, 4), dtype=np.uint8)
    rgba[..., :3] = ink
    rgba[..., 3] = 255 - canvas  # opaque where the ink is, transparent elsewhere
    expected = preprocess_bytes(png_bytes(canvas)).image
    assert mean_abs_diff(preprocess_bytes(png_bytes(rgba)).image, expected) < 1


def test_opaque_rgba_is_read_as_grey(canvas, png_bytes):
    rgba = np.dstack([canvas, canvas, canvas, np.full_like(canvas, 255)])
    expected = preprocess_bytes(png_bytes(canvas)).image
    np.testing.assert_array_equal(preprocess_bytes(png_bytes(rgba)).image, expected)


@pytest.mark.parametrize(
    "format, options",
    [("JPEG", {"quality": 75}), ("WEBP", {"quality": 75}), ("WEBP", {"lossless": True})],
)
def test_jpeg_and_webp_are_accepted(canvas, png_bytes, format, options):
    data = png_bytes(np.dstack([canvas] * 3), format=format, **options)
    expected = preprocess_bytes(png_bytes(canvas)).image
    assert mean_abs_diff(preprocess_bytes(data).image, expected) < 4


def test_exif_orientation_is_applied(canvas, png_bytes):
    # A phone stores the photo sideways and says "rotate 90 degrees clockwise to view" (6).
    exif = Image.Exif()
    exif[0x0112] = 6
    sideways = png_bytes(np.rot90(canvas), format="JPEG", quality=95, exif=exif.tobytes())
    upright = png_bytes(canvas, format="JPEG", quality=95)
    assert mean_abs_diff(preprocess_bytes(sideways).image, preprocess_bytes(upright).image) < 2


def test_corrupt_exif_does_not_spoil_a_good_image(canvas, png_bytes):
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "Maker"
    data = bytearray(png_bytes(np.rot90(canvas), format="JPEG", exif=exif.tobytes()))
    # The first tag's type: ASCII (2) becomes SHORT (3), which Pillow cannot write back.
    data[data.find(b"Exif") + 17] = 3
    assert preprocess_bytes(bytes(data)).image.shape == (28, 28)


def test_sixteen_bit_greyscale_png_is_scaled_not_clipped(canvas, png_bytes):
    deep = png_bytes(canvas.astype(np.uint16) * 257)
    assert Image.open(io.BytesIO(deep)).mode.startswith("I;16")
    expected = preprocess_bytes(png_bytes(canvas)).image
    assert mean_abs_diff(preprocess_bytes(deep).image, expected) < 1


def white(size: int = 280) -> np.ndarray:
    return np.full((size, size), 255, dtype=np.uint8)


def speck(size: int) -> np.ndarray:
    image = white()
    image[100 : 100 + size, 120 : 120 + size] = 0
    return image


@pytest.mark.parametrize(
    "pixels, format",
    [
        (np.zeros((280, 280, 4), dtype=np.uint8), "PNG"),  # an untouched browser canvas
        (white(), "PNG"),
        (np.zeros((280, 280), dtype=np.uint8), "PNG"),
        (white(), "JPEG"),  # compression noise is not ink
        (speck(1), "PNG"),
        (speck(3), "PNG"),
        (speck(3), "JPEG"),
    ],
    ids=["transparent", "white", "black", "white-jpeg", "dot", "speck", "speck-jpeg"],
)
def test_blank_or_near_blank_raises_empty_drawing(png_bytes, pixels, format):
    with pytest.raises(EmptyDrawing) as caught:
        preprocess_bytes(png_bytes(pixels, format=format))
    assert caught.value.code == "empty_drawing"


def test_blank_array_raises_empty_drawing():
    with pytest.raises(EmptyDrawing):
        preprocess_array(np.zeros((28, 28), dtype=np.uint8))


@pytest.mark.parametrize(
    "width, height, bit_depth",
    [
        (20_000, 20_000, 1),  # 400 megapixels in ~60 KB
        (5_000, 5_000, 8),  # under Pillow's own bomb limit, over ours
        (9_000, 1, 8),  # few pixels, but a side over the limit
    ],
)
def test_oversized_image_is_refused_before_it_is_decoded(monkeypatch, width, height, bit_depth):
    data = zero_png(width, height, bit_depth)
    assert len(data) < 200_000
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self))
    started = time.perf_counter()
    with pytest.raises(ImageTooLarge) as caught:
        preprocess_bytes(data)
    assert caught.value.code == "image_too_large"
    assert decoded == []
    assert time.perf_counter() - started < 1


def test_oversized_array_is_refused():
    with pytest.raises(ImageTooLarge):
        preprocess_array(np.zeros((5_000, 5_000), dtype=np.uint8))


def test_garbage_and_truncated_images_raise_invalid_image(canvas, png_bytes):
    png = png_bytes(canvas)
    samples = [
        b"",
        b"hello, world",
        bytes(random.Random(0).randrange(256) for _ in range(4096)),
        png[:33],  # signature and header, no pixels
        png[: len(png) // 2],
        png_bytes(canvas, format="GIF"),  # a real image, but not a format we accept
    ]
    for data in samples:
        with pytest.raises(InvalidImage) as caught:
            preprocess_bytes(data)
        assert caught.value.code == "invalid_image"


@pytest.mark.parametrize("format", ["PNG", "JPEG", "WEBP"])
def test_corrupted_bytes_raise_only_preprocess_errors(canvas, png_bytes, format):
    # Anything else would surface as a server error instead of a 4xx with a stable code.
    data = png_bytes(canvas, format=format)
    rng = random.Random(format)
    for _ in range(60):
        broken = bytearray(data[: rng.randrange(1, len(data) + 1)])
        for _ in range(rng.randint(0, 4)):
            broken[rng.randrange(len(broken))] = rng.randrange(256)
        try:
            preprocess_bytes(bytes(broken))
        except PreprocessError:
            pass


def test_non_2d_array_is_invalid():
    with pytest.raises(InvalidImage):
        preprocess_array(np.zeros((28, 28, 3), dtype=np.uint8))


@pytest.mark.parametrize("style", ["small", "large", "offcentre"])
def test_output_is_framed_like_mnist(mnist_test, style):
    for i in range(20):
        image = preprocess_bytes(render_drawn(mnist_test.images[i], style)).image
        assert image.shape == (28, 28)
        assert image.dtype == np.uint8
        mass = image.astype(np.float64)
        ys, xs = np.mgrid[0:28, 0:28]
        centre = ((mass * ys).sum() / mass.sum(), (mass * xs).sum() / mass.sum())
        assert np.allclose(centre, (14, 14), atol=0.75), f"test image {i}: centre {centre}"
        rows = np.flatnonzero(image.any(axis=1))
        cols = np.flatnonzero(image.any(axis=0))
        longer = max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1)
        assert abs(longer - 20) <= 1, f"test image {i}: ink box {longer} px"


def test_tensor_is_the_normalised_image(canvas, png_bytes):
    result = preprocess_bytes(png_bytes(canvas))
    assert result.tensor.shape == (1, 28, 28)
    assert result.tensor.dtype == torch.float32
    expected = (result.image.astype(np.float32) / 255 - MNIST_MEAN) / MNIST_STD
    np.testing.assert_allclose(result.tensor[0].numpy(), expected, rtol=1e-5, atol=1e-5)
    # Background is MNIST's black, normalised.
    assert result.tensor.min().item() == pytest.approx(-MNIST_MEAN / MNIST_STD, abs=1e-5)


def test_mnist_digit_as_array_matches_its_png(mnist_test, png_bytes):
    digit = mnist_test.images[0]
    from_array = preprocess_array(digit).image
    from_png = preprocess_bytes(png_bytes(digit)).image
    np.testing.assert_array_equal(from_array, from_png)


def test_to_model_input_makes_batches():
    images = np.zeros((5, 28, 28), dtype=np.uint8)
    assert to_model_input(images).shape == (5, 1, 28, 28)
    assert to_model_input(images[0]).shape == (1, 1, 28, 28)


# --- Batches: one preprocessing, a drawing is a batch of one --------------------------------------


def test_a_batch_gives_each_item_what_it_gets_alone_and_a_bad_item_fails_alone(
    mnist_test, canvas, png_bytes
):
    images = [render_drawn(mnist_test.images[i], style) for i in range(6) for style in DRAWN_STYLES]
    images[3] = b"not an image"
    images[7] = png_bytes(np.full((280, 280), 255, dtype=np.uint8))  # blank
    images.append(png_bytes(canvas))  # another size in the same batch
    batch = preprocess_many(images)
    assert batch.images.shape == (len(images), 28, 28)
    assert isinstance(batch.errors[3], InvalidImage)
    assert isinstance(batch.errors[7], EmptyDrawing)
    assert list(batch.ok) == [i for i in range(len(images)) if i not in (3, 7)]
    for i in batch.ok:
        np.testing.assert_array_equal(batch.images[i], preprocess_bytes(images[i]).image)
    assert not batch.images[3].any() and not batch.images[7].any()


def test_arrays_are_framed_in_a_batch_without_any_image_library(mnist_test, monkeypatch):
    digits = mnist_test.images[:50].copy()
    digits[5] = 0  # blank
    alone = [preprocess_array(digit).image if i != 5 else None for i, digit in enumerate(digits)]

    def no_pil(*args: object, **kwargs: object) -> None:
        raise AssertionError("an array went through Pillow")

    monkeypatch.setattr(Image, "open", no_pil)
    monkeypatch.setattr(Image, "fromarray", no_pil)
    monkeypatch.setattr(Image.Image, "resize", no_pil)
    batch = preprocess_arrays(digits)
    assert isinstance(batch.errors[5], EmptyDrawing)
    for i in batch.ok:
        np.testing.assert_array_equal(batch.images[i], alone[i])
    # Floats in 0-1 and light-on-dark or dark-on-light give the same digits.
    np.testing.assert_array_equal(preprocess_arrays(255 - digits[:4]).images, batch.images[:4])
    np.testing.assert_array_equal(preprocess_arrays(digits[:4] / 255.0).images, batch.images[:4])


def test_scaling_is_pillows_antialiased_bilinear(mnist_test):
    """The batched matrices reproduce Pillow's BILINEAR resize (the filter MNIST-style framing and
    the shipped model's drawn-digit figures were made with), to within one level of 255."""
    rng = np.random.default_rng(0)
    for i in range(40):
        height, width = rng.integers(5, 300, size=2)
        ink = np.zeros((int(height) + 20, int(width) + 30), dtype=np.float32)
        ink[10 : 10 + height, 15 : 15 + width] = rng.random((height, width)) ** 3
        crop = np.where(ink > 0.1, ink, 0)[10 : 10 + height, 15 : 15 + width]
        scale = 20 / max(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        expected = np.asarray(
            Image.fromarray(crop, mode="F").resize(size, Image.Resampling.BILINEAR)
        )
        got = frame_inks(torch.from_numpy(ink)[None])
        assert got.errors == [None]
        # Undo the placement and brightening to compare the scaled digit itself.
        image = got.images[0].astype(np.float32)
        rows, cols = np.flatnonzero(image.any(1)), np.flatnonzero(image.any(0))
        placed = image[rows[0] : rows[0] + size[1], cols[0] : cols[0] + size[0]]
        reference = np.round(expected / expected.max() * 255)
        reference = reference[
            np.flatnonzero(reference.any(1))[0] :, np.flatnonzero(reference.any(0))[0] :
        ]
        assert np.abs(placed - reference[: placed.shape[0], : placed.shape[1]]).max() <= 1, i
