"""Hostile and malformed requests on every route: each one's status and JSON error code, no traceback.

A table of what broken clients and attackers send — wrong types, impossible numbers, deep JSON,
image bombs, truncated scans, path tricks, wrong methods — run against one app with tight limits
(the lifespan included, real onnxruntime sessions). Each case asserts the status, the error code
and the JSON error shape; a 405 must say what is allowed. After the table, the service must still
answer a good request. The protocol-level cases (headers, timeouts, chunked bodies) are in
`test_hostile_protocol.py`, against a real socket.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.settings import Settings
from tests.service.conftest import FLAT_GENERATOR, GRAY_GENERATOR, RGB_GENERATOR, RGB_LATENT, UPSCALER
from tests.service.sample_images import png_bytes, random_pixels

MAX_N = 8
MAX_BODY = 4 * 1024 * 1024
MAX_IMAGE_PIXELS = 2048 * 2048
TILE = 64

INFER = f"/v2/models/{RGB_GENERATOR}/infer"
UPSCALER_INFER = f"/v2/models/{UPSCALER}/infer"


@pytest.fixture(scope="module")
def hostile(repo: Path) -> Iterator[TestClient]:
    settings = Settings(
        models_dir=repo,
        tile_size=TILE,
        tile_overlap=8,
        max_n=MAX_N,
        max_body_bytes=MAX_BODY,
        max_image_pixels=MAX_IMAGE_PIXELS,
        warmup_batch_sizes=[1],
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


# Images a hostile or broken client sends.


def _jpeg(pixels: np.ndarray, **save: Any) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", **save)
    return out.getvalue()


def _truncated_scan_jpeg(side: int = 2000, keep: int = 700) -> bytes:
    """A small JPEG that declares side x side pixels and stops in its scan data (defect 3)."""
    data = _jpeg(np.full((side, side, 3), 128, np.uint8), quality=10)
    return data[:keep]


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height but holds a few bytes of pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _corrupt_png() -> bytes:
    data = bytearray(png_bytes(random_pixels(64, 64, 3)))
    data[200:400] = bytes(200)
    return bytes(data)


def _gif() -> bytes:
    out = io.BytesIO()
    Image.fromarray(random_pixels(8, 8, 3)).save(out, "GIF")
    return out.getvalue()


def _bmp() -> bytes:
    out = io.BytesIO()
    Image.fromarray(random_pixels(8, 8, 3)).save(out, "BMP")
    return out.getvalue()


def _deep_json(depth: int) -> bytes:
    return b'{"model": "%s", "latents": ' % RGB_GENERATOR.encode() + b"[" * depth + b"]" * depth + b"}"


SMALL_PNG = png_bytes(random_pixels(16, 16, 3))
RGBA_PNG = png_bytes(random_pixels(8, 8, 4))


def _tensor(name: str, shape: list[int], datatype: str, data: Any) -> dict[str, Any]:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def _latents(rows: int, size: int = RGB_LATENT) -> dict[str, Any]:
    return {"inputs": [_tensor("latents", [rows, size], "FP32", [0.1] * rows * size)]}


@dataclass(frozen=True)
class Case:
    """One request and what the service must answer."""

    method: str
    path: str
    status: int
    code: str
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] | None = None
    files: dict[str, Any] | None = None


def gen(body: Any, status: int, code: str, **kwargs: Any) -> Case:
    return Case("POST", "/generate", status, code, json=body, **kwargs)


def gen_raw(content: bytes, status: int, code: str, content_type: str = "application/json") -> Case:
    return Case("POST", "/generate", status, code, content=content, headers={"content-type": content_type})


def up(content: bytes, status: int, code: str, content_type: str = "image/png", **params: Any) -> Case:
    return Case(
        "POST",
        "/upscale",
        status,
        code,
        content=content,
        headers={"content-type": content_type},
        params=params,
    )


def inv(
    content: bytes, status: int, code: str, content_type: str = "application/json", **headers: str
) -> Case:
    return Case(
        "POST",
        "/invocations",
        status,
        code,
        content=content,
        headers={"content-type": content_type, **{k.replace("_", "-"): v for k, v in headers.items()}},
    )


def v2(body: Any, status: int, code: str, path: str = INFER, **headers: str) -> Case:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Case(
        "POST", path, status, code, content=content, headers={"content-type": "application/json", **headers}
    )


def binary_infer(declared: int, sent: bytes) -> Case:
    """A v2 request using the binary tensor extension whose declared size disagrees with the bytes."""
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "latents",
                    "shape": [1, RGB_LATENT],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": declared},
                }
            ]
        }
    ).encode()
    return Case(
        "POST",
        INFER,
        400,
        "binary",
        content=head + sent,
        headers={
            "content-type": "application/octet-stream",
            "inference-header-content-length": str(len(head)),
        },
    )


CASES: dict[str, Case] = {
    # /generate: the body
    "generate: unknown model": gen({"model": "nope"}, 404, "model_not_found"),
    "generate: an upscaler": gen({"model": UPSCALER}, 422, "wrong_model_kind"),
    "generate: n = 0": gen({"n": 0}, 422, "invalid_request"),
    "generate: n negative": gen({"n": -5}, 422, "invalid_request"),
    "generate: n above the limit": gen({"n": MAX_N + 1}, 422, "too_many_images"),
    "generate: n of 10^12": gen({"n": 10**12}, 422, "too_many_images"),
    "generate: n fractional": gen({"n": 1.5}, 422, "invalid_request"),
    "generate: n as a list": gen({"n": [1, 2]}, 422, "invalid_request"),
    "generate: seed negative": gen({"seed": -1}, 422, "invalid_request"),
    "generate: seed of 2^70": gen({"seed": 2**70}, 422, "invalid_request"),
    "generate: seed as text": gen({"seed": "lucky"}, 422, "invalid_request"),
    "generate: seed and latents": gen({"seed": 1, "latents": [[0.0] * RGB_LATENT]}, 422, "invalid_request"),
    "generate: format bmp": gen({"format": "bmp"}, 422, "invalid_request"),
    "generate: layout mosaic": gen({"layout": "mosaic"}, 422, "invalid_request"),
    "generate: truncation 0": gen({"truncation": 0}, 422, "invalid_request"),
    "generate: truncation true": gen({"truncation": True}, 422, "invalid_request"),
    "generate: truncation as text": gen({"truncation": "0.5"}, 422, "invalid_request"),
    "generate: truncation NaN": gen_raw(b'{"truncation": NaN}', 422, "invalid_request"),
    "generate: truncation Infinity": gen_raw(b'{"truncation": Infinity}', 422, "invalid_request"),
    "generate: truncation 1e308": gen({"truncation": 1e308}, 422, "invalid_request"),
    "generate: unknown field": gen({"colour": "red"}, 422, "invalid_request"),
    "generate: columns 0": gen({"n": 4, "layout": "grid", "columns": 0}, 422, "invalid_request"),
    "generate: latents of the wrong length": gen(
        {"model": RGB_GENERATOR, "latents": [[0.0] * (RGB_LATENT - 1)]}, 422, "invalid_latents"
    ),
    "generate: latents with Infinity": gen_raw(
        b'{"model": "%s", "latents": [[%s Infinity]]}'
        % (RGB_GENERATOR.encode(), b"0.0, " * (RGB_LATENT - 1)),
        422,
        "invalid_latents",
    ),
    "generate: latents with NaN": gen_raw(
        b'{"model": "%s", "latents": [[%s NaN]]}' % (RGB_GENERATOR.encode(), b"0.0, " * (RGB_LATENT - 1)),
        422,
        "invalid_latents",
    ),
    "generate: latents as text": gen({"latents": "random"}, 422, "invalid_request"),
    "generate: latents empty": gen({"model": RGB_GENERATOR, "latents": []}, 422, "invalid_request"),
    "generate: latents three deep": gen(
        {"model": RGB_GENERATOR, "latents": [[[0.0]]]}, 422, "invalid_request"
    ),
    "generate: more latents than n allows": gen(
        {"model": RGB_GENERATOR, "latents": [[0.0] * RGB_LATENT] * (MAX_N + 1)}, 422, "too_many_images"
    ),
    "generate: n disagrees with latents": gen(
        {"n": 2, "latents": [[0.0] * RGB_LATENT]}, 422, "invalid_request"
    ),
    "generate: a label for an unconditional model": gen(
        {"model": RGB_GENERATOR, "label": 3}, 422, "invalid_label"
    ),
    "generate: interpolate with 1000 steps": gen(
        {"model": RGB_GENERATOR, "interpolate": {"from": 1, "to": 2, "steps": 1000}}, 422, "invalid_request"
    ),
    "generate: interpolate by an unknown method": gen(
        {"model": RGB_GENERATOR, "interpolate": {"from": 1, "to": 2, "steps": 4, "method": "cubic"}},
        422,
        "invalid_request",
    ),
    "generate: body is a list": gen([], 422, "invalid_request"),
    "generate: body is a string": gen("generate", 422, "invalid_request"),
    "generate: body is null": gen_raw(b"null", 422, "invalid_request"),
    "generate: malformed JSON": gen_raw(b"{not json", 422, "invalid_request"),
    "generate: not UTF-8": gen_raw(b'{"model": "\xff\xfe"}', 400, "bad_request"),
    "generate: JSON nested 100,000 deep": gen_raw(_deep_json(100_000), 400, "bad_request"),
    "generate: a number of 10^100000": gen_raw(b'{"seed": 1' + b"0" * 100_000 + b"}", 400, "bad_request"),
    "generate: an XML body": gen_raw(b"<generate/>", 415, "unsupported_media_type", "application/xml"),
    "generate: latents beyond float32": gen(
        {"model": RGB_GENERATOR, "latents": [[1e39] * RGB_LATENT]}, 422, "invalid_latents"
    ),
    "generate: a form, as curl -d sends": gen_raw(
        b'{"n": 1}', 415, "unsupported_media_type", "application/x-www-form-urlencoded"
    ),
    "generate: GET": Case("GET", "/generate", 405, "method_not_allowed"),
    # /upscale: the image and its options
    "upscale: empty body": up(b"", 400, "invalid_image"),
    "upscale: not an image": up(b"hello, this is text" * 10, 400, "invalid_image"),
    "upscale: corrupt pixel data": up(_corrupt_png(), 400, "invalid_image"),
    "upscale: PNG cut in half": up(SMALL_PNG[: len(SMALL_PNG) // 2], 400, "truncated_image"),
    "upscale: 700-byte JPEG declaring 2000x2000 (scan data cut)": up(
        _truncated_scan_jpeg(), 400, "truncated_image", "image/jpeg"
    ),
    "upscale: JPEG missing its end marker": up(
        _jpeg(random_pixels(64, 64, 3))[:-300], 400, "truncated_image", "image/jpeg"
    ),
    "upscale: PNG header declaring 100000x100000": up(
        _png_header_only(100_000, 100_000), 413, "image_too_large"
    ),
    "upscale: PNG header declaring 3000x3000, no pixels": up(
        _png_header_only(3000, 3000), 413, "image_too_large"
    ),
    "upscale: BMP": up(_bmp(), 415, "unsupported_media_type", "image/bmp"),
    "upscale: GIF sent as PNG": up(_gif(), 415, "unsupported_media_type"),
    "upscale: text/plain": up(SMALL_PNG, 415, "unsupported_media_type", "text/plain"),
    "upscale: unknown model": up(SMALL_PNG, 404, "model_not_found", model="nope"),
    "upscale: a generator": up(SMALL_PNG, 422, "wrong_model_kind", model=RGB_GENERATOR),
    "upscale: tile 5": up(SMALL_PNG, 422, "invalid_tiling", tile=5),
    "upscale: tile negative": up(SMALL_PNG, 422, "invalid_request", tile=-64),
    "upscale: tile as text": up(SMALL_PNG, 422, "invalid_request", tile="big"),
    "upscale: tile 16 with overlap 256": up(SMALL_PNG, 422, "invalid_tiling", tile=16, overlap=256),
    "upscale: overlap negative": up(SMALL_PNG, 422, "invalid_request", overlap=-1),
    "upscale: overlap larger than the tile": up(SMALL_PNG, 422, "invalid_tiling", tile=64, overlap=200),
    "upscale: unknown parameter": up(SMALL_PNG, 422, "invalid_request", zoom=2),
    "upscale: format bmp": up(SMALL_PNG, 422, "invalid_request", format="bmp"),
    "upscale: JPEG output of an image with alpha": up(RGBA_PNG, 422, "invalid_request", format="jpeg"),
    "upscale: tile of a million": up(SMALL_PNG, 422, "invalid_request", tile=1_000_000),
    "upscale: multipart without the file field": Case(
        "POST", "/upscale", 400, "invalid_image", files={"image": ("a.png", SMALL_PNG, "image/png")}
    ),
    "upscale: multipart holding text": Case(
        "POST", "/upscale", 400, "invalid_image", files={"file": ("a.png", b"not an image" * 8, "image/png")}
    ),
    "upscale: GET": Case("GET", "/upscale", 405, "method_not_allowed"),
    # SageMaker's /invocations
    "invocations: unknown model": inv(b'{"model": "nope"}', 404, "model_not_found"),
    "invocations: n = 0": inv(b'{"n": 0}', 422, "invalid_request"),
    "invocations: malformed JSON": inv(b"{nope", 422, "invalid_request"),
    "invocations: not an image": inv(b"\x89PNG but not really", 400, "invalid_image", "image/png"),
    "invocations: XML": inv(b"<x/>", 415, "unsupported_media_type", "application/xml"),
    "invocations: nothing acceptable": inv(b"{}", 406, "not_acceptable", accept="application/pdf"),
    "invocations: custom attributes without '='": inv(
        SMALL_PNG, 400, "invalid_custom_attributes", "image/png", X_Amzn_SageMaker_Custom_Attributes="tile"
    ),
    "invocations: custom attribute tile as text": inv(
        SMALL_PNG,
        400,
        "invalid_custom_attributes",
        "image/png",
        X_Amzn_SageMaker_Custom_Attributes="tile=big",
    ),
    "invocations: custom attribute given twice": inv(
        SMALL_PNG,
        400,
        "invalid_custom_attributes",
        "image/png",
        X_Amzn_SageMaker_Custom_Attributes="tile=64,tile=128",
    ),
    "invocations: truncated JPEG": inv(_truncated_scan_jpeg(), 400, "truncated_image", "image/jpeg"),
    "invocations: GET": Case("GET", "/invocations", 405, "method_not_allowed"),
    # The Open Inference Protocol
    # The Open Inference Protocol: its errors are `{"error": "<message>"}`; `code` is a fragment of it
    "v2 infer: unknown model": v2(_latents(1), 404, "no model named 'nope'", path="/v2/models/nope/infer"),
    "v2 infer: unknown version": v2(
        _latents(1), 404, "has no version 'nope'", path=f"/v2/models/{RGB_GENERATOR}/versions/nope/infer"
    ),
    "v2 infer: no inputs": v2({"inputs": []}, 422, "inputs"),
    "v2 infer: inputs not a list": v2({"inputs": "latents"}, 422, "valid array"),
    "v2 infer: unknown datatype": v2(
        {"inputs": [_tensor("latents", [1, RGB_LATENT], "FP128", [0.0] * RGB_LATENT)]},
        400,
        "datatype 'FP128' is not served",
    ),
    "v2 infer: shape disagrees with data": v2(
        {"inputs": [_tensor("latents", [2, RGB_LATENT], "FP32", [0.0] * RGB_LATENT)]}, 400, "values in data"
    ),
    "v2 infer: negative shape": v2(
        {"inputs": [_tensor("latents", [-1, RGB_LATENT], "FP32", [0.0] * RGB_LATENT)]},
        400,
        "negative dimension",
    ),
    "v2 infer: data as text": v2(
        {"inputs": [_tensor("latents", [1, RGB_LATENT], "FP32", ["a"] * RGB_LATENT)]}, 400, "not FP32 values"
    ),
    "v2 infer: NaN latents": v2(
        b'{"inputs": [{"name": "latents", "shape": [1, %d], "datatype": "FP32", "data": [%s NaN]}]}'
        % (RGB_LATENT, b"0.0, " * (RGB_LATENT - 1)),
        422,
        "NaN",
    ),
    "v2 infer: latents of the wrong size": v2(_latents(1, RGB_LATENT + 1), 422, "this model takes"),
    "v2 infer: more rows than the limit": v2(_latents(MAX_N + 1), 422, f"at most {MAX_N}"),
    "v2 infer: an unknown output asked for": v2(
        {**_latents(1), "outputs": [{"name": "logits"}]}, 400, "has no output 'logits'"
    ),
    "v2 infer: malformed JSON": v2(b"{inputs", 422, "Invalid JSON"),
    "v2 infer: binary data shorter than declared": binary_infer(4 * RGB_LATENT, b"\0" * 8),
    "v2 infer: binary data of the wrong size": binary_infer(8, b"\0" * 8),
    "v2 infer: upscaler given a 3-d tensor": v2(
        {"inputs": [_tensor("images", [8, 8, 3], "UINT8", [0] * 192)]}, 400, "images", path=UPSCALER_INFER
    ),
    "v2 infer: GET": Case("GET", INFER, 405, "Method Not Allowed"),
    "v2 metadata: unknown model": Case("GET", "/v2/models/nope", 404, "no model named 'nope'"),
    "v2 ready: unknown model": Case("GET", "/v2/models/nope/ready", 404, "no model named 'nope'"),
    "v2 metadata: POST": Case("POST", f"/v2/models/{RGB_GENERATOR}", 405, "Method Not Allowed"),
    # Models, health, metrics, the page and what does not exist
    "models: unknown model": Case("GET", "/models/nope", 404, "model_not_found"),
    "models: a dotted path": Case("GET", "/models/%2e%2e%2fcard.json", 404, "not_found"),
    "models: full=maybe": Case("GET", "/models", 422, "invalid_request", params={"full": "maybe"}),
    "models: POST": Case("POST", "/models", 405, "method_not_allowed"),
    "models: DELETE a model": Case("DELETE", f"/models/{GRAY_GENERATOR}", 405, "method_not_allowed"),
    "health: POST ready": Case("POST", "/health/ready", 405, "method_not_allowed"),
    "health: PUT live": Case("PUT", "/health/live", 405, "method_not_allowed"),
    "metrics: POST": Case("POST", "/metrics", 405, "method_not_allowed"),
    "ping: POST": Case("POST", "/ping", 405, "method_not_allowed"),
    "execution parameters: POST": Case("POST", "/execution-parameters", 405, "method_not_allowed"),
    "page: POST": Case("POST", "/", 405, "method_not_allowed"),
    "page: a static file outside the folder": Case("GET", "/static/..%2f..%2fsettings.py", 404, "not_found"),
    "page: an unknown static file": Case("GET", "/static/nope.js", 404, "not_found"),
    "unknown path": Case("GET", "/admin", 404, "not_found"),
    "unknown path with a dotted segment": Case("GET", "/%2e%2e/%2e%2e/etc/passwd", 404, "not_found"),
    "docs: POST": Case("POST", "/docs", 405, "method_not_allowed"),
    "openapi: DELETE": Case("DELETE", "/openapi.json", 405, "method_not_allowed"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_request(hostile: TestClient, name: str) -> None:
    case = CASES[name]
    response = hostile.request(
        case.method,
        case.path,
        json=case.json,
        content=case.content,
        headers=case.headers,
        params=case.params,
        files=case.files,
    )
    assert response.status_code == case.status, f"{name}: {response.status_code} {response.text[:300]}"
    assert response.headers["content-type"].startswith("application/json"), name
    error = response.json()["error"]
    if case.path.startswith("/v2"):
        assert isinstance(error, str) and case.code in error, f"{name}: {error}"
    else:
        assert error["code"] == case.code, f"{name}: {error}"
        assert error["message"], name
    assert "Traceback" not in response.text, name
    if case.status == 405:
        allowed = {m.strip() for m in response.headers["allow"].split(",")}
        assert case.method not in allowed and allowed, name


def test_still_serving_after_the_table(hostile: TestClient) -> None:
    response = hostile.post("/generate", json={"model": FLAT_GENERATOR, "seed": 2})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    upscaled = hostile.post("/upscale", content=SMALL_PNG, headers={"content-type": "image/png"})
    assert upscaled.status_code == 200
    assert Image.open(io.BytesIO(upscaled.content)).size == (64, 64)


def test_phone_camera_mpo_is_upscaled_as_its_first_picture(hostile: TestClient) -> None:
    """Multi-picture JPEGs (Pillow's MPO), as phone cameras write them, are accepted, not 415."""
    first, second = random_pixels(16, 16, 3, seed=1), random_pixels(16, 16, 3, seed=2)
    out = io.BytesIO()
    Image.fromarray(first).save(out, "MPO", save_all=True, append_images=[Image.fromarray(second)])
    assert Image.open(io.BytesIO(out.getvalue())).format == "MPO"
    response = hostile.post("/upscale", content=out.getvalue(), headers={"content-type": "image/jpeg"})
    assert response.status_code == 200, response.text
    assert Image.open(io.BytesIO(response.content)).size == (64, 64)


def test_base64_body_is_not_taken_for_an_image(hostile: TestClient) -> None:
    response = hostile.post(
        "/upscale", content=base64.b64encode(SMALL_PNG), headers={"content-type": "image/png"}
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_image"
