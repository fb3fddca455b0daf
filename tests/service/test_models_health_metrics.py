"""GET /models, /health/live, /health/ready, /metrics and the OpenAPI document."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import shutil
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from pydantic import SecretStr

from service.app import create_app, drain_requests
from service.settings import Settings
from tests.service.conftest import FLAT_GENERATOR, GRAY_GENERATOR, RGB_GENERATOR, UPSCALER
from tests.service.sample_images import png_bytes, random_pixels


def test_models_lists_cards_providers_and_defaults(client: TestClient) -> None:
    body = client.get("/models", params={"full": "true"}).json()
    assert body["device"] == "auto"
    assert body["cuda_active"] is False
    # Default per kind: the first name in sorted order.
    assert body["defaults"] == {"generator": FLAT_GENERATOR, "upscaler": UPSCALER}
    models = {m["name"]: m for m in body["models"]}
    assert sorted(models) == sorted([FLAT_GENERATOR, GRAY_GENERATOR, RGB_GENERATOR, UPSCALER])
    gray = models[GRAY_GENERATOR]
    assert gray["kind"] == "generator"
    assert gray["provider"] == "CPUExecutionProvider"
    assert gray["providers"] == ["CPUExecutionProvider"]
    assert gray["demo_weights"] is True
    assert gray["fp16"] is False
    assert gray["warmup_ms"] > 0
    assert gray["card"]["channels"] == 1
    assert models[UPSCALER]["card"]["scale"] == 4
    assert models[RGB_GENERATOR]["demo_weights"] is False


def test_health(client: TestClient) -> None:
    assert client.get("/health/live").json() == {"status": "alive"}
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert ready.json()["providers"][UPSCALER] == "CPUExecutionProvider"


def test_request_id_is_echoed_or_made(client: TestClient) -> None:
    assert (
        client.get("/health/live", headers={"X-Request-ID": "my-id.1"}).headers["x-request-id"] == "my-id.1"
    )
    made = client.get("/health/live", headers={"X-Request-ID": "bad id\twith spaces"}).headers["x-request-id"]
    assert len(made) == 32


def test_metrics_text(client: TestClient) -> None:
    client.post("/generate", json={"model": RGB_GENERATOR, "n": 3, "seed": 1})
    client.post("/upscale", content=png_bytes(random_pixels(8, 8, 3)), headers={"content-type": "image/png"})
    client.post("/generate", json={"model": "nope"})
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert f'gan_serve_requests_total{{model="{RGB_GENERATOR}",route="/generate",status="200"}}' in text
    assert f'gan_serve_request_duration_seconds_count{{model="{UPSCALER}",route="/upscale"}}' in text
    assert f'gan_serve_images_generated_total{{model="{RGB_GENERATOR}"}}' in text
    assert f'gan_serve_pixels_upscaled_total{{model="{UPSCALER}"}}' in text
    assert 'gan_serve_errors_total{code="model_not_found"}' in text
    assert 'gan_serve_requests_in_flight{route="/metrics"} 1.0' in text
    assert f'gan_serve_model_runs_in_flight{{model="{UPSCALER}"}} 0.0' in text
    assert (
        f'gan_serve_model_info{{kind="upscaler",model="{UPSCALER}",provider="CPUExecutionProvider"}} 1.0'
        in text
    )
    assert "gan_serve_ready 1.0" in text


def test_openapi_documents_every_endpoint_with_examples(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    generate = paths["/generate"]["post"]
    assert set(generate["requestBody"]["content"]["application/json"]["examples"]) >= {"one", "zip", "grid"}
    assert {"image/png", "application/zip", "application/json"} <= set(
        generate["responses"]["200"]["content"]
    )
    assert generate["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "ErrorResponse"
    )
    upscale = paths["/upscale"]["post"]
    assert {"image/png", "image/jpeg", "image/webp", "multipart/form-data"} <= set(
        upscale["requestBody"]["content"]
    )
    assert {p["name"] for p in upscale["parameters"]} >= {"model", "format", "tile", "overlap"}
    assert {"413", "415", "400"} <= set(upscale["responses"])
    for path in ("/models", "/health/live", "/health/ready", "/metrics"):
        assert "get" in paths[path]


def test_models_is_lean_by_default(client: TestClient) -> None:
    models = {m["name"]: m for m in client.get("/models").json()["models"]}
    rgb = models[RGB_GENERATOR]
    assert rgb["card"] is None
    assert (rgb["kind"], rgb["ready"], rgb["height"], rgb["width"], rgb["channels"]) == (
        "generator",
        True,
        16,
        16,
        3,
    )
    assert (rgb["latent_size"], rgb["classes"], rgb["scale"]) == (16, None, None)
    assert (models[UPSCALER]["scale"], models[UPSCALER]["latent_size"]) == (4, None)


def test_version_is_the_cards_or_a_hash_of_the_model_file(client: TestClient, repo: Path) -> None:
    # The test cards carry no version: each model is served under a short hash of its model.onnx.
    for name, model in ((m["name"], m) for m in client.get("/models").json()["models"]):
        digest = hashlib.sha256((repo / name / "model.onnx").read_bytes()).hexdigest()
        assert model["version"] == digest[:12]


def test_version_from_the_card(repo: Path, tmp_path: Path) -> None:
    shutil.copytree(repo / UPSCALER, tmp_path / UPSCALER)
    card = json.loads((tmp_path / UPSCALER / "model.json").read_text())
    (tmp_path / UPSCALER / "model.json").write_text(json.dumps({**card, "version": "2026.11-b"}))
    with TestClient(create_app(Settings(models_dir=tmp_path, tile_size=32))) as client:
        assert client.get(f"/models/{UPSCALER}").json()["version"] == "2026.11-b"


def test_one_model_with_its_card_and_readiness(client: TestClient) -> None:
    response = client.get(f"/models/{GRAY_GENERATOR}")
    assert response.status_code == 200
    model = response.json()
    assert (model["name"], model["ready"], model["demo_weights"]) == (GRAY_GENERATOR, True, True)
    assert model["card"]["channels"] == 1
    missing = client.get("/models/nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"
    assert RGB_GENERATOR in missing.json()["error"]["message"]


def test_inference_queue_and_process_metrics(client: TestClient) -> None:
    client.post("/generate", json={"model": RGB_GENERATOR, "n": 2, "seed": 1})
    text = client.get("/metrics").text
    assert f'gan_serve_inference_seconds_count{{model="{RGB_GENERATOR}"}}' in text
    assert f'gan_serve_queue_wait_seconds_count{{model="{RGB_GENERATOR}"}}' in text
    assert f'gan_serve_queued_requests{{model="{RGB_GENERATOR}"}} 0.0' in text
    assert "process_resident_memory_bytes" in text
    assert "python_info{" in text


def test_openapi_operation_ids_are_stable(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    ids = {
        f"{method.upper()} {path}": operation["operationId"]
        for path, methods in spec["paths"].items()
        for method, operation in methods.items()
    }
    assert ids == {
        "POST /generate": "generate",
        "POST /upscale": "upscale",
        "GET /models": "list_models",
        "GET /models/{name}": "get_model",
        "GET /health/live": "live",
        "GET /health/ready": "ready",
        "GET /metrics": "metrics",
        "GET /ping": "ping",
        "POST /invocations": "invocations",
        "GET /execution-parameters": "execution_parameters",
        "GET /v2": "v2_server_metadata",
        "GET /v2/health/live": "v2_server_live",
        "GET /v2/health/ready": "v2_server_ready",
        "GET /v2/models/{name}": "v2_model_metadata",
        "GET /v2/models/{name}/versions/{version}": "v2_model_version_metadata",
        "GET /v2/models/{name}/ready": "v2_model_ready",
        "GET /v2/models/{name}/versions/{version}/ready": "v2_model_version_ready",
        "POST /v2/models/{name}/infer": "v2_model_infer",
        "POST /v2/models/{name}/versions/{version}/infer": "v2_model_version_infer",
    }
    assert spec["info"]["version"] == importlib.metadata.version("gan-serve")


def test_models_show_no_build_paths_and_tool_versions_only_in_full(repo: Path, tmp_path: Path) -> None:
    # Cards as gan-export writes them on a build host: absolute source paths and tool versions.
    for name, path in ((RGB_GENERATOR, "/home/ci/build/zoo/rgb.weights.h5"), (UPSCALER, "C:\\work\\sr.h5")):
        shutil.copytree(repo / name, tmp_path / name)
        card = json.loads((tmp_path / name / "model.json").read_text())
        card["source"]["path"] = path
        card["tools"] = {"tensorflow": "2.21.0", "tf2onnx": "1.17.0", "onnxruntime": "1.31.1"}
        (tmp_path / name / "model.json").write_text(json.dumps(card))
    with TestClient(create_app(Settings(models_dir=tmp_path, tile_size=32))) as client:
        lean = client.get("/models").text
        full = client.get("/models", params={"full": "true"}).json()
        one = client.get(f"/models/{RGB_GENERATOR}").json()
        one_full = client.get(f"/models/{RGB_GENERATOR}", params={"full": "true"}).json()
    assert "/home/ci" not in lean and "2.21.0" not in lean and "tools" not in lean
    cards = {m["name"]: m["card"] for m in full["models"]}
    assert cards[RGB_GENERATOR]["source"]["path"] == "rgb.weights.h5"
    assert cards[UPSCALER]["source"]["path"] == "sr.h5"
    assert cards[RGB_GENERATOR]["tools"]["tf2onnx"] == "1.17.0"
    assert one["card"]["source"]["path"] == "rgb.weights.h5"
    assert one["card"]["tools"] == {}
    assert one_full["card"]["tools"]["tensorflow"] == "2.21.0"
    assert "/home/ci" not in json.dumps([full, one, one_full])


#: Every operation's documented statuses besides 200: what each can answer. (FastAPI adds 422 to
#: every operation with parameters; the v2 metadata routes' string path parameters never fail it.)
DOCUMENTED_STATUSES = {
    "POST /generate": {400, 401, 404, 413, 415, 422, 500, 503},
    "POST /upscale": {400, 401, 404, 413, 415, 422, 500, 503},
    "GET /models": {401, 413, 422, 503},
    "GET /models/{name}": {401, 404, 413, 422, 503},
    "GET /health/live": {401, 413},
    "GET /health/ready": {401, 413, 503},
    "GET /metrics": {401, 413},
    "GET /ping": {401, 413, 503},
    "POST /invocations": {400, 401, 404, 406, 413, 415, 422, 500, 503, 504},
    "GET /execution-parameters": {401, 413, 503},
    "GET /v2": {401, 413, 503},
    "GET /v2/health/live": {401, 413},
    "GET /v2/health/ready": {401, 413, 503},
    "GET /v2/models/{name}": {401, 404, 413, 422, 503},
    "GET /v2/models/{name}/versions/{version}": {401, 404, 413, 422, 503},
    "GET /v2/models/{name}/ready": {401, 404, 413, 422, 503},
    "GET /v2/models/{name}/versions/{version}/ready": {401, 404, 413, 422, 503},
    "POST /v2/models/{name}/infer": {400, 401, 404, 413, 422, 500, 503},
    "POST /v2/models/{name}/versions/{version}/infer": {400, 401, 404, 413, 422, 500, 503},
}


def operations(client: TestClient) -> dict[str, set[int]]:
    """`METHOD /path` -> the statuses its OpenAPI lists besides 200."""
    return {
        f"{method.upper()} {path}": {int(status) for status in operation["responses"]} - {200}
        for path, methods in client.get("/openapi.json").json()["paths"].items()
        for method, operation in methods.items()
    }


def call(client: TestClient, operation: str, **kwargs: Any) -> Any:
    method, path = operation.split(" ")
    path = path.replace("{name}", RGB_GENERATOR).replace("{version}", "1")
    return client.request(method, path, **kwargs)


def test_openapi_lists_every_status_each_operation_answers(client: TestClient) -> None:
    documented = operations(client)
    assert documented == DOCUMENTED_STATUSES
    spec = client.get("/openapi.json").json()
    error = spec["paths"]["/generate"]["post"]["responses"]["400"]
    assert error["content"]["application/json"]["schema"]["$ref"].endswith("ErrorResponse")


def test_every_operation_answers_401_without_a_key_when_keys_are_set(settings: Settings) -> None:
    locked = settings.model_copy(
        update={
            "api_keys": SecretStr("k" * 32),
            "auth_health": True,
            "auth_metrics": True,
            "sagemaker_iam": False,
        }
    )
    with TestClient(create_app(locked)) as client:
        for operation in DOCUMENTED_STATUSES:
            response = call(client, operation)
            assert response.status_code == 401, operation
            assert response.json()["error"]["code"] == "unauthorized"
            assert response.headers["www-authenticate"].startswith("Bearer")


def test_every_operation_answers_413_to_a_body_over_the_limit(settings: Settings) -> None:
    with TestClient(create_app(settings.model_copy(update={"max_body_bytes": 1024}))) as client:
        for operation in DOCUMENTED_STATUSES:
            response = call(client, operation, content=b"x" * 1025)
            assert response.status_code == 413, operation
            body = response.json()["error"]
            code = "payload_too_large" if "/v2" in operation else body["code"]  # v2 errors are a message
            assert code == "payload_too_large" and "larger than the limit of 1024 bytes" in str(body)


def test_while_stopping_every_operation_but_liveness_and_metrics_answers_503(settings: Settings) -> None:
    app = create_app(settings)
    with TestClient(app) as client:
        assert client.portal is not None  # set while the client's context is open
        client.portal.call(drain_requests, app, 0)  # what gan-serve does on SIGTERM
        for operation, statuses in DOCUMENTED_STATUSES.items():
            response = call(client, operation)
            if operation in ("GET /health/live", "GET /v2/health/live", "GET /metrics"):
                assert response.status_code == 200, operation
                continue
            assert 503 in statuses and response.status_code == 503, operation
            assert response.headers["retry-after"] == "5"
            body = response.json()["error"]
            if "/v2" in operation:  # the protocol's errors are a message
                assert body.startswith("the service is shutting down"), operation
            else:
                assert body["code"] == "shutting_down", operation
