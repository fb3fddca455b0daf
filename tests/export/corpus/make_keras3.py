"""Write the corpus's Keras 3 files the way their authors save them, with the model's own outputs.

The corpus test calls `write(case, directory)` at test time (each model is tiny and seeded, so the
file and its reference are the same on every run); `python -m tests.export.corpus.make_keras3 DIR`
writes them all into DIR to look at. A reference holds the fixed inputs (`latents`, `labels` for
conditional generators, `pixels` and `input` for upscalers) and `output`, computed by Keras 3 on
the in-memory model the file was saved from.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from service.card import ValueRange
from service.pixels import from_uint8
from tests.export.corpus import corpus_arch
from tests.export.corpus.corpus_arch import CLASSES, LATENT

Reference = dict[str, np.ndarray]
#: Labels fed to the conditional generators, one per latent vector.
LABELS = np.array([7, 2, 2], dtype=np.int32)


def randomize(model: keras.Model, seed: int) -> keras.Model:
    """Seeded random weights: initializer values times a factor; biases, BN statistics, slopes random."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        path, shape = weight.path, tuple(weight.shape)
        if "moving_variance" in path:
            value = rng.uniform(0.5, 1.5, shape)
        elif "gamma" in path:
            value = rng.uniform(0.8, 1.2, shape)
        elif "moving_mean" in path or "beta" in path or "bias" in path:
            value = rng.normal(0.0, 0.1, shape)
        elif "alpha" in path:  # PReLU slopes
            value = rng.uniform(0.05, 0.3, shape)
        else:
            value = np.asarray(weight) * rng.uniform(0.8, 1.2)
        weight.assign(np.asarray(value, dtype=np.float32))
    return model


def build(function: Callable[[], keras.Model], seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return randomize(function(), seed)


def latents(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((3, LATENT)).astype(np.float32)


def one_hot(labels: np.ndarray) -> np.ndarray:
    return np.take(np.eye(CLASSES, dtype=np.float32), labels.reshape(-1), axis=0)


def upscaler_reference(
    model: keras.Model, seed: int, size: tuple[int, int], low: float, high: float
) -> Reference:
    pixels = np.random.default_rng(seed).integers(0, 256, (1, *size, 3), dtype=np.uint8)
    x = from_uint8(pixels, ValueRange(low=low, high=high))
    return {"pixels": pixels, "input": x, "output": np.asarray(model(x, training=False))}


def keras_gan_dcgan_k3(directory: Path) -> tuple[Path, Reference]:
    model = build(corpus_arch.keras_gan_dcgan, 2)
    path = directory / "g.weights.h5"
    model.save_weights(path)
    z = latents(2)
    return path, {"latents": z, "output": np.asarray(model(z, training=False))}


def srgan_fixed(directory: Path) -> tuple[Path, Reference]:
    model = build(corpus_arch.srgan_fixed, 5)
    path = directory / "srgan_x4_24px.weights.h5"
    model.save_weights(path)
    # The same network at any size: the reference runs a 10×13 image, not the 24×24 it was built for.
    any_size = corpus_arch.srgan_fixed(0)
    any_size.set_weights(model.get_weights())
    return path, upscaler_reference(any_size, 5, (10, 13), -1.0, 1.0)


def rdn_x2(directory: Path) -> tuple[Path, Reference]:
    model = build(corpus_arch.rdn_x2, 7)
    path = directory / "rdn_x2.keras"
    model.save(path)
    return path, upscaler_reference(model, 7, (9, 11), 0.0, 255.0)


def wgan_gp(directory: Path) -> tuple[Path, Reference]:
    model = build(corpus_arch.wgan_gp_generator, 8)
    path = directory / "wgan_gp_generator.keras"
    model.save(path)
    z = latents(8)
    return path, {"latents": z, "output": np.asarray(model(z, training=False))}


def acgan_onehot(directory: Path) -> tuple[Path, Reference]:
    model = build(corpus_arch.acgan_onehot_generator, 10)
    path = directory / "acgan_onehot.keras"
    model.save(path)
    z = latents(10)
    output = np.asarray(model([z, one_hot(LABELS)], training=False))
    return path, {"latents": z, "labels": LABELS, "output": output}


def keras_io_conditional(directory: Path) -> tuple[Path, Reference]:
    model = build(corpus_arch.keras_io_conditional_generator, 11)
    last = model.layers[-1]
    last.kernel.assign(last.kernel * 8.0)  # else every pixel is mid-grey
    path = directory / "conditional_gan_generator.keras"
    model.save(path)
    z = latents(11)
    # keras-io concatenates the one-hot labels to the noise before calling the generator.
    output = np.asarray(model(np.concatenate([z, one_hot(LABELS)], axis=1), training=False))
    return path, {"latents": z, "labels": LABELS, "output": output}


WRITERS: dict[str, Callable[[Path], tuple[Path, Reference]]] = {
    "keras_gan_dcgan_k3": keras_gan_dcgan_k3,
    "srgan_fixed": srgan_fixed,
    "rdn_x2": rdn_x2,
    "wgan_gp": wgan_gp,
    "acgan_onehot": acgan_onehot,
    "keras_io_conditional": keras_io_conditional,
}


def write(case: str, directory: Path) -> tuple[Path, Reference]:
    """Save case `case`'s model into `directory` as its author does; return the file and the reference."""
    directory.mkdir(parents=True, exist_ok=True)
    return WRITERS[case](directory)


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "corpus-keras3")
    for name in WRITERS:
        file, reference = write(name, out)
        print(f"{file.stat().st_size:>9,d}  {file}  output {reference['output'].shape}")
