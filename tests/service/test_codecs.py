"""The image codecs behind the routes: PNG output is lossless at every level and mode, JPEG input
decodes to Pillow's pixels whichever decoder runs (simplejpeg, or Pillow for what it leaves).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageOps

from tests.service.conftest import GRAY_GENERATOR, RGB_GENERATOR
from tests.service.sample_images import open_image, png_bytes, random_pixels


def _upscale(client: TestClient, data: bytes, content_type: str, **params: object) -> Any:
    response = client.post("/upscale", content=data, headers={"content-type": content_type}, params=params)
    assert response.status_code == 200, response.text
    return response


def _npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data))


def _smooth(height: int, width: int, channels: int, seed: int = 0) -> np.ndarray:
    """Photo-like pixels (gradients plus a little noise): what JPEG is made for, unlike pure noise."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    noise = np.random.default_rng(seed).normal(0, 6, (height, width, max(channels, 1)))
    planes = [(x * 3 + y * (c + 1) * 2) % 256 for c in range(max(channels, 1))]
    pixels = np.clip(np.stack(planes, axis=-1) + noise, 0, 255).astype(np.uint8)
    return pixels[..., 0] if channels == 0 else pixels


def _jpeg(image: Image.Image, **save: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **save)
    return buffer.getvalue()


@pytest.mark.parametrize("level", [0, 1, 2, 3, 6, 9])
@pytest.mark.parametrize(("model", "mode"), [(RGB_GENERATOR, "RGB"), (GRAY_GENERATOR, "L")])
def test_png_output_holds_the_exact_pixels_at_every_level(
    client: TestClient, override: Callable[..., None], level: int, model: str, mode: str
) -> None:
    override(png_compress_level=level)
    body = {"model": model, "seed": 11, "n": 1}
    png = client.post("/generate", json={**body, "format": "png"})
    array = _npy(client.post("/generate", json={**body, "format": "npy"}).content)[0]
    image = open_image(png.content)
    assert (png.status_code, png.headers["content-type"], image.format, image.mode) == (
        200,
        "image/png",
        "PNG",
        mode,
    )
    np.testing.assert_array_equal(np.asarray(image), array[..., 0] if mode == "L" else array)


@pytest.mark.parametrize("level", [1, 6])
@pytest.mark.parametrize(("channels", "mode"), [(4, "RGBA"), (2, "LA")])
def test_png_output_with_alpha_is_exact(
    client: TestClient, override: Callable[..., None], level: int, channels: int, mode: str
) -> None:
    override(png_compress_level=level)
    pixels = random_pixels(9, 7, channels, seed=level)
    upload = png_bytes(pixels)
    image = open_image(_upscale(client, upload, "image/png", format="png").content)
    array = _npy(_upscale(client, upload, "image/png", format="npy").content)
    assert (image.mode, image.size) == (mode, (28, 36))
    np.testing.assert_array_equal(np.asarray(image).reshape(array.shape), array)


JPEG_VARIANTS: dict[str, Callable[[], bytes]] = {
    "colour 4:2:0": lambda: _jpeg(Image.fromarray(_smooth(37, 53, 3)), quality=90),
    "colour 4:4:4": lambda: _jpeg(Image.fromarray(_smooth(40, 24, 3, 1)), quality=95, subsampling=0),
    "colour 4:2:2": lambda: _jpeg(Image.fromarray(_smooth(33, 31, 3, 2)), quality=75, subsampling=1),
    "progressive, optimised": lambda: _jpeg(
        Image.fromarray(_smooth(48, 40, 3, 3)), quality=85, progressive=True, optimize=True
    ),
    "grayscale": lambda: _jpeg(Image.fromarray(_smooth(30, 45, 0, 4)), quality=90),
    "restart markers": lambda: _jpeg(
        Image.fromarray(_smooth(64, 64, 3, 5)), quality=80, restart_marker_blocks=1
    ),
    "CMYK": lambda: _jpeg(Image.fromarray(_smooth(20, 20, 3, 6)).convert("CMYK"), quality=90),
    "EXIF rotated": lambda: _jpeg(
        Image.fromarray(_smooth(20, 36, 3, 7)), quality=90, exif=_orientation_exif(8)
    ),
}


def _orientation_exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


@pytest.mark.parametrize("variant", sorted(JPEG_VARIANTS))
def test_jpeg_input_decodes_to_pillows_pixels(client: TestClient, variant: str) -> None:
    data = JPEG_VARIANTS[variant]()
    with Image.open(io.BytesIO(data)) as opened:
        upright = ImageOps.exif_transpose(opened)
        pillow = upright.convert("L" if upright.mode == "L" else "RGB")
    from_jpeg = _npy(_upscale(client, data, "image/jpeg", format="npy").content)
    from_pillow_pixels = _npy(
        _upscale(client, png_bytes(np.asarray(pillow)), "image/png", format="npy").content
    )
    assert from_jpeg.shape == (pillow.height * 4, pillow.width * 4, 1 if pillow.mode == "L" else 3)
    np.testing.assert_array_equal(from_jpeg, from_pillow_pixels)


def test_jpeg_with_corrupt_scan_data_is_still_pillows_call(client: TestClient) -> None:
    # Complete (it ends with its end-of-image marker) but with scan bytes overwritten: simplejpeg
    # refuses such data, Pillow's libjpeg decodes what it can, as the service always did.
    data = bytearray(JPEG_VARIANTS["colour 4:2:0"]())
    scan = data.rfind(b"\xff\xda")
    data[scan + 40 : scan + 60] = bytes(range(0, 200, 10))
    response = client.post("/upscale", content=bytes(data), headers={"content-type": "image/jpeg"})
    assert (response.status_code, open_image(response.content).size) == (200, (53 * 4, 37 * 4))
