"""Tiled /upscale with models whose channels or layout differ from the image: pixels a user can check.

A 1-channel model upscales each channel of an RGB image as its own image; an NCHW model gives the
same pixels as its NHWC twin. Both run in several tiles, so every tile's conversion and paste (done
in the encode pool, a band of rows at a time) is part of what is checked.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from fastapi.testclient import TestClient
from onnx import helper

from service.app import create_app
from service.card import ValueRange
from service.settings import Settings
from tests.service.onnx_models import _float, _weights, graph_model, pixel_shuffle_upscaler, write_entry
from tests.service.sample_images import png_bytes, random_pixels

GRAY = "gray-x2"
NHWC = "rgb-nhwc-x2"
NCHW = "rgb-nchw-x2"


def nchw_upscaler(name: str, scale: int, *, seed: int) -> onnx.ModelProto:
    """`pixel_shuffle_upscaler`'s graph without its transposes: NCHW images in and out."""
    nodes = [
        helper.make_node("Conv", ["low_res", "conv"], ["features"], pads=[1, 1, 1, 1]),
        helper.make_node("DepthToSpace", ["features"], ["shuffled"], blocksize=scale),
        helper.make_node("Tanh", ["shuffled"], ["high_res"]),
    ]
    weights = {"conv": _weights(seed, 3 * scale * scale, 3, 3, 3)}
    inputs = [_float("low_res", ["N", 3, "H", "W"])]
    return graph_model(name, nodes, inputs, [_float("high_res", ["N", 3, "H2", "W2"])], weights)


def upscaler_card(name: str, channels: int, layout: str = "NHWC") -> dict[str, object]:
    image_shape = [None, channels, None, None] if layout == "NCHW" else [None, None, None, channels]
    return {
        "name": name,
        "kind": "upscaler",
        "input_name": "low_res",
        "output_name": "high_res",
        "input_shape": image_shape,
        "output_shape": image_shape,
        "channels": channels,
        "scale": 2,
        "input_range": ValueRange(low=0.0, high=1.0),
        "input_channels": channels,
        "layout": layout,
    }


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    repo: Path = tmp_path_factory.mktemp("tile-layouts")
    write_entry(repo, pixel_shuffle_upscaler(GRAY, 2, channels=1, seed=40), **upscaler_card(GRAY, 1))
    write_entry(repo, pixel_shuffle_upscaler(NHWC, 2, seed=41), **upscaler_card(NHWC, 3))
    write_entry(repo, nchw_upscaler(NCHW, 2, seed=41), **upscaler_card(NCHW, 3, "NCHW"))
    settings = Settings(models_dir=repo, tile_size=64, tile_overlap=8, warmup_batch_sizes=[1])
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def upscaled(client: TestClient, pixels: np.ndarray, model: str) -> np.ndarray:
    response = client.post(
        "/upscale",
        content=png_bytes(pixels),
        headers={"content-type": "image/png"},
        params={"model": model, "format": "npy"},
    )
    assert response.status_code == 200, response.text
    assert int(response.headers["x-tiles"]) > 1
    return np.load(io.BytesIO(response.content))


def test_one_channel_model_upscales_each_rgb_channel_as_its_own_image(client: TestClient) -> None:
    rgb = random_pixels(90, 150, 3, seed=7)
    result = upscaled(client, rgb, GRAY)
    assert result.shape == (180, 300, 3)
    for channel in range(3):
        alone = upscaled(client, np.ascontiguousarray(rgb[..., channel]), GRAY)
        np.testing.assert_array_equal(result[..., channel], alone[..., 0])


def test_nchw_model_gives_the_pixels_of_its_nhwc_twin(client: TestClient) -> None:
    rgb = random_pixels(100, 140, 3, seed=8)
    nhwc, nchw = upscaled(client, rgb, NHWC), upscaled(client, rgb, NCHW)
    assert nhwc.shape == nchw.shape == (200, 280, 3)
    np.testing.assert_array_equal(nchw, nhwc)
