"""SageMaker's bring-your-own-container contract, against the real `gan-serve serve` process."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.settings import Settings
from tests.container.conftest import GENERATOR, UPSCALER, Container, start_container

pytestmark = pytest.mark.xdist_group("container")

ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
#: SageMaker's limit for one health check answer.
PING_LIMIT_SECONDS = 2.0


def png(size: int, *, mode: str = "RGB", seed: int = 0) -> bytes:
    channels = len(mode)
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, channels), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels[..., 0] if channels == 1 else pixels).save(buffer, "PNG")
    return buffer.getvalue()


def upscale(
    client: httpx.Client, body: bytes, accept: str | None = None, attributes: str | None = None
) -> httpx.Response:
    headers = {"Content-Type": "image/png"}
    if accept:
        headers["Accept"] = accept
    if attributes is not None:
        headers[ATTRIBUTES] = attributes
    return client.post("/invocations", content=body, headers=headers)


def generate(client: httpx.Client, body: dict[str, object], accept: str | None = None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if accept:
        headers["Accept"] = accept
    return client.post("/invocations", content=json.dumps(body), headers=headers)


# --- /ping ------------------------------------------------------------------------------------


def test_ping_is_never_unhealthy_with_a_body_from_the_moment_the_port_opens(container: Container) -> None:
    answered = [ping for ping in container.pings if ping.status is not None]
    assert answered, "the server never answered /ping"
    assert answered[-1].status == 200
    for ping in answered:
        assert ping.status in (200, 503)
        if ping.status == 200:
            assert ping.body == b""
        assert ping.seconds < PING_LIMIT_SECONDS


def test_ping_is_503_while_models_load(model_dir: Path) -> None:
    # The server binds its port only after the lifespan has loaded and warmed every model, so the
    # unready state is only reachable in-process: the app before its lifespan has run.
    app = create_app(Settings(models_dir=model_dir, device="cpu"))
    response = TestClient(app).get("/ping")
    assert response.status_code == 503
    assert len(response.content) < 200


def test_ping_after_ready_is_200_with_an_empty_body(client: httpx.Client) -> None:
    for _ in range(5):
        start = time.perf_counter()
        response = client.get("/ping")
        elapsed = time.perf_counter() - start
        assert response.status_code == 200
        assert response.content == b""
        assert elapsed < PING_LIMIT_SECONDS


def test_ping_answers_while_a_large_upscale_runs(container: Container, client: httpx.Client) -> None:
    slow = threading.Thread(
        target=lambda: upscale(container.client(), png(384, seed=3), "image/jpeg", "tile=0"), daemon=True
    )
    slow.start()
    time.sleep(0.3)
    start = time.perf_counter()
    response = client.get("/ping")
    assert time.perf_counter() - start < PING_LIMIT_SECONDS
    assert response.status_code == 200
    assert response.content == b""
    slow.join(timeout=60)


# --- /invocations: JSON body → generate ---------------------------------------------------------


def test_json_without_accept_gives_one_png(client: httpx.Client) -> None:
    response = generate(client, {"n": 1, "seed": 1})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-model"] == GENERATOR
    image = Image.open(io.BytesIO(response.content))
    assert (image.format, image.size, image.mode) == ("PNG", (32, 32), "RGB")


def test_json_with_several_images_gives_a_zip_by_default(client: httpx.Client) -> None:
    response = generate(client, {"model": GENERATOR, "n": 3, "seed": 2}, accept="*/*")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert archive.namelist() == ["0000.png", "0001.png", "0002.png"]
        assert Image.open(io.BytesIO(archive.read("0002.png"))).size == (32, 32)


@pytest.mark.parametrize(
    ("accept", "content_type", "pil_format"),
    [
        ("image/jpeg", "image/jpeg", "JPEG"),
        ("image/webp", "image/webp", "WEBP"),
        ("image/png", "image/png", "PNG"),
        ("image/webp;q=0.5, image/jpeg", "image/jpeg", "JPEG"),
    ],
)
def test_accept_picks_the_image_format(
    client: httpx.Client, accept: str, content_type: str, pil_format: str
) -> None:
    response = generate(client, {"n": 1, "seed": 3, "format": "png"}, accept=accept)
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert Image.open(io.BytesIO(response.content)).format == pil_format


def test_same_seed_same_image_whatever_the_route(client: httpx.Client) -> None:
    direct = client.post("/generate", json={"n": 1, "seed": 9})
    invoked = generate(client, {"n": 1, "seed": 9})
    assert invoked.content == direct.content


def test_accept_npy_gives_the_uint8_array_of_every_image(client: httpx.Client) -> None:
    response = generate(client, {"n": 4, "seed": 4}, accept="application/x-npy")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-npy"
    array = np.load(io.BytesIO(response.content))
    assert array.shape == (4, 32, 32, 3)
    assert array.dtype == np.uint8


def test_accept_json_gives_base64_images(client: httpx.Client) -> None:
    response = generate(client, {"n": 2, "seed": 5, "format": "jpeg"}, accept="application/json")
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == GENERATOR
    assert [image["media_type"] for image in body["images"]] == ["image/jpeg", "image/jpeg"]
    assert Image.open(io.BytesIO(base64.b64decode(body["images"][0]["data"]))).format == "JPEG"


def test_accept_zip_wraps_even_one_image(client: httpx.Client) -> None:
    response = generate(client, {"n": 1, "seed": 6}, accept="application/zip")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert archive.namelist() == ["images.png"]


def test_invalid_generate_body_is_422_naming_the_field(client: httpx.Client) -> None:
    response = generate(client, {"n": 0})
    assert response.status_code == 422
    assert "n" in response.json()["error"]["message"]


def test_unsupported_accept_is_406(client: httpx.Client) -> None:
    response = generate(client, {"n": 1}, accept="text/html")
    assert response.status_code == 406
    assert "image/png" in response.json()["error"]["message"]


# --- /invocations: image body → upscale ---------------------------------------------------------


def test_image_with_custom_attributes_is_upscaled(client: httpx.Client) -> None:
    response = upscale(client, png(16), attributes=f"model={UPSCALER}, tile=0")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-model"] == UPSCALER
    image = Image.open(io.BytesIO(response.content))
    assert (image.size, image.mode) == ((64, 64), "RGB")


@pytest.mark.parametrize(
    ("accept", "attributes", "content_type"),
    [
        (None, "format=webp", "image/webp"),
        ("image/jpeg", "format=webp", "image/jpeg"),
        ("*/*", "tile=64,overlap=4", "image/png"),
        ("application/x-npy", "", "application/x-npy"),
    ],
)
def test_upscale_output_format_from_accept_then_attributes(
    client: httpx.Client, accept: str | None, attributes: str, content_type: str
) -> None:
    response = upscale(client, png(24, seed=1), accept=accept, attributes=attributes)
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    if content_type == "application/x-npy":
        assert np.load(io.BytesIO(response.content)).shape == (96, 96, 3)
    else:
        assert Image.open(io.BytesIO(response.content)).size == (96, 96)


def test_tiled_and_untiled_upscales_have_the_same_size(client: httpx.Client) -> None:
    tiled = upscale(client, png(100, seed=2), "application/x-npy", "tile=64,overlap=8")
    whole = upscale(client, png(100, seed=2), "application/x-npy", "tile=0")
    assert tiled.headers["x-tiles"] != whole.headers["x-tiles"]
    assert np.load(io.BytesIO(tiled.content)).shape == np.load(io.BytesIO(whole.content)).shape


@pytest.mark.parametrize(
    ("attributes", "named"),
    [
        ("model=srgan-x4,tile", "'tile'"),
        ("colour=red", "'colour'"),
        ("tile=abc", "tile=abc"),
        ("tile=-8", "tile=-8"),
        ("format=gif", "format=gif"),
        ("tile=32,tile=64", "'tile'"),
        ("model=" + "x" * 1100, "1024"),
    ],
)
def test_bad_custom_attributes_are_400_naming_the_bad_part(
    client: httpx.Client, attributes: str, named: str
) -> None:
    response = upscale(client, png(16), attributes=attributes)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_custom_attributes"
    assert named in error["message"]


def test_unknown_model_in_attributes_is_404(client: httpx.Client) -> None:
    response = upscale(client, png(16), attributes="model=nope")
    assert response.status_code == 404


@pytest.mark.parametrize("content_type", ["text/csv", "application/x-www-form-urlencoded", "image/gif"])
def test_unsupported_content_type_is_415(client: httpx.Client, content_type: str) -> None:
    response = client.post("/invocations", content=b"a,b\n1,2\n", headers={"Content-Type": content_type})
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


def test_response_over_6_mb_is_413_saying_what_to_change(client: httpx.Client) -> None:
    # 384x384 upscaled x4 as a uint8 array: 1536 * 1536 * 3 bytes = 7.1 MB.
    response = upscale(client, png(384, seed=7), accept="application/x-npy", attributes="tile=128")
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "response_too_large"
    for advice in ("image/jpeg", "smaller input image", "asynchronous inference", "6,000,000"):
        assert advice in error["message"]


# --- SIGTERM --------------------------------------------------------------------------------------


def model_runs_in_flight(client: httpx.Client, model: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f'gan_serve_model_runs_in_flight{{model="{model}"}}'):
            return float(line.split()[-1])
    return 0.0


def test_sigterm_drains_the_in_flight_request_then_exits_0(model_dir: Path, tmp_path: Path) -> None:
    container = start_container(model_dir, tmp_path / "gan-serve.log")
    results: list[httpx.Response] = []
    try:
        with container.client() as watcher:
            slow = threading.Thread(
                target=lambda: results.append(
                    upscale(container.client(), png(512, seed=8), "image/jpeg", "tile=0")
                )
            )
            slow.start()
            deadline = time.monotonic() + 30
            while model_runs_in_flight(watcher, UPSCALER) < 1:
                assert time.monotonic() < deadline, "the upscale never started"
                time.sleep(0.02)
        stopped_at = time.monotonic()
        container.terminate()  # SIGTERM, as SageMaker and `docker stop` send
        slow.join(timeout=60)
        exit_code = container.wait(timeout=30)
        assert time.monotonic() - stopped_at < 30
    finally:
        container.stop()
    assert exit_code == 0, container.output()
    assert len(results) == 1
    assert results[0].status_code == 200
    assert Image.open(io.BytesIO(results[0].content)).size == (2048, 2048)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{container.url}/ping", timeout=2)


def test_unpacked_models_are_readable_by_the_images_non_root_user(model_dir: Path) -> None:
    # The image runs as uid 10001: every file must be world-readable, every directory traversable.
    paths = [model_dir, *model_dir.rglob("*")]
    assert any(path.name == "model.onnx" for path in paths)
    for path in paths:
        mode = path.stat().st_mode
        wanted = 0o005 if path.is_dir() else 0o004
        assert mode & wanted == wanted, f"{path} has mode {oct(mode)}"


# --- Batch Transform: /execution-parameters and JSON Lines ------------------------------------------


def test_batch_transform_mode_from_the_environment(model_dir: Path, tmp_path: Path) -> None:
    # As `gan-deploy transform` creates the model: GAN_SERVE_SAGEMAKER_MODE=batch in its environment.
    container = start_container(
        model_dir,
        tmp_path / "gan-serve.log",
        {"GAN_SERVE_SAGEMAKER_MODE": "batch", "GAN_SERVE_BATCH_MAX_PAYLOAD_MB": "20"},
    )
    try:
        with container.client() as client:
            parameters = client.get("/execution-parameters")
            lines = [{"n": 2, "seed": 1}, {"model": "nope"}, {"n": 1, "seed": 2, "format": "jpeg"}]
            answered = client.post(
                "/invocations",
                content="\n".join(json.dumps(line) for line in lines).encode(),
                headers={"Content-Type": "application/jsonlines", "Accept": "application/jsonlines"},
            )
    finally:
        assert container.stop() == 0, container.output()
    assert parameters.json() == {
        "MaxConcurrentTransforms": 4,
        "BatchStrategy": "MultiRecord",
        "MaxPayloadInMB": 20,
    }
    assert answered.status_code == 200
    assert answered.headers["content-type"] == "application/jsonlines"
    first, missing, last = (json.loads(line) for line in answered.text.split("\n"))
    assert (first["model"], first["seed"], len(first["images"])) == (GENERATOR, 1, 2)
    assert missing["error"]["code"] == "model_not_found"
    assert Image.open(io.BytesIO(base64.b64decode(last["images"][0]["data"]))).format == "JPEG"
