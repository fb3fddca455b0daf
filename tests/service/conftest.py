"""A small real model repository written with `onnx.helper` (no TensorFlow), and apps serving it.

A 3-channel DCGAN-like generator, a grayscale one marked as demo weights, a flat-output MLP
generator, and a pixel-shuffle x4 upscaler: the same shapes and cards `gan-export` writes, built in
milliseconds, so these tests run in the environment the serving image has.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.deps import get_settings
from service.settings import Settings
from tests.service.onnx_models import (
    conv_generator,
    dense_generator,
    pixel_shuffle_upscaler,
    write_entry,
    write_upscaler_entry,
)

RGB_GENERATOR = "rgb-gen"
GRAY_GENERATOR = "mnist-gen"
FLAT_GENERATOR = "flat-gen"
UPSCALER = "sr-x4"

#: The flat generator's image shape (height, width, channels).
FLAT_SHAPE = (12, 10, 3)
RGB_LATENT = 16


def build_repository(repo: Path) -> None:
    """Write the four test entries into `repo`."""
    image_card: dict[str, Any] = {"kind": "generator", "input_name": "z", "output_name": "image"}
    write_entry(
        repo,
        conv_generator(RGB_GENERATOR, RGB_LATENT, 16, 3),
        name=RGB_GENERATOR,
        description="16x16 RGB test generator",
        input_shape=[None, RGB_LATENT],
        output_shape=[None, 16, 16, 3],
        channels=3,
        height=16,
        width=16,
        latent_size=RGB_LATENT,
        **image_card,
    )
    write_entry(
        repo,
        conv_generator(GRAY_GENERATOR, 32, 28, 1, seed=10),
        name=GRAY_GENERATOR,
        description="DCGAN generator, MNIST 28×28 grayscale",
        demo_weights=True,
        input_shape=[None, 32],
        output_shape=[None, 28, 28, 1],
        channels=1,
        height=28,
        width=28,
        latent_size=32,
        **image_card,
    )
    height, width, channels = FLAT_SHAPE
    write_entry(
        repo,
        dense_generator(FLAT_GENERATOR, 8, height * width * channels, seed=20),
        name=FLAT_GENERATOR,
        input_shape=[None, 8],
        output_shape=[None, height * width * channels],
        channels=channels,
        height=height,
        width=width,
        flat_output=True,
        latent_size=8,
        **image_card,
    )
    write_upscaler_entry(repo, pixel_shuffle_upscaler(UPSCALER, 4, seed=30), UPSCALER, 4)


@pytest.fixture(scope="session")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test model repository (each pytest-xdist worker writes its own: it takes milliseconds)."""
    path = tmp_path_factory.mktemp("service-models")
    build_repository(path)
    return path


@pytest.fixture(scope="session")
def settings(repo: Path) -> Settings:
    """Test settings: small tiles so the upscaler's tiling is exercised on small images."""
    return Settings(models_dir=repo, tile_size=32, tile_overlap=12, max_n=16, warmup_batch_sizes=[1])


@pytest.fixture(scope="session")
def client(settings: Settings) -> Iterator[TestClient]:
    """One running app (lifespan included) shared by the tests of a worker."""
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def override(client: TestClient, settings: Settings) -> Iterator[Callable[..., None]]:
    """Change settings for the duration of one test, through the settings dependency."""
    app: Any = client.app

    def apply(**changes: Any) -> None:
        changed = settings.model_copy(update=changes)
        app.dependency_overrides[get_settings] = lambda: changed

    yield apply
    app.dependency_overrides.clear()
