"""Startup: broken repositories and lying cards refuse to start, naming the entry; settings; defaults."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.errors import ModelsDirMissing, StartupError
from service.settings import Settings
from tests.service.conftest import FLAT_GENERATOR, GRAY_GENERATOR, RGB_GENERATOR, UPSCALER
from tests.service.live_server import free_port, gan_serve_command
from tests.service.onnx_models import write_conditional_entry
from tests.service.sample_images import png_bytes, random_pixels


@pytest.fixture
def small_repo(repo: Path, tmp_path: Path) -> Path:
    """A copy of two entries that a test may break."""
    copy = tmp_path / "models"
    for name in (RGB_GENERATOR, UPSCALER):
        shutil.copytree(repo / name, copy / name)
    return copy


def start(models: Path, **settings: Any) -> str:
    """Start an app on `models`, expecting it to refuse; return the message."""
    with (
        pytest.raises(StartupError) as caught,
        TestClient(create_app(Settings(models_dir=models, **settings))),
    ):
        pass
    return caught.value.message


def test_missing_models_dir_names_it_and_how_to_build(tmp_path: Path) -> None:
    message = start(tmp_path / "absent")
    assert str(tmp_path / "absent") in message and "make models" in message and "gan-export" in message


def test_empty_models_dir(tmp_path: Path) -> None:
    with pytest.raises(ModelsDirMissing, match="holds no model entry"):
        TestClient(create_app(Settings(models_dir=tmp_path))).__enter__()


def test_card_naming_another_model(small_repo: Path) -> None:
    (small_repo / RGB_GENERATOR).rename(small_repo / "renamed")
    assert (
        start(small_repo) == f"model entry renamed: its card names it '{RGB_GENERATOR}'; rename one to match"
    )


def test_invalid_entry_name(small_repo: Path) -> None:
    shutil.copytree(small_repo / RGB_GENERATOR, small_repo / "bad name")
    assert "the name must be" in start(small_repo)


def test_missing_onnx_file(small_repo: Path) -> None:
    (small_repo / UPSCALER / "model.onnx").unlink()
    message = start(small_repo)
    assert message.startswith(f"model entry {UPSCALER}:") and "model.onnx is missing" in message


def test_corrupt_onnx_file(small_repo: Path) -> None:
    (small_repo / UPSCALER / "model.onnx").write_bytes(b"not onnx")
    assert f"model entry {UPSCALER}: onnxruntime cannot load" in start(small_repo)


def test_invalid_card(small_repo: Path) -> None:
    card = json.loads((small_repo / UPSCALER / "model.json").read_text())
    del card["scale"]
    (small_repo / UPSCALER / "model.json").write_text(json.dumps(card))
    message = start(small_repo)
    assert message.startswith(f"model entry {UPSCALER}:") and "scale" in message


def test_card_file_escaping_its_entry(small_repo: Path) -> None:
    card = json.loads((small_repo / UPSCALER / "model.json").read_text())
    card["file"] = f"../{RGB_GENERATOR}/model.onnx"
    (small_repo / UPSCALER / "model.json").write_text(json.dumps(card))
    assert "must be a plain file name" in start(small_repo)


def test_card_disagreeing_with_graph(small_repo: Path) -> None:
    card = json.loads((small_repo / UPSCALER / "model.json").read_text())
    card["input_name"] = "pixels"
    (small_repo / UPSCALER / "model.json").write_text(json.dumps(card))
    assert "card and graph disagree: input 'pixels' not in the graph's" in start(small_repo)


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA is available")
def test_device_cuda_refuses_without_cuda(small_repo: Path) -> None:
    assert start(small_repo, device="cuda").startswith("device=cuda but this onnxruntime has no CUDA")


def test_default_override(small_repo: Path, repo: Path) -> None:
    shutil.copytree(repo / GRAY_GENERATOR, small_repo / GRAY_GENERATOR)
    settings = Settings(models_dir=small_repo, default_generator=RGB_GENERATOR, tile_size=32)
    with TestClient(create_app(settings)) as client:
        assert client.get("/models").json()["defaults"]["generator"] == RGB_GENERATOR
        assert client.post("/generate", json={}).headers["x-model"] == RGB_GENERATOR


def test_default_prefers_trained_weights_over_demo_entries(small_repo: Path, repo: Path) -> None:
    demo = "aaa-demo"  # sorts before every other name
    shutil.copytree(repo / GRAY_GENERATOR, small_repo / demo)
    card = json.loads((small_repo / demo / "model.json").read_text())
    assert card["demo_weights"] is True
    card["name"] = demo
    (small_repo / demo / "model.json").write_text(json.dumps(card))
    with TestClient(create_app(Settings(models_dir=small_repo, tile_size=32))) as client:
        assert client.get("/models").json()["defaults"]["generator"] == RGB_GENERATOR
        assert client.post("/generate", json={}).headers["x-model"] == RGB_GENERATOR


def test_default_override_must_exist(small_repo: Path) -> None:
    message = start(small_repo, default_generator="nope")
    assert message == f"default generator 'nope' is not a generator in {small_repo} (there: {RGB_GENERATOR})"


def test_device_cpu_and_hidden_or_plain_files_ignored(small_repo: Path) -> None:
    (small_repo / ".cache").mkdir()
    (small_repo / "README.txt").write_text("not an entry")
    with TestClient(create_app(Settings(models_dir=small_repo, device="cpu", tile_size=32))) as client:
        ready = client.get("/health/ready").json()
        assert ready["device"] == "cpu"
        assert sorted(ready["providers"]) == [RGB_GENERATOR, UPSCALER]


def test_sagemaker_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGEMAKER_BIND_TO_PORT", "8080")
    assert Settings().port == 8080
    monkeypatch.setenv("GAN_SERVE_PORT", "9000")
    assert Settings().port == 9000


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GAN_SERVE_MAX_N", "5")
    monkeypatch.setenv("GAN_SERVE_DEVICE", "cpu")
    settings = Settings()
    assert (settings.max_n, settings.device, settings.host, settings.port) == (5, "cpu", "127.0.0.1", 8000)


def test_a_failing_tile_fails_the_request(small_repo: Path) -> None:
    # A card that fixes the input to 16x16 (the graph itself takes any size): the first tile of
    # another size breaks the model's contract, and the whole request fails naming that tile.
    card_path = small_repo / UPSCALER / "model.json"
    card = json.loads(card_path.read_text())
    card["input_shape"] = [None, 16, 16, 3]
    card_path.write_text(json.dumps(card))
    with TestClient(create_app(Settings(models_dir=small_repo, tile_size=16, tile_overlap=4))) as client:
        small = client.post(
            "/upscale", content=png_bytes(random_pixels(16, 16, 3)), headers={"content-type": "image/png"}
        )
        assert small.status_code == 200
        large = client.post(
            "/upscale", content=png_bytes(random_pixels(40, 40, 3)), headers={"content-type": "image/png"}
        )
        assert large.status_code == 500
        assert large.json()["error"]["code"] == "inference_failed"
        assert large.json()["error"]["message"].startswith(
            "tile 1 of 9 (input rows 0-16, columns 0-16) failed:"
        )


# Cards that lie about the model: refused at startup, naming the model, the field and both values.


def lie(entry: Path, **fields: Any) -> None:
    """Rewrite some fields of `entry`'s card, as a hand edit or a buggy exporter would."""
    card_path = entry / "model.json"
    card = json.loads(card_path.read_text())
    card_path.write_text(json.dumps({**card, **fields}))


def refusal(models: Path) -> str:
    """The one-message startup refusal of the repository at `models`."""
    return start(models, tile_size=32, warmup_batch_sizes=[1])


@pytest.mark.parametrize(
    ("name", "fields", "expected"),
    [
        (
            RGB_GENERATOR,
            {"height": 32, "output_shape": [None, 32, 16, 3]},
            "height: the card says 32, the model gives 16",
        ),
        (
            RGB_GENERATOR,
            {"width": 20, "output_shape": [None, 16, 20, 3]},
            "width: the card says 20, the model gives 16",
        ),
        (RGB_GENERATOR, {"channels": 1}, "channels: the card says 1, the model gives 3"),
        (RGB_GENERATOR, {"layout": "NCHW"}, "layout: the card says NCHW, the model gives NHWC"),
        (RGB_GENERATOR, {"flat_output": True}, "flat_output: the card says true"),
        (FLAT_GENERATOR, {"flat_output": False}, "flat_output: the card says false (an image tensor)"),
        (
            FLAT_GENERATOR,
            {"height": 10},
            "height x width x channels: the card says 10 x 10 x 3 = 300 values per image "
            "(flat_output), the model gives 360 values per image",
        ),
        (FLAT_GENERATOR, {"channels": 1}, "the card says 12 x 10 x 1 = 120 values per image"),
        (
            RGB_GENERATOR,
            {"output_shape": [None, 8, 8, 3]},
            "output_shape: the card says [?, 8, 8, 3], the model gives [8, 16, 16, 3]",
        ),
        (
            RGB_GENERATOR,
            {"latent_size": 8, "input_shape": [None, 8]},
            "latent_size: the card says 8 values per row, the model gives 16",
        ),
        (UPSCALER, {"scale": 2}, "scale: the card says 2, the model gives x4"),
        (UPSCALER, {"channels": 1}, "channels: the card says 1, the model gives 3"),
        (UPSCALER, {"input_channels": 1}, "input_channels: the card says 1, the model gives 3"),
        (UPSCALER, {"layout": "NCHW"}, "layout: the card says NCHW, the model gives NHWC"),
    ],
)
def test_a_card_contradicting_its_model_stops_startup(
    small_repo: Path, repo: Path, name: str, fields: dict[str, Any], expected: str
) -> None:
    if not (small_repo / name).exists():
        shutil.copytree(repo / name, small_repo / name)
    lie(small_repo / name, **fields)
    message = refusal(small_repo)
    assert message.startswith(f"model entry {name}: card and model disagree on "), message
    assert expected in message, message


@pytest.mark.parametrize(
    ("output_range", "why"),
    [
        # tanh values under a [0, 255] card: every pixel would map to 0 or 1, a black image.
        ({"low": 0, "high": 255}, "less than 2% of the range"),
        # tanh values under a [0, 1] card: the negative half would be clipped to black.
        ({"low": 0, "high": 1}, "more than 50% of the range outside it"),
    ],
)
def test_a_wrong_output_range_stops_startup(
    small_repo: Path, output_range: dict[str, float], why: str
) -> None:
    lie(small_repo / RGB_GENERATOR, output_range=output_range)
    message = refusal(small_repo)
    says = f"[{output_range['low']:g}, {output_range['high']:g}]"
    assert message.startswith(
        f"model entry {RGB_GENERATOR}: card and model disagree on output_range: the card says {says}, "
        "the model gives values in ["
    ), message
    assert why in message and "random latents" in message


def test_a_wrong_upscaler_output_range_stops_startup(small_repo: Path) -> None:
    lie(small_repo / UPSCALER, output_range={"low": 0, "high": 255})
    message = refusal(small_repo)
    assert f"model entry {UPSCALER}: card and model disagree on output_range" in message
    assert "a smooth test image" in message


def test_honest_cards_start_and_serve(small_repo: Path, repo: Path) -> None:
    # The checks pass every honest entry the other tests serve, conditional ones included.
    shutil.copytree(repo / FLAT_GENERATOR, small_repo / FLAT_GENERATOR)
    write_conditional_entry(small_repo, "digits", 6, 8, 10)
    settings = Settings(models_dir=small_repo, tile_size=32, warmup_batch_sizes=[1])
    with TestClient(create_app(settings)) as client:
        assert client.get("/health/ready").status_code == 200
        assert client.post("/generate", json={"model": "digits", "label": 3}).status_code == 200


def test_gan_serve_refuses_a_lying_card_in_one_line(small_repo: Path) -> None:
    lie(small_repo / RGB_GENERATOR, height=32, output_shape=[None, 32, 16, 3])
    done = subprocess.run(
        [*gan_serve_command(), "--models", str(small_repo), "--port", str(free_port()), "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "GAN_SERVE_LOG_FORMAT": "text"},
    )
    assert done.returncode == 3
    assert "Traceback" not in done.stderr + done.stdout
    expected = (
        f"gan-serve: model entry {RGB_GENERATOR}: card and model disagree on height: "
        "the card says 32, the model gives 16"
    )
    assert done.stderr.splitlines()[-1].startswith(expected), done.stderr
