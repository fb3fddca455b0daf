"""`gan-serve`: argument and settings errors, and the real server over HTTP as a subprocess."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.cli import main
from tests.service.conftest import GRAY_GENERATOR, UPSCALER
from tests.service.live_server import free_port, gan_serve_command, wait_ready
from tests.service.sample_images import open_image, png_bytes, random_pixels


def test_bad_flag_value_exits_2_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--port", "70000"]) == 2
    err = capsys.readouterr().err
    assert "GAN_SERVE_PORT: Input should be less than or equal to 65535" in err
    assert "Traceback" not in err


def test_bad_environment_value_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GAN_SERVE_TILE_SIZE", "5")
    monkeypatch.setenv("GAN_SERVE_DEVICE", "tpu")
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "GAN_SERVE_DEVICE: Input should be 'auto', 'cuda' or 'cpu'" in err


def test_missing_models_dir_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--models", str(tmp_path / "none")]) == 3
    assert "make models" in capsys.readouterr().err


def test_unknown_command_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as caught:
        main(["train"])
    assert caught.value.code == 2


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`gan-serve serve` on a free port, ready; SIGTERM-ed by the test that ends it."""
    port = free_port()
    env = {
        **os.environ,
        "GAN_SERVE_TILE_SIZE": "16",
        "GAN_SERVE_TILE_OVERLAP": "12",
        "GAN_SERVE_LOG_FORMAT": "json",
    }
    process = subprocess.Popen(
        [*gan_serve_command(), "serve", "--models", str(repo), "--port", str(port), "--device", "cpu"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(process, url, lambda: process.stderr.read() if process.stderr else "")
    yield process, url
    if process.poll() is None:
        process.kill()
        process.wait()


# Both tests share one server process, so they must run on the same xdist worker, in this order.
@pytest.mark.xdist_group("service-e2e")
def test_end_to_end_over_http(server: tuple[subprocess.Popen[str], str]) -> None:
    _, url = server
    with httpx.Client(base_url=url, timeout=30) as http:
        generated = http.post("/generate", json={"model": GRAY_GENERATOR, "n": 2, "seed": 11})
        assert generated.status_code == 200
        assert generated.headers["x-seed"] == "11"
        names = zipfile.ZipFile(io.BytesIO(generated.content)).namelist()
        assert names == ["0000.png", "0001.png"]

        upload = png_bytes(random_pixels(24, 20, 3))
        upscaled = http.post(
            "/upscale", files={"file": ("in.png", upload, "image/png")}, headers={"X-Request-ID": "e2e-1"}
        )
        assert upscaled.status_code == 200
        assert upscaled.headers["x-model"] == UPSCALER
        assert upscaled.headers["x-request-id"] == "e2e-1"
        assert open_image(upscaled.content).size == (80, 96)

        refused = http.post("/upscale", content=b"nope", headers={"content-type": "text/plain"})
        assert refused.status_code == 415
        assert refused.json()["error"]["code"] == "unsupported_media_type"


@pytest.mark.xdist_group("service-e2e")
def test_sigterm_drains_in_flight_requests_then_exits_0(server: tuple[subprocess.Popen[str], str]) -> None:
    process, url = server
    results: list[int] = []

    def slow_upscale() -> None:
        data = png_bytes(random_pixels(160, 160, 3))
        headers = {"content-type": "image/png", "x-request-id": "drained"}
        response = httpx.post(f"{url}/upscale", content=data, headers=headers, timeout=60)
        results.append(response.status_code)

    worker = threading.Thread(target=slow_upscale)
    worker.start()
    # Signal only once the upscale is being served, so the test shows it is drained, not refused.
    deadline = time.monotonic() + 30
    while not results and time.monotonic() < deadline:
        if 'gan_serve_requests_in_flight{route="/upscale"} 1.0' in httpx.get(f"{url}/metrics").text:
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    worker.join(60)
    assert results == [200]
    assert process.wait(30) == 0
    assert process.stderr is not None
    lines = [json.loads(line) for line in process.stderr.read().splitlines() if line.startswith("{")]
    access = [
        line for line in lines if line["logger"] == "service.access" and line.get("request_id") == "drained"
    ]
    assert access and access[0]["status"] == 200 and access[0]["model"] == UPSCALER
    assert any(line["message"] == "stopped: models released" for line in lines)
