"""POST /generate: parameters, formats, layouts, reproducibility, grayscale and flat generators."""

from __future__ import annotations

import base64
import io
import json
import zipfile

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.service.conftest import FLAT_GENERATOR, FLAT_SHAPE, GRAY_GENERATOR, RGB_GENERATOR
from tests.service.sample_images import open_image


def generate(client: TestClient, **body: object) -> object:
    return client.post("/generate", json=body)


def test_one_png_with_seed_header(client: TestClient) -> None:
    r = client.post("/generate", json={"model": RGB_GENERATOR, "seed": 5})
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/png"
    assert r.headers["x-seed"] == "5"
    assert r.headers["x-model"] == RGB_GENERATOR
    assert r.headers["x-images"] == "1"
    image = open_image(r.content)
    assert (image.mode, image.size) == ("RGB", (16, 16))


def test_empty_body_uses_default_generator_and_random_seed(client: TestClient) -> None:
    r = client.post("/generate")
    assert r.status_code == 200
    default = client.get("/models").json()["defaults"]["generator"]
    assert r.headers["x-model"] == default
    assert int(r.headers["x-seed"]) >= 0


def test_same_seed_same_bytes_and_x_seed_round_trip(client: TestClient) -> None:
    first = client.post("/generate", json={"model": RGB_GENERATOR, "n": 3})
    again = client.post(
        "/generate", json={"model": RGB_GENERATOR, "n": 3, "seed": int(first.headers["x-seed"])}
    )
    assert first.content == again.content
    other = client.post(
        "/generate", json={"model": RGB_GENERATOR, "n": 3, "seed": int(first.headers["x-seed"]) + 1}
    )
    assert other.content != first.content


def test_seed_is_the_documented_host_generator(client: TestClient) -> None:
    # The docs promise PCG64 standard normals: explicit latents drawn that way give the same image.
    latents = np.random.Generator(np.random.PCG64(42)).standard_normal((2, 16), dtype=np.float32)
    by_seed = client.post("/generate", json={"model": RGB_GENERATOR, "n": 2, "seed": 42, "format": "npy"})
    by_latents = client.post(
        "/generate", json={"model": RGB_GENERATOR, "latents": latents.tolist(), "format": "npy"}
    )
    assert by_seed.status_code == by_latents.status_code == 200
    assert "x-seed" not in by_latents.headers
    np.testing.assert_array_equal(
        np.load(io.BytesIO(by_seed.content)), np.load(io.BytesIO(by_latents.content))
    )


def test_truncation_redraws_large_values(client: TestClient) -> None:
    rng = np.random.Generator(np.random.PCG64(9))
    latents = rng.standard_normal((1, 16), dtype=np.float32)
    while (outside := np.abs(latents) > 0.5).any():
        latents[outside] = rng.standard_normal(int(outside.sum()), dtype=np.float32)
    truncated = client.post(
        "/generate", json={"model": RGB_GENERATOR, "seed": 9, "truncation": 0.5, "format": "npy"}
    )
    explicit = client.post(
        "/generate", json={"model": RGB_GENERATOR, "latents": latents.tolist(), "format": "npy"}
    )
    plain = client.post("/generate", json={"model": RGB_GENERATOR, "seed": 9, "format": "npy"})
    np.testing.assert_array_equal(
        np.load(io.BytesIO(truncated.content)), np.load(io.BytesIO(explicit.content))
    )
    assert truncated.content != plain.content


def test_several_images_come_as_a_zip(client: TestClient) -> None:
    r = client.post("/generate", json={"model": RGB_GENERATOR, "n": 3, "seed": 1})
    assert r.headers["content-type"] == "application/zip"
    assert r.headers["x-images"] == "3"
    archive = zipfile.ZipFile(io.BytesIO(r.content))
    assert archive.namelist() == ["0000.png", "0001.png", "0002.png"]
    one = client.post("/generate", json={"model": RGB_GENERATOR, "n": 1, "seed": 1})
    # The first image of a batch is the image of n=1 with the same seed.
    assert archive.read("0000.png") == one.content


@pytest.mark.parametrize(
    ("fmt", "media_type", "pil_format"), [("jpeg", "image/jpeg", "JPEG"), ("webp", "image/webp", "WEBP")]
)
def test_lossy_formats(client: TestClient, fmt: str, media_type: str, pil_format: str) -> None:
    r = client.post("/generate", json={"model": RGB_GENERATOR, "seed": 1, "format": fmt})
    assert r.headers["content-type"] == media_type
    assert open_image(r.content).format == pil_format
    several = client.post("/generate", json={"model": RGB_GENERATOR, "n": 2, "seed": 1, "format": fmt})
    extension = "jpg" if fmt == "jpeg" else "webp"
    assert zipfile.ZipFile(io.BytesIO(several.content)).namelist() == [
        f"0000.{extension}",
        f"0001.{extension}",
    ]


def test_npy_is_the_png_pixels(client: TestClient) -> None:
    array = np.load(
        io.BytesIO(
            client.post(
                "/generate", json={"model": RGB_GENERATOR, "n": 2, "seed": 3, "format": "npy"}
            ).content
        )
    )
    assert (array.dtype, array.shape) == (np.uint8, (2, 16, 16, 3))
    pngs = zipfile.ZipFile(
        io.BytesIO(client.post("/generate", json={"model": RGB_GENERATOR, "n": 2, "seed": 3}).content)
    )
    np.testing.assert_array_equal(np.asarray(open_image(pngs.read("0001.png"))), array[1])


def test_grid_layout_is_one_image_row_by_row(client: TestClient) -> None:
    r = client.post("/generate", json={"model": RGB_GENERATOR, "n": 5, "seed": 2, "layout": "grid"})
    assert r.headers["content-type"] == "image/png"
    grid = np.asarray(open_image(r.content))
    assert grid.shape == (2 * 16, 3 * 16, 3)  # 5 images: 3 columns, 2 rows
    images = np.load(
        io.BytesIO(
            client.post(
                "/generate", json={"model": RGB_GENERATOR, "n": 5, "seed": 2, "format": "npy"}
            ).content
        )
    )
    np.testing.assert_array_equal(grid[16:32, 16:32], images[4])
    assert not grid[16:32, 32:48].any()  # the empty sixth cell is black
    npy_grid = np.load(
        io.BytesIO(
            client.post(
                "/generate",
                json={"model": RGB_GENERATOR, "n": 5, "seed": 2, "layout": "grid", "format": "npy"},
            ).content
        )
    )
    np.testing.assert_array_equal(npy_grid, grid)


def test_json_only_when_accept_asks(client: TestClient) -> None:
    r = client.post(
        "/generate", json={"model": RGB_GENERATOR, "n": 2, "seed": 4}, headers={"Accept": "application/json"}
    )
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert (body["model"], body["seed"], body["n"], body["format"]) == (RGB_GENERATOR, 4, 2, "png")
    assert [i["index"] for i in body["images"]] == [0, 1]
    first = base64.b64decode(body["images"][0]["data"])
    binary = client.post(
        "/generate",
        json={"model": RGB_GENERATOR, "n": 1, "seed": 4},
        headers={"Accept": "image/png, application/json;q=0.5"},
    )
    assert binary.headers["content-type"] == "image/png"
    assert first == binary.content


def test_grayscale_generator_returns_mode_l(client: TestClient) -> None:
    r = client.post("/generate", json={"model": GRAY_GENERATOR, "seed": 1})
    image = open_image(r.content)
    assert (image.mode, image.size) == ("L", (28, 28))
    array = np.load(
        io.BytesIO(
            client.post("/generate", json={"model": GRAY_GENERATOR, "seed": 1, "format": "npy"}).content
        )
    )
    assert array.shape == (1, 28, 28, 1)


def test_flat_output_generator_is_reshaped(client: TestClient) -> None:
    height, width, _ = FLAT_SHAPE
    image = open_image(client.post("/generate", json={"model": FLAT_GENERATOR, "seed": 1}).content)
    assert (image.mode, image.size) == ("RGB", (width, height))


def test_images_use_the_full_output_range(client: TestClient) -> None:
    # tanh outputs map [-1, 1] → [0, 255]: latents far from zero saturate some pixels at both ends.
    latents = (np.linspace(-30, 30, 16, dtype=np.float32)[None]).tolist()
    array = np.load(
        io.BytesIO(
            client.post(
                "/generate", json={"model": RGB_GENERATOR, "latents": latents, "format": "npy"}
            ).content
        )
    )
    assert array.dtype == np.uint8 and array.max() > array.min()


def test_raw_json_nan_latents_are_refused(client: TestClient) -> None:
    body = json.dumps({"model": RGB_GENERATOR, "latents": [[0.0] * 16, [0.0] * 15 + [float("nan")]]})
    r = client.post("/generate", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert r.json()["error"] == {"code": "invalid_latents", "message": "latents[1] contains NaN or Inf"}
