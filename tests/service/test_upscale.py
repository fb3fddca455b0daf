"""POST /upscale: raw and multipart bodies, image modes, tiling, output formats."""

from __future__ import annotations

import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.service.conftest import UPSCALER
from tests.service.sample_images import open_image, png_bytes, random_pixels


def upscale(client: TestClient, data: bytes, content_type: str = "image/png", **params: object):  # type: ignore[no-untyped-def]
    return client.post("/upscale", content=data, headers={"content-type": content_type}, params=params)


def test_rgb_png_raw_body(client: TestClient) -> None:
    r = upscale(client, png_bytes(random_pixels(20, 30, 3)))
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/png"
    assert (r.headers["x-model"], r.headers["x-input-size"], r.headers["x-output-size"]) == (
        UPSCALER,
        "30x20",
        "120x80",
    )
    image = open_image(r.content)
    assert (image.mode, image.size) == ("RGB", (120, 80))


def test_multipart_upload_equals_raw_body(client: TestClient) -> None:
    data = png_bytes(random_pixels(20, 20, 3, seed=1))
    multipart = client.post("/upscale", files={"file": ("in.png", data, "image/png")})
    assert multipart.status_code == 200
    assert multipart.content == upscale(client, data).content


def test_octet_stream_body_is_sniffed(client: TestClient) -> None:
    data = png_bytes(random_pixels(8, 8, 3))
    assert upscale(client, data, "application/octet-stream").status_code == 200


def test_tiled_equals_untiled(client: TestClient) -> None:
    data = png_bytes(random_pixels(150, 200, 3, seed=2))
    whole = upscale(client, data, tile=0, format="npy")
    tiled = upscale(client, data, tile=64, overlap=16, format="npy")
    assert (whole.headers["x-tiles"], tiled.headers["x-tiles"]) == ("1", str(3 * 4))
    a, b = np.load(io.BytesIO(whole.content)).astype(int), np.load(io.BytesIO(tiled.content)).astype(int)
    assert a.shape == b.shape == (600, 800, 3)
    assert np.abs(a - b).max() <= 1


def test_server_tile_setting_applies(client: TestClient) -> None:
    # The test settings use 32-pixel tiles: a 40x40 image needs four.
    assert upscale(client, png_bytes(random_pixels(40, 40, 3))).headers["x-tiles"] == "4"


def test_grayscale_stays_grayscale(client: TestClient) -> None:
    gray = random_pixels(16, 12, 0, seed=3)
    r = upscale(client, png_bytes(gray), format="npy")
    array = np.load(io.BytesIO(r.content))
    assert array.shape == (64, 48, 1)
    # A 3-channel model sees the gray image replicated to RGB; the result is that RGB turned to L.
    rgb = open_image(upscale(client, png_bytes(np.repeat(gray[..., None], 3, axis=2))).content)
    np.testing.assert_array_equal(np.asarray(rgb.convert("L")), array[..., 0])
    assert open_image(upscale(client, png_bytes(gray)).content).mode == "L"


def test_rgba_alpha_is_upscaled_bicubic(client: TestClient) -> None:
    rgba = random_pixels(12, 10, 4, seed=4)
    image = open_image(upscale(client, png_bytes(rgba)).content)
    assert (image.mode, image.size) == ("RGBA", (40, 48))
    expected_alpha = Image.fromarray(rgba[..., 3]).resize((40, 48), Image.Resampling.BICUBIC)
    np.testing.assert_array_equal(np.asarray(image)[..., 3], np.asarray(expected_alpha))
    rgb_only = open_image(upscale(client, png_bytes(np.ascontiguousarray(rgba[..., :3]))).content)
    np.testing.assert_array_equal(np.asarray(image)[..., :3], np.asarray(rgb_only))


def test_palette_images(client: TestClient) -> None:
    rgb = Image.fromarray(random_pixels(10, 10, 3, seed=5)).convert(
        "P", palette=Image.Palette.ADAPTIVE, colors=8
    )
    plain = io.BytesIO()
    rgb.save(plain, "PNG")
    assert open_image(upscale(client, plain.getvalue()).content).mode == "RGB"
    transparent = io.BytesIO()
    rgb.save(transparent, "PNG", transparency=0)
    assert open_image(upscale(client, transparent.getvalue()).content).mode == "RGBA"


def test_sixteen_bit_png_is_reduced_to_8_bit(client: TestClient) -> None:
    wide = random_pixels(10, 10, 0, seed=6).astype(np.uint16) * 257
    r = upscale(client, png_bytes(wide), format="npy")
    narrow = upscale(client, png_bytes((wide // 257).astype(np.uint8)), format="npy")
    assert r.status_code == 200
    np.testing.assert_array_equal(np.load(io.BytesIO(r.content)), np.load(io.BytesIO(narrow.content)))


def test_exif_orientation_is_applied(client: TestClient) -> None:
    image = Image.fromarray(random_pixels(10, 20, 3))  # 20 wide, 10 high as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif.tobytes())
    r = upscale(client, buffer.getvalue(), "image/jpeg")
    assert r.headers["x-input-size"] == "10x20"
    assert open_image(r.content).size == (40, 80)


def test_webp_input(client: TestClient) -> None:
    buffer = io.BytesIO()
    Image.fromarray(random_pixels(8, 8, 3)).save(buffer, "WEBP")
    assert open_image(upscale(client, buffer.getvalue(), "image/webp").content).size == (32, 32)


@pytest.mark.parametrize(("fmt", "pil_format"), [("jpeg", "JPEG"), ("webp", "WEBP"), ("png", "PNG")])
def test_output_formats(client: TestClient, fmt: str, pil_format: str) -> None:
    r = upscale(client, png_bytes(random_pixels(8, 8, 3)), format=fmt)
    assert r.headers["content-type"] == f"image/{fmt}"
    assert open_image(r.content).format == pil_format


def test_npy_keeps_alpha(client: TestClient) -> None:
    r = upscale(client, png_bytes(random_pixels(8, 8, 4)), format="npy")
    assert r.headers["content-type"] == "application/x-npy"
    array = np.load(io.BytesIO(r.content))
    assert (array.dtype, array.shape) == (np.uint8, (32, 32, 4))


def test_json_when_accept_asks(client: TestClient) -> None:
    data = png_bytes(random_pixels(8, 8, 3))
    r = client.post(
        "/upscale", content=data, headers={"content-type": "image/png", "accept": "application/json"}
    )
    body = r.json()
    assert (body["model"], body["width"], body["height"], body["format"]) == (UPSCALER, 32, 32, "png")
    assert body["images"][0]["media_type"] == "image/png"
