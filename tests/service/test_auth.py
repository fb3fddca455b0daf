"""API keys and CORS as a client sees them: 401 without a key, 200 with one, preflights answered."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.errors import StartupError
from service.settings import Settings
from tests.service.conftest import RGB_GENERATOR, UPSCALER
from tests.service.sample_images import png_bytes, random_pixels

KEY = "k3y-" + "a" * 28
OTHER = "second-key-" + "b" * 21

#: (method, path, body kwargs) of every protected route, each answering 200 with a valid key.
PROTECTED = [
    ("POST", "/generate", {"json": {"model": RGB_GENERATOR, "seed": 1}}),
    ("GET", "/models", {}),
    ("GET", f"/models/{RGB_GENERATOR}", {}),
    ("GET", "/docs", {}),
    ("GET", "/redoc", {}),
    ("GET", "/openapi.json", {}),
    ("GET", "/metrics", {}),
    ("GET", "/v2", {}),
    ("GET", f"/v2/models/{RGB_GENERATOR}", {}),
    ("GET", f"/v2/models/{RGB_GENERATOR}/ready", {}),
    (
        "POST",
        f"/v2/models/{RGB_GENERATOR}/infer",
        {"json": {"inputs": [{"name": "latents", "shape": [1, 16], "datatype": "FP32", "data": [0.1] * 16}]}},
    ),
]


@pytest.fixture(scope="module")
def keyed(repo: Path) -> Iterator[TestClient]:
    settings = Settings(
        models_dir=repo,
        warmup_batch_sizes=[1],
        tile_size=32,
        tile_overlap=12,
        api_keys=f"{KEY}, {OTHER}",  # type: ignore[arg-type]
        cors_origins=["https://app.example"],
    )
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.mark.parametrize(("method", "path", "kwargs"), PROTECTED, ids=[p for _, p, _ in PROTECTED])
def test_protected_route_needs_a_key(keyed: TestClient, method: str, path: str, kwargs: dict) -> None:
    response = keyed.request(method, path, **kwargs)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert "X-API-Key" in response.json()["error"]["message"]
    assert response.headers["www-authenticate"].startswith("Bearer")

    for headers in ({"Authorization": f"Bearer {KEY}"}, {"X-API-Key": OTHER}):
        assert keyed.request(method, path, headers=headers, **kwargs).status_code == 200


def test_upscale_needs_a_key(keyed: TestClient) -> None:
    body = png_bytes(random_pixels(12, 12, 3))
    params = {"model": UPSCALER}
    headers = {"content-type": "image/png"}
    assert keyed.post("/upscale", params=params, content=body, headers=headers).status_code == 401
    ok = keyed.post("/upscale", params=params, content=body, headers={**headers, "X-API-Key": KEY})
    assert ok.status_code == 200 and ok.headers["content-type"] == "image/png"


@pytest.mark.parametrize("key", ["wrong-" + "c" * 26, KEY[:-1], KEY + "x", ""])
def test_wrong_key_is_refused(keyed: TestClient, key: str) -> None:
    response = keyed.get("/models", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("path", ["/health/live", "/health/ready", "/ping"])
def test_health_and_sagemaker_ping_stay_open(keyed: TestClient, path: str) -> None:
    assert keyed.get(path).status_code == 200


def test_execution_parameters_left_to_sagemaker_iam(keyed: TestClient) -> None:
    assert keyed.get("/execution-parameters").status_code == 200


def test_invocations_left_to_sagemaker_iam(keyed: TestClient) -> None:
    response = keyed.post("/invocations", json={"model": RGB_GENERATOR, "seed": 1})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"


def test_keys_on_health_metrics_and_invocations_when_asked(repo: Path) -> None:
    settings = Settings(
        models_dir=repo,
        warmup_batch_sizes=[1],
        api_keys=KEY,  # type: ignore[arg-type]
        auth_health=True,
        auth_metrics=False,
        sagemaker_iam=False,
    )
    with TestClient(create_app(settings)) as client:
        assert client.get("/health/ready").status_code == 401
        assert client.get("/ping").status_code == 401
        assert client.post("/invocations", json={"model": RGB_GENERATOR}).status_code == 401
        assert client.get("/metrics").status_code == 200


def test_cors_preflight_and_exposed_headers(keyed: TestClient) -> None:
    preflight = keyed.options(
        "/generate",
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()

    response = keyed.post(
        "/generate",
        json={"model": RGB_GENERATOR, "seed": 5},
        headers={"Origin": "https://app.example", "Authorization": f"Bearer {KEY}"},
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://app.example"
    assert "X-Seed" in response.headers["access-control-expose-headers"]
    # A 401 carries CORS headers too, so the page's script can read the message.
    refused = keyed.post("/generate", json={}, headers={"Origin": "https://app.example"})
    assert (
        refused.status_code == 401 and refused.headers["access-control-allow-origin"] == "https://app.example"
    )


def test_other_origins_get_no_cors(keyed: TestClient) -> None:
    preflight = keyed.options(
        "/generate", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert preflight.status_code == 400
    assert "access-control-allow-origin" not in preflight.headers


def test_no_cors_by_default(client: TestClient) -> None:
    response = client.get("/health/live", headers={"Origin": "https://app.example"})
    assert "access-control-allow-origin" not in response.headers


def test_keys_file_and_short_keys(repo: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"# operators\n{KEY}\n\n")
    settings = Settings(models_dir=repo, warmup_batch_sizes=[1], api_keys_file=keys)
    with TestClient(create_app(settings)) as client:
        assert client.get("/models").status_code == 401
        assert client.get("/models", headers={"X-API-Key": KEY}).status_code == 200
    with pytest.raises(StartupError, match="shorter than 16"):
        create_app(Settings(models_dir=repo, api_keys="short"))  # type: ignore[arg-type]
    with pytest.raises(StartupError, match="cannot be read"):
        create_app(Settings(models_dir=repo, api_keys_file=tmp_path / "missing"))


def test_keys_are_not_in_settings_repr(repo: Path) -> None:
    settings = Settings(models_dir=repo, api_keys=KEY)  # type: ignore[arg-type]
    assert KEY not in repr(settings) and KEY not in str(settings.model_dump())
