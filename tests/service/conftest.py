"""A small real model repository written by the export tool, and apps serving it.

The repository is built once per test run (shared by pytest-xdist workers through a file lock):
a 3-channel DCGAN-like generator, the grayscale dcgan-mnist, a flat-output MLP generator, and
srgan-x4 with one residual block and 8 filters.
"""

from __future__ import annotations

import fcntl
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.deps import get_settings
from service.settings import Settings

RGB_GENERATOR = "rgb-gen"
GRAY_GENERATOR = "mnist-gen"
FLAT_GENERATOR = "flat-gen"
UPSCALER = "sr-x4"

#: The flat generator's image shape (height, width, channels).
FLAT_SHAPE = (12, 10, 3)


def _build_repository(repo: Path) -> None:
    import keras

    from export.api import export_keras_model
    from export.architectures import build

    keras.utils.set_random_seed(0)
    rgb = keras.Sequential(
        [
            keras.Input((16,)),
            keras.layers.Dense(4 * 4 * 8),
            keras.layers.Reshape((4, 4, 8)),
            keras.layers.Conv2DTranspose(8, 4, strides=2, padding="same", activation="relu"),
            keras.layers.Conv2DTranspose(3, 4, strides=2, padding="same", activation="tanh"),
        ]
    )
    flat = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(int(np.prod(FLAT_SHAPE)), activation="tanh"),
        ]
    )
    export_keras_model(rgb, repo, RGB_GENERATOR, description="16x16 RGB test generator", preview=False)
    export_keras_model(
        build("dcgan-mnist"),
        repo,
        GRAY_GENERATOR,
        architecture="dcgan-mnist",
        demo_weights=True,
        preview=False,
    )
    export_keras_model(flat, repo, FLAT_GENERATOR, image_shape=FLAT_SHAPE, preview=False)
    export_keras_model(
        build("srgan-x4", blocks=1, filters=8), repo, UPSCALER, architecture="srgan-x4", preview=False
    )


@pytest.fixture(scope="session")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test model repository (built on first use, then reused by every worker)."""
    shared = tmp_path_factory.getbasetemp().parent
    path = shared / "service-models"
    with open(shared / "service-models.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (path / ".complete").exists():
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir()
            _build_repository(path)
            (path / ".complete").touch()
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
