"""The Open Inference Protocol (v2) with the real `tritonclient[http]` client against a running server.

The server is uvicorn on a free loopback port in a thread (TestClient is not a socket, and the client
speaks HTTP/1.1 with the binary tensor extension). Every inference is checked against what the REST
route returns for the same input: the same pixels, whichever door they came through.
"""

from __future__ import annotations

import io
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
import uvicorn
from fastapi.testclient import TestClient
from tritonclient.utils import InferenceServerException

from service import __version__
from service.app import create_app
from service.card import ValueRange
from service.pixels import to_uint8
from service.settings import Settings
from tests.service.conftest import (
    FLAT_GENERATOR,
    FLAT_SHAPE,
    GRAY_GENERATOR,
    RGB_GENERATOR,
    RGB_LATENT,
    UPSCALER,
)
from tests.service.live_server import free_port
from tests.service.onnx_models import write_conditional_entry
from tests.service.sample_images import png_bytes, random_pixels

CONDITIONAL = "cgan-v2"
CLASSES = 3
LATENT = 6
EDGE = 8
LOADED = ", ".join(sorted([CONDITIONAL, FLAT_GENERATOR, GRAY_GENERATOR, RGB_GENERATOR, UPSCALER]))


@pytest.fixture(scope="module")
def v2_settings(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The test repository plus a conditional generator."""
    models = tmp_path_factory.mktemp("v2-models")
    for entry in repo.iterdir():
        shutil.copytree(entry, models / entry.name)
    write_conditional_entry(models, CONDITIONAL, LATENT, EDGE, CLASSES, ["a", "b", "c"])
    return Settings(models_dir=models, tile_size=32, tile_overlap=12, max_n=16, warmup_batch_sizes=[1])


@pytest.fixture(scope="module")
def server(v2_settings: Settings) -> Iterator[str]:
    """`host:port` of the app served by uvicorn in a thread, ready."""
    config = uvicorn.Config(
        create_app(v2_settings), host="127.0.0.1", port=free_port(), log_config=None, access_log=False
    )
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not running.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running.started, "uvicorn did not start"
    yield f"127.0.0.1:{config.port}"
    running.should_exit = True
    thread.join(30)


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[triton.InferenceServerClient]:
    """The Triton HTTP client, as a Triton, KServe or Seldon user would point it at us."""
    with triton.InferenceServerClient(server) as triton_client:
        yield triton_client


@pytest.fixture(scope="module")
def rest(server: str) -> Iterator[httpx.Client]:
    """Plain HTTP on the same server, for the REST routes to compare with."""
    with httpx.Client(base_url=f"http://{server}", timeout=30) as http:
        yield http


def _npy(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.asarray(np.load(io.BytesIO(response.content)))


def _tensor(name: str, array: np.ndarray, datatype: str, *, binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def _version(rest: httpx.Client, name: str) -> str:
    return str(rest.get(f"/models/{name}").json()["version"])


# -- health and metadata -------------------------------------------------------------------------


def test_server_health_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    metadata = client.get_server_metadata()
    assert (metadata["name"], metadata["version"]) == ("gan-serve", __version__)
    assert "binary_tensor_data" in metadata["extensions"]


def test_generator_metadata(client: triton.InferenceServerClient, rest: httpx.Client) -> None:
    version = _version(rest, RGB_GENERATOR)
    metadata = client.get_model_metadata(RGB_GENERATOR)
    assert metadata["name"] == RGB_GENERATOR
    assert metadata["versions"] == [version]
    assert metadata["platform"] == "onnxruntime_onnx"
    assert metadata["inputs"] == [{"name": "latents", "datatype": "FP32", "shape": [-1, RGB_LATENT]}]
    assert metadata["outputs"] == [{"name": "images", "datatype": "UINT8", "shape": [-1, 16, 16, 3]}]
    assert client.get_model_metadata(RGB_GENERATOR, model_version=version) == metadata


def test_conditional_generator_metadata_has_labels(client: triton.InferenceServerClient) -> None:
    metadata = client.get_model_metadata(CONDITIONAL)
    assert metadata["inputs"] == [
        {"name": "latents", "datatype": "FP32", "shape": [-1, LATENT]},
        {"name": "labels", "datatype": "INT64", "shape": [-1]},
    ]
    assert metadata["parameters"]["classes"] == CLASSES
    assert metadata["parameters"]["class_names"] == ["a", "b", "c"]
    assert metadata["outputs"] == [{"name": "images", "datatype": "UINT8", "shape": [-1, EDGE, EDGE, 1]}]


def test_upscaler_metadata(client: triton.InferenceServerClient) -> None:
    metadata = client.get_model_metadata(UPSCALER)
    assert metadata["inputs"] == [{"name": "images", "datatype": "UINT8", "shape": [-1, -1, -1, 3]}]
    assert metadata["outputs"] == [{"name": "images", "datatype": "UINT8", "shape": [-1, -1, -1, 3]}]
    assert metadata["parameters"]["scale"] == 4


def test_model_readiness_by_name_and_version(
    client: triton.InferenceServerClient, rest: httpx.Client
) -> None:
    assert client.is_model_ready(UPSCALER)
    assert client.is_model_ready(UPSCALER, model_version=_version(rest, UPSCALER))
    assert not client.is_model_ready(UPSCALER, model_version="no-such-version")
    assert not client.is_model_ready("nope")


def test_unknown_model_and_version_are_errors_the_client_reports(
    client: triton.InferenceServerClient,
) -> None:
    with pytest.raises(InferenceServerException) as unknown:
        client.get_model_metadata("nope")
    assert unknown.value.status() == "404"
    assert "no model named 'nope'" in unknown.value.message()
    with pytest.raises(InferenceServerException) as wrong_version:
        client.get_model_metadata(RGB_GENERATOR, model_version="7")
    assert "has no version '7'" in wrong_version.value.message()


# -- inference: the same pixels as the REST routes -------------------------------------------------


@pytest.mark.parametrize("binary", [True, False])
def test_generator_infer_equals_generate(
    client: triton.InferenceServerClient, rest: httpx.Client, binary: bool
) -> None:
    latents = np.random.Generator(np.random.PCG64(42)).standard_normal((3, RGB_LATENT), dtype=np.float32)
    result = client.infer(
        RGB_GENERATOR,
        [_tensor("latents", latents, "FP32", binary=binary)],
        outputs=[triton.InferRequestedOutput("images", binary_data=binary)],
    )
    images = result.as_numpy("images")
    assert images is not None and (images.dtype, images.shape) == (np.uint8, (3, 16, 16, 3))
    by_latents = _npy(
        rest.post("/generate", json={"model": RGB_GENERATOR, "latents": latents.tolist(), "format": "npy"})
    )
    by_seed = _npy(rest.post("/generate", json={"model": RGB_GENERATOR, "n": 3, "seed": 42, "format": "npy"}))
    np.testing.assert_array_equal(images, by_latents)
    np.testing.assert_array_equal(images, by_seed)
    assert result.get_response()["model_version"] == _version(rest, RGB_GENERATOR)


def test_flat_and_grayscale_generators(client: triton.InferenceServerClient, rest: httpx.Client) -> None:
    for name, latent, shape in ((FLAT_GENERATOR, 8, FLAT_SHAPE), (GRAY_GENERATOR, 32, (28, 28, 1))):
        latents = np.random.default_rng(1).standard_normal((2, latent)).astype(np.float32)
        images = client.infer(name, [_tensor("latents", latents, "FP32")]).as_numpy("images")
        assert images is not None and images.shape == (2, *shape)
        expected = _npy(
            rest.post("/generate", json={"model": name, "latents": latents.tolist(), "format": "npy"})
        )
        np.testing.assert_array_equal(images, expected)


def test_fp32_values_on_request(client: triton.InferenceServerClient, rest: httpx.Client) -> None:
    latents = np.random.default_rng(2).standard_normal((2, RGB_LATENT)).astype(np.float32)
    inputs = [_tensor("latents", latents, "FP32")]
    values = client.infer(RGB_GENERATOR, inputs, parameters={"datatype": "FP32"}).as_numpy("images")
    assert values is not None and (values.dtype, values.shape) == (np.float32, (2, 16, 16, 3))
    assert values.min() >= -1.0 and values.max() <= 1.0
    pixels = client.infer(RGB_GENERATOR, inputs).as_numpy("images")
    np.testing.assert_array_equal(to_uint8(values, ValueRange(low=-1.0, high=1.0)), pixels)


def test_conditional_infer_equals_generate_with_labels(
    client: triton.InferenceServerClient, rest: httpx.Client
) -> None:
    latents = np.random.default_rng(3).standard_normal((3, LATENT)).astype(np.float32)
    labels = np.array([2, 0, 1], np.int64)
    images = client.infer(
        CONDITIONAL, [_tensor("latents", latents, "FP32"), _tensor("labels", labels, "INT64")]
    ).as_numpy("images")
    body = {"model": CONDITIONAL, "latents": latents.tolist(), "labels": labels.tolist(), "format": "npy"}
    np.testing.assert_array_equal(images, _npy(rest.post("/generate", json=body)))
    # Without labels the images spread over the classes, as on /generate.
    spread = client.infer(CONDITIONAL, [_tensor("latents", latents, "FP32")]).as_numpy("images")
    default = {"model": CONDITIONAL, "latents": latents.tolist(), "format": "npy"}
    np.testing.assert_array_equal(spread, _npy(rest.post("/generate", json=default)))


@pytest.mark.parametrize(("channels", "tile"), [(3, None), (4, None), (1, 64)])
def test_upscaler_infer_equals_upscale(
    client: triton.InferenceServerClient, rest: httpx.Client, channels: int, tile: int | None
) -> None:
    height, width = (100, 120) if tile else (20, 24)
    pixels = random_pixels(height, width, channels, seed=channels)
    stored = pixels[..., 0] if channels == 1 else pixels
    parameters = {"tile": tile, "overlap": 16} if tile else None
    result = client.infer(UPSCALER, [_tensor("images", pixels[None], "UINT8")], parameters=parameters)
    upscaled = result.as_numpy("images")
    assert upscaled is not None and upscaled.shape == (1, height * 4, width * 4, channels)
    params: dict[str, Any] = {"format": "npy", **({"tile": tile, "overlap": 16} if tile else {})}
    response = rest.post(
        "/upscale", content=png_bytes(stored), headers={"content-type": "image/png"}, params=params
    )
    np.testing.assert_array_equal(upscaled[0], _npy(response))


def test_several_images_in_one_upscale_request(client: triton.InferenceServerClient) -> None:
    batch = np.stack([random_pixels(8, 8, 3, seed=s) for s in range(3)])
    upscaled = client.infer(UPSCALER, [_tensor("images", batch, "UINT8")]).as_numpy("images")
    alone = client.infer(UPSCALER, [_tensor("images", batch[1:2], "UINT8")]).as_numpy("images")
    assert upscaled is not None and alone is not None
    assert upscaled.shape == (3, 32, 32, 3)
    np.testing.assert_array_equal(upscaled[1], alone[0])


@pytest.mark.parametrize(
    ("model", "inputs", "status", "message"),
    [
        (RGB_GENERATOR, {"latents": np.zeros((1, RGB_LATENT), np.float64)}, "400", "is FP32, not float64"),
        (RGB_GENERATOR, {"latents": np.zeros((1, 5), np.float32)}, "422", "this model takes [n, 16]"),
        (RGB_GENERATOR, {"z": np.zeros((1, RGB_LATENT), np.float32)}, "400", "has no input 'z'"),
        (RGB_GENERATOR, {"latents": np.zeros((17, RGB_LATENT), np.float32)}, "422", "at most 16"),
        (RGB_GENERATOR, {"latents": np.full((1, RGB_LATENT), np.nan, np.float32)}, "422", "NaN or Inf"),
        (
            CONDITIONAL,
            {"latents": np.zeros((2, LATENT), np.float32), "labels": np.array([0, 3])},
            "422",
            "out of range",
        ),
        (UPSCALER, {"images": np.zeros((1, 8, 8, 3), np.float32)}, "400", "is UINT8, not float32"),
        (UPSCALER, {"images": np.zeros((8, 8, 3), np.uint8)}, "400", "[n, height, width, channels]"),
    ],
)
def test_bad_tensors_are_refused_with_a_message(
    client: triton.InferenceServerClient, model: str, inputs: dict[str, np.ndarray], status: str, message: str
) -> None:
    datatypes = {"float64": "FP64", "float32": "FP32", "int64": "INT64", "uint8": "UINT8"}
    tensors = [_tensor(name, array, datatypes[array.dtype.name]) for name, array in inputs.items()]
    with pytest.raises(InferenceServerException) as refused:
        client.infer(model, tensors)
    assert refused.value.status() == status
    assert message in refused.value.message()


# -- the protocol's JSON, without the client ----------------------------------------------------------


def test_json_request_and_errors_in_the_protocols_shape(v2_settings: Settings) -> None:
    with TestClient(create_app(v2_settings)) as http:
        body = {
            "id": "r-1",
            "inputs": [
                {"name": "latents", "shape": [1, RGB_LATENT], "datatype": "FP32", "data": [0.0] * RGB_LATENT}
            ],
        }
        response = http.post(f"/v2/models/{RGB_GENERATOR}/infer", json=body)
        assert response.status_code == 200
        answer = response.json()
        assert (answer["id"], answer["model_name"]) == ("r-1", RGB_GENERATOR)
        (output,) = answer["outputs"]
        assert (output["name"], output["datatype"], output["shape"]) == ("images", "UINT8", [1, 16, 16, 3])
        assert len(output["data"]) == 16 * 16 * 3
        assert response.headers["x-request-id"]

        missing = http.post("/v2/models/nope/infer", json=body)
        assert missing.status_code == 404
        assert missing.json() == {"error": f"no model named 'nope'; the loaded models are: {LOADED}"}
        malformed = http.post(f"/v2/models/{RGB_GENERATOR}/infer", json={"inputs": []})
        assert malformed.status_code == 422
        assert isinstance(malformed.json()["error"], str)
        text = http.get("/metrics").text
        assert (
            f'gan_serve_requests_total{{model="{RGB_GENERATOR}",route="/v2/models/{{name}}/infer",status="200"}}'
            in text
        )


def test_not_ready_before_startup(v2_settings: Settings) -> None:
    http = TestClient(create_app(v2_settings))  # no `with`: the lifespan has not run
    assert http.get("/v2/health/live").json() == {"live": True}
    not_ready = http.get("/v2/health/ready")
    assert not_ready.status_code == 503
    assert "not ready" in not_ready.json()["error"]
