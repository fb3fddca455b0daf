"""SageMaker modes (GAN_SERVE_SAGEMAKER_MODE): each mode's limits, /execution-parameters, JSON Lines."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from service.settings import SageMakerMode, Settings
from tests.service.conftest import GRAY_GENERATOR, RGB_GENERATOR, UPSCALER
from tests.service.sample_images import open_image, png_bytes, random_pixels

JSON_LINES = "application/jsonlines"


def invoke_lines(client: TestClient, lines: list[Any], accept: str | None = JSON_LINES) -> Any:
    body = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
    headers = {"Content-Type": JSON_LINES}
    if accept:
        headers["Accept"] = accept
    return client.post("/invocations", content=body.encode(), headers=headers)


def upscale_npy(client: TestClient, size: int) -> Any:
    """An x4 upscale as a raw uint8 array: (4 * size)^2 * 3 bytes, plus the .npy header."""
    return client.post(
        "/invocations",
        content=png_bytes(random_pixels(size, size, 3)),
        headers={
            "Content-Type": "image/png",
            "Accept": "application/x-npy",
            "X-Amzn-SageMaker-Custom-Attributes": f"model={UPSCALER}",
        },
    )


# --- the setting ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "payload", "timeout"),
    [
        ("realtime", 6_000_000, 60),
        ("async", 1_000_000_000, 3600),
        ("batch", 6_000_000, 600),
        ("serverless", 4_000_000, 60),
    ],
)
def test_each_mode_has_sagemakers_limits(mode: SageMakerMode, payload: int, timeout: float) -> None:
    limits = Settings(sagemaker_mode=mode).sagemaker_limits
    assert (limits.mode, limits.max_payload_bytes, limits.timeout_s) == (mode, payload, timeout)


def test_batch_limits_follow_max_payload_mb_and_the_job_timeout() -> None:
    limits = Settings(
        sagemaker_mode="batch", batch_max_payload_mb=50, invocation_timeout_s=1800
    ).sagemaker_limits
    assert (limits.max_payload_bytes, limits.timeout_s) == (50_000_000, 1800)


def test_mode_comes_from_the_environment_and_raises_the_body_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GAN_SERVE_SAGEMAKER_MODE", "async")
    assert Settings().sagemaker_mode == "async"
    assert Settings().max_body_bytes == 1_000_000_000  # async requests arrive through S3, up to 1 GB
    monkeypatch.setenv("GAN_SERVE_MAX_BODY_BYTES", "5000000")
    assert Settings().max_body_bytes == 5_000_000  # an explicit limit stays
    monkeypatch.setenv("GAN_SERVE_SAGEMAKER_MODE", "realtime")
    monkeypatch.delenv("GAN_SERVE_MAX_BODY_BYTES")
    assert Settings().max_body_bytes == 20 * 1024 * 1024


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValidationError, match="sagemaker_mode"):
        Settings(sagemaker_mode="streaming")  # type: ignore[arg-type]


# --- response limits on /invocations -----------------------------------------------------------


def test_serverless_refuses_what_realtime_returns(client: TestClient, override: Callable[..., None]) -> None:
    # 4 * 300 = 1200 pixels a side: 4,320,000 bytes of uint8 RGB, between serverless's 4 MB and 6 MB.
    assert upscale_npy(client, 300).status_code == 200
    override(sagemaker_mode="serverless")
    response = upscale_npy(client, 300)
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "response_too_large"
    assert "serverless endpoints return at most 4,000,000" in error["message"]


def test_async_returns_what_realtime_refuses(client: TestClient, override: Callable[..., None]) -> None:
    # 4 * 384 = 1536 a side: 7,077,888 bytes, over real-time's 6 MB.
    refused = upscale_npy(client, 384)
    assert refused.status_code == 413
    assert "asynchronous inference" in refused.json()["error"]["message"]
    override(sagemaker_mode="async")
    response = upscale_npy(client, 384)
    assert response.status_code == 200
    assert np.load(io.BytesIO(response.content)).shape == (1536, 1536, 3)


def test_batch_refuses_answers_above_max_payload_mb(
    client: TestClient, override: Callable[..., None]
) -> None:
    override(sagemaker_mode="batch", batch_max_payload_mb=1)
    response = upscale_npy(client, 160)  # 640 * 640 * 3 = 1,228,800 bytes
    assert response.status_code == 413
    assert "MaxPayloadInMB allows at most 1,000,000" in response.json()["error"]["message"]


def test_work_past_the_time_limit_is_504(client: TestClient, override: Callable[..., None]) -> None:
    override(invocation_timeout_s=0.001)
    response = upscale_npy(client, 256)
    assert response.status_code == 504
    error = response.json()["error"]
    assert error["code"] == "invocation_timeout"
    assert "0.001 s" in error["message"] and "asynchronous inference" in error["message"]
    override()
    assert upscale_npy(client, 32).status_code == 200  # the runner still serves after the cancelled run


# --- /execution-parameters ----------------------------------------------------------------------


def test_execution_parameters_defaults(client: TestClient) -> None:
    response = client.get("/execution-parameters")
    assert response.status_code == 200
    assert response.json() == {
        "MaxConcurrentTransforms": 4,
        "BatchStrategy": "MultiRecord",
        "MaxPayloadInMB": 6,
    }


def test_execution_parameters_follow_the_settings(client: TestClient, override: Callable[..., None]) -> None:
    override(sagemaker_mode="batch", batch_max_payload_mb=20, batch_max_concurrent_transforms=8)
    assert client.get("/execution-parameters").json() == {
        "MaxConcurrentTransforms": 8,
        "BatchStrategy": "MultiRecord",
        "MaxPayloadInMB": 20,
    }


# --- JSON Lines -----------------------------------------------------------------------------------


def decoded_images(answer: dict[str, Any]) -> list[Any]:
    return [open_image(base64.b64decode(image["data"])) for image in answer["images"]]


def test_json_lines_one_answer_per_line_in_order(client: TestClient, override: Callable[..., None]) -> None:
    override(sagemaker_mode="batch")
    requests = [
        {"model": RGB_GENERATOR, "n": 3, "seed": 1},
        {"model": GRAY_GENERATOR, "seed": 2, "format": "jpeg"},
        {"model": RGB_GENERATOR, "n": 2, "seed": 3, "format": "webp"},
    ]
    response = invoke_lines(client, requests)
    assert response.status_code == 200
    assert response.headers["content-type"] == JSON_LINES
    assert response.headers["x-lines"] == "3"
    answers = [json.loads(line) for line in response.text.split("\n")]
    assert [(a["model"], a["seed"], a["n"], a["format"]) for a in answers] == [
        (RGB_GENERATOR, 1, 3, "png"),
        (GRAY_GENERATOR, 2, 1, "jpeg"),
        (RGB_GENERATOR, 3, 2, "webp"),
    ]
    assert [(i.format, i.size, i.mode) for i in decoded_images(answers[1])] == [("JPEG", (28, 28), "L")]
    assert [i.format for i in decoded_images(answers[2])] == ["WEBP", "WEBP"]


def test_json_lines_make_the_images_generate_makes(client: TestClient) -> None:
    body = {"model": RGB_GENERATOR, "n": 2, "seed": 42}
    direct = client.post("/generate", json=body, headers={"Accept": "application/json"}).json()
    (line,) = invoke_lines(client, [body]).text.split("\n")
    assert json.loads(line) == direct


def test_a_bad_line_answers_with_its_error_and_the_others_are_served(client: TestClient) -> None:
    lines = [
        {"model": RGB_GENERATOR, "seed": 1},
        '{"model": "rgb-gen", "n": ',
        {"model": "no-such-model"},
        {"model": RGB_GENERATOR, "n": 10_000},
        {"model": RGB_GENERATOR, "seed": 5},
    ]
    response = invoke_lines(client, lines)
    assert response.status_code == 200
    answers = [json.loads(line) for line in response.text.split("\n")]
    assert len(answers) == 5
    assert answers[0]["seed"] == 1 and answers[4]["seed"] == 5
    errors = [answer.get("error", {}).get("code") for answer in answers]
    assert errors == [None, "invalid_request", "model_not_found", "too_many_images", None]
    assert answers[1]["error"]["message"].startswith("line 2: ")
    assert answers[3]["error"]["message"].startswith("line 4: ")


def test_blank_lines_and_crlf_are_skipped(client: TestClient) -> None:
    body = b'{"model": "rgb-gen", "seed": 1}\r\n\r\n\n{"model": "rgb-gen", "seed": 2}\r\n'
    response = client.post("/invocations", content=body, headers={"Content-Type": "application/x-jsonlines"})
    assert response.status_code == 200
    assert [json.loads(line)["seed"] for line in response.text.split("\n")] == [1, 2]


def test_json_lines_are_answered_only_in_json_lines(client: TestClient) -> None:
    assert invoke_lines(client, [{"seed": 1}], accept="*/*").status_code == 200
    response = invoke_lines(client, [{"seed": 1}], accept="image/png")
    assert response.status_code == 406
    assert JSON_LINES in response.json()["error"]["message"]


def test_an_empty_json_lines_body_is_422(client: TestClient) -> None:
    response = invoke_lines(client, ["", "  "])
    assert response.status_code == 422
    assert "one /generate body per line" in response.json()["error"]["message"]


def test_json_lines_answers_above_the_payload_limit_are_413(
    client: TestClient, override: Callable[..., None]
) -> None:
    override(sagemaker_mode="batch", batch_max_payload_mb=1)
    lines = [{"model": RGB_GENERATOR, "n": 16, "seed": seed, "format": "npy"} for seed in range(100)]
    response = invoke_lines(client, lines)
    assert response.status_code == 413
    message = response.json()["error"]["message"]
    assert "MaxPayloadInMB" in message and "BatchStrategy=SingleRecord" in message
