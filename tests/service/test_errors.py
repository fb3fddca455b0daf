"""Every refusal: status, error code and a message the client can act on; never a traceback."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.deps import get_settings
from service.settings import Settings
from tests.service.conftest import GRAY_GENERATOR, RGB_GENERATOR, UPSCALER
from tests.service.sample_images import png_bytes, random_pixels


def error(response: Any, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code
    assert "Traceback" not in response.text
    return str(body["error"]["message"])


def post_image(client: TestClient, data: bytes, content_type: str = "image/png", **params: Any) -> Any:
    return client.post("/upscale", content=data, headers={"content-type": content_type}, params=params)


# /generate


def test_unknown_model(client: TestClient) -> None:
    message = error(client.post("/generate", json={"model": "nope"}), 404, "model_not_found")
    assert "nope" in message and RGB_GENERATOR in message


def test_upscaler_on_generate_is_wrong_kind(client: TestClient) -> None:
    message = error(client.post("/generate", json={"model": UPSCALER}), 422, "wrong_model_kind")
    assert "is an upscaler" in message and GRAY_GENERATOR in message


def test_n_above_max(client: TestClient) -> None:
    message = error(client.post("/generate", json={"n": 17}), 422, "too_many_images")
    assert "at most 16" in message


def test_n_above_max_set_through_settings_dependency(
    client: TestClient, override: Callable[..., None]
) -> None:
    override(max_n=2)
    error(client.post("/generate", json={"n": 3}), 422, "too_many_images")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"n": 0}, "body.n"),
        ({"seed": -1}, "body.seed"),
        ({"format": "bmp"}, "body.format"),
        ({"layout": "mosaic"}, "body.layout"),
        ({"truncation": 0}, "body.truncation"),
        ({"colour": "red"}, "body.colour"),
    ],
)
def test_invalid_parameters_name_the_field(client: TestClient, body: dict[str, object], field: str) -> None:
    response = client.post("/generate", json=body)
    message = error(response, 422, "invalid_request")
    assert field in message
    assert response.json()["error"]["fields"][0]["location"] == field


def test_seed_and_latents_together(client: TestClient) -> None:
    message = error(
        client.post("/generate", json={"seed": 1, "latents": [[0.0] * 16]}), 422, "invalid_request"
    )
    assert "either seed or latents" in message


def test_n_disagrees_with_latents(client: TestClient) -> None:
    message = error(client.post("/generate", json={"n": 2, "latents": [[0.0] * 16]}), 422, "invalid_request")
    assert "n is 2 but 1 latent vectors" in message


def test_latents_of_wrong_length(client: TestClient) -> None:
    body = {"model": RGB_GENERATOR, "latents": [[0.0] * 16, [0.0] * 15]}
    message = error(client.post("/generate", json=body), 422, "invalid_latents")
    assert message == "latents[1] has 15 values; this model takes 16"


def test_infinite_latents(client: TestClient) -> None:
    # json.dumps writes Infinity (not strict JSON), as many clients do.
    body = json.dumps({"model": RGB_GENERATOR, "latents": [[0.0] * 15 + [float("inf")]]})
    response = client.post("/generate", content=body, headers={"content-type": "application/json"})
    assert error(response, 422, "invalid_latents") == "latents[0] contains NaN or Inf"


def test_malformed_json(client: TestClient) -> None:
    response = client.post("/generate", content=b"{not json", headers={"content-type": "application/json"})
    error(response, 422, "invalid_request")


def test_a_body_that_cannot_be_read_is_a_documented_400(client: TestClient) -> None:
    # Bytes that are not UTF-8 never become JSON: FastAPI answers 400, which /generate must document.
    body = b'{"model": "\xff"}'
    response = client.post("/generate", content=body, headers={"content-type": "application/json"})
    assert error(response, 400, "bad_request") == "There was an error parsing the body"
    documented = client.get("/openapi.json").json()["paths"]["/generate"]["post"]["responses"]
    assert documented["400"]["content"]["application/json"]["schema"]["$ref"].endswith("ErrorResponse")


@pytest.mark.parametrize("value", ["true", "false", '"1.0"', "[1.0]", "{}"])
def test_truncation_must_be_a_number(client: TestClient, value: str) -> None:
    body = f'{{"model": "{RGB_GENERATOR}", "truncation": {value}}}'
    response = client.post("/generate", content=body, headers={"content-type": "application/json"})
    message = error(response, 422, "invalid_request")
    assert message == f"body.truncation: truncation must be a number (0.1 .. 100), not {value}"


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_truncation_must_be_finite(client: TestClient, value: str) -> None:
    body = f'{{"model": "{RGB_GENERATOR}", "truncation": {value}}}'
    response = client.post("/generate", content=body, headers={"content-type": "application/json"})
    assert error(response, 422, "invalid_request") == "body.truncation: truncation must be a finite number"
    response = client.post("/invocations", content=body, headers={"content-type": "application/json"})
    assert error(response, 422, "invalid_request") == "truncation: truncation must be a finite number"


def test_truncation_in_range_still_works(client: TestClient) -> None:
    for value in (0.1, 2, 100):
        response = client.post("/generate", json={"model": RGB_GENERATOR, "seed": 1, "truncation": value})
        assert response.status_code == 200, response.text
    error(client.post("/generate", json={"truncation": 100.5}), 422, "invalid_request")


# /upscale


def test_generator_on_upscale_is_wrong_kind(client: TestClient) -> None:
    message = error(
        post_image(client, png_bytes(random_pixels(8, 8, 3)), model=RGB_GENERATOR), 422, "wrong_model_kind"
    )
    assert "is a generator" in message


def test_unknown_upscaler(client: TestClient) -> None:
    error(post_image(client, png_bytes(random_pixels(8, 8, 3)), model="x" * 10), 404, "model_not_found")


def test_unsupported_content_type(client: TestClient) -> None:
    message = error(post_image(client, b"GIF89a....", "image/gif"), 415, "unsupported_media_type")
    assert "image/gif" in message


def test_unsupported_format_detected_from_bytes(client: TestClient) -> None:
    buffer = io.BytesIO()
    Image.fromarray(random_pixels(8, 8, 3)).save(buffer, "GIF")
    message = error(
        post_image(client, buffer.getvalue(), "application/octet-stream"), 415, "unsupported_media_type"
    )
    assert message.startswith("GIF images are not supported")


def test_bytes_that_are_no_image(client: TestClient) -> None:
    message = error(post_image(client, b"this is not an image at all"), 400, "invalid_image")
    assert "PNG, JPEG or WebP" in message


def test_corrupt_pixel_data(client: TestClient) -> None:
    data = bytearray(png_bytes(random_pixels(64, 64, 3)))
    data[200:400] = bytes(200)  # inside the compressed pixel data
    assert "corrupt" in error(post_image(client, bytes(data)), 400, "invalid_image")


def test_truncated_image(client: TestClient) -> None:
    data = png_bytes(random_pixels(64, 64, 3))
    error(post_image(client, data[: len(data) // 2]), 400, "truncated_image")


def test_empty_body(client: TestClient) -> None:
    assert "empty" in error(post_image(client, b""), 400, "invalid_image")


def test_body_too_large_from_content_length(client: TestClient, override: Callable[..., None]) -> None:
    override(max_body_bytes=2048)
    message = error(post_image(client, b"\0" * 4096), 413, "payload_too_large")
    assert "2048 bytes" in message


def test_multipart_too_large(client: TestClient, override: Callable[..., None]) -> None:
    override(max_body_bytes=2048)
    response = client.post("/upscale", files={"file": ("big.png", b"\0" * 4096, "image/png")})
    error(response, 413, "payload_too_large")


def test_multipart_without_file_field(client: TestClient) -> None:
    response = client.post(
        "/upscale", files={"image": ("a.png", png_bytes(random_pixels(4, 4, 3)), "image/png")}
    )
    assert "'file' field" in error(response, 400, "invalid_image")


def test_too_many_input_pixels_refused_from_the_header(
    client: TestClient, override: Callable[..., None]
) -> None:
    override(max_image_pixels=100)
    message = error(post_image(client, png_bytes(random_pixels(20, 10, 3))), 413, "image_too_large")
    assert message == "the image is 10x20 = 200 pixels; the limit is 100 pixels"


def test_decompression_bomb_refused_before_decoding(client: TestClient) -> None:
    # 20 million black pixels compress to ~20 kB; only the header is read before refusing.
    bomb = png_bytes(np.zeros((4000, 5000), np.uint8), compress_level=9)
    message = error(post_image(client, bomb), 413, "image_too_large")
    assert message == "the image is 5000x4000 = 20000000 pixels; the limit is 16777216 pixels"


def test_output_too_large(client: TestClient, override: Callable[..., None]) -> None:
    override(max_output_pixels=1000)
    message = error(post_image(client, png_bytes(random_pixels(10, 10, 3))), 413, "output_too_large")
    assert "40x40 = 1600 pixels" in message


def test_jpeg_cannot_carry_alpha(client: TestClient) -> None:
    message = error(
        post_image(client, png_bytes(random_pixels(8, 8, 4)), format="jpeg"), 422, "invalid_request"
    )
    assert "alpha" in message


@pytest.mark.parametrize(
    ("params", "field"), [({"tile": -5}, "tile"), ({"overlap": -1}, "overlap"), ({"zoom": 2}, "zoom")]
)
def test_invalid_query_parameters(client: TestClient, params: dict[str, Any], field: str) -> None:
    message = error(post_image(client, png_bytes(random_pixels(8, 8, 3)), **params), 422, "invalid_request")
    assert f"query.{field}" in message


# The app as a whole


def test_unknown_path_and_method(client: TestClient) -> None:
    error(client.get("/nope"), 404, "not_found")
    wrong_method = client.get("/generate")
    error(wrong_method, 405, "method_not_allowed")
    assert wrong_method.headers["allow"] == "POST"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/models", "GET"),
        ("PUT", f"/models/{RGB_GENERATOR}", "GET"),
        ("GET", "/upscale", "POST"),
        ("POST", "/health/ready", "GET"),
        ("GET", "/invocations", "POST"),
        ("POST", "/ping", "GET"),
        ("GET", f"/v2/models/{RGB_GENERATOR}/infer", "POST"),
    ],
)
def test_405_says_which_methods_are_allowed(client: TestClient, method: str, path: str, allowed: str) -> None:
    response = client.request(method, path)
    assert response.status_code == 405
    assert set(response.headers["allow"].split(", ")) == set(allowed.split(", "))
    if not path.startswith("/v2"):
        error(response, 405, "method_not_allowed")
    else:
        assert isinstance(response.json()["error"], str)


def test_unexpected_error_is_500_without_details(settings: Settings) -> None:
    app = create_app(settings)

    def broken() -> Settings:
        raise RuntimeError("secret internal detail")

    app.dependency_overrides[get_settings] = broken
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post("/generate", json={}, headers={"X-Request-ID": "abc-123"})
        message = error(response, 500, "internal_error")
        assert "secret" not in response.text
        assert message == "internal error (request id abc-123)"
        assert response.headers["x-request-id"] == "abc-123"
        assert 'gan_serve_errors_total{code="internal_error"} 1.0' in client.get("/metrics").text


def test_not_ready_before_startup(settings: Settings) -> None:
    client = TestClient(create_app(settings))  # no `with`: the lifespan has not run
    assert client.get("/health/live").status_code == 200
    error(client.get("/health/ready"), 503, "not_ready")
    error(client.post("/generate", json={}), 503, "not_ready")


def test_oversized_json_body_refused_before_reading(repo: Path) -> None:
    settings = Settings(models_dir=repo, max_body_bytes=4096, tile_size=32)
    with TestClient(create_app(settings)) as client:
        response = client.post("/generate", json={"latents": [[0.0] * 16] * 100})
        assert (
            error(response, 413, "payload_too_large")
            == "the request body is larger than the limit of 4096 bytes"
        )
