"""Real small models, saved the ways users save them, exported once per session with the real tool.

Every export test module is in the xdist group "export" (one worker), so each artifact is built once.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

FIXTURES = Path(__file__).parent / "fixtures"

#: Built-in architectures at test size: srgan-x4 with few blocks and filters, faces with ngf=8.
SMALL_OPTIONS: dict[str, dict[str, int]] = {
    "mlp-cifar10": {},
    "dcgan-cifar10": {},
    "dcgan-mnist": {},
    "dcgan-faces64": {"ngf": 8},
    "srgan-x4": {"blocks": 2, "filters": 8},
}
#: Input formats that apply to every built-in; dcgan-cifar10 ("Model 2") also as a SavedModel.
FORMATS = ("keras", "h5", "weights")
SAVEDMODEL_ARCHITECTURES = ("dcgan-cifar10", "srgan-x4")


def randomize(model: Any, seed: int) -> Any:
    """Random weights and BatchNorm moving statistics, so parity is not trivially zero."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        values = []
        for weight in layer.weights:
            shape, name = tuple(weight.shape), weight.path
            if "moving_variance" in name or "gamma" in name:
                value = rng.uniform(0.5, 1.5, shape)
            elif "moving_mean" in name or "beta" in name or "bias" in name:
                value = rng.normal(0.0, 0.2, shape)
            elif "alpha" in name:  # PReLU
                value = rng.uniform(0.0, 0.3, shape)
            else:
                value = np.asarray(weight) * rng.uniform(0.8, 1.2)
            values.append(np.asarray(value, dtype=np.float32))
        if values:
            layer.set_weights(values)
    return model


@dataclass
class Exported:
    """One export: where the entry is, the card returned, and the source it came from."""

    entry: Path
    card: Any
    source: Path
    architecture: str


def _save(model: Any, directory: Path, fmt: str) -> Path:
    if fmt == "keras":
        path = directory / "model.keras"
        model.save(path)
    elif fmt == "h5":
        path = directory / "model.h5"  # Keras 3's legacy full-model HDF5 writer
        model.save(path)
    elif fmt == "weights":
        path = directory / "model.weights.h5"
        model.save_weights(path)
    else:
        path = directory / "saved_model"
        model.export(path, format="tf_saved_model", verbose=False)
    return path


@pytest.fixture(scope="session")
def builtin_export(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Exported]:
    """(architecture, format) → its export, built on first use and cached for the session."""
    from export.api import export_file
    from export.architectures import build

    cache: dict[tuple[str, str], Exported] = {}
    root = tmp_path_factory.mktemp("builtin")

    def get(architecture: str, fmt: str) -> Exported:
        key = (architecture, fmt)
        if key not in cache:
            seed = sum(map(ord, architecture))
            model = randomize(build(architecture, **SMALL_OPTIONS[architecture]), seed)
            directory = root / f"{architecture}-{fmt}"
            directory.mkdir()
            source = _save(model, directory, fmt)
            name = f"{architecture}-{fmt}"
            card = export_file(
                source,
                root / "repo",
                name,
                architecture=architecture if fmt in ("weights", "h5", "keras") else None,
                architecture_options=SMALL_OPTIONS[architecture],
                input_range=(0.0, 1.0) if fmt == "savedmodel" and architecture == "srgan-x4" else None,
                image_shape=None,
            )
            cache[key] = Exported(root / "repo" / name, card, source, architecture)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def small_keras_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny DCGAN-like generator (k=5, asymmetric pads) saved as .keras, for CLI tests."""
    import keras
    from keras import layers

    z = keras.Input((8,), name="z")
    x = layers.Dense(4 * 4 * 8)(z)
    x = layers.Reshape((4, 4, 8))(x)
    x = layers.Conv2DTranspose(8, 5, strides=2, padding="same")(x)
    x = layers.BatchNormalization()(x)
    x = layers.LeakyReLU(0.2)(x)
    out = layers.Conv2DTranspose(3, 5, strides=2, padding="same", activation="tanh")(x)
    model = randomize(keras.Model(z, out), 3)
    path = tmp_path_factory.mktemp("keras") / "generator.keras"
    model.save(path)
    return path
