"""GET /models, /health/live, /health/ready, /metrics and the OpenAPI document."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.service.conftest import FLAT_GENERATOR, GRAY_GENERATOR, RGB_GENERATOR, UPSCALER
from tests.service.sample_images import png_bytes, random_pixels


def test_models_lists_cards_providers_and_defaults(client: TestClient) -> None:
    body = client.get("/models").json()
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
