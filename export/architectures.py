"""Built-in Keras architectures: the model families of the brief, by name.

Each builder returns an unbuilt-weights `keras.Model` with the exact layer structure users trained,
so a weights-only file saved from their notebook loads into it. `ARCHITECTURES` maps the CLI name
to an `Architecture`, which also says what the model card should record about its I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras
from keras import layers

from service.card import ModelKind


@keras.saving.register_keras_serializable(package="gan_serve")
class PixelShuffle(layers.Layer):  # type: ignore[misc]
    """Sub-pixel convolution's rearrangement (`tf.nn.depth_to_space`) as a real layer, not a Lambda."""

    def __init__(self, block_size: int = 2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.block_size = block_size

    def call(self, inputs: Any) -> Any:
        return keras.ops.depth_to_space(inputs, self.block_size, data_format="channels_last")

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        n, h, w, c = input_shape
        b = self.block_size
        return (
            n,
            None if h is None else h * b,
            None if w is None else w * b,
            None if c is None else c // (b * b),
        )

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "block_size": self.block_size}


def mlp_cifar10(latent_size: int = 100) -> keras.Model:
    """ "Model 1": a dense generator with a flat (N, 3072) tanh output for 32×32×3 images."""
    z = keras.Input((latent_size,), name="z")
    x = z
    for units in (256, 512, 1024):
        x = layers.Dense(units)(x)
        x = layers.LeakyReLU(negative_slope=0.2)(x)
        x = layers.BatchNormalization(momentum=0.7)(x)
    out = layers.Dense(32 * 32 * 3, activation="tanh")(x)
    return keras.Model(z, out, name="mlp_cifar10")


def dcgan_cifar10(latent_size: int = 100) -> keras.Model:
    """ "Model 2": the TensorFlow-tutorial DCGAN, kernel 5 stride 2, for 32×32×3 images."""
    z = keras.Input((latent_size,), name="z")
    x = layers.Dense(4 * 4 * 256, use_bias=False)(z)
    x = layers.Reshape((4, 4, 256))(x)
    for filters in (128, 64):
        x = layers.Conv2DTranspose(filters, 5, strides=2, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.LeakyReLU(negative_slope=0.2)(x)
    out = layers.Conv2DTranspose(3, 5, strides=2, padding="same", use_bias=False, activation="tanh")(x)
    return keras.Model(z, out, name="dcgan_cifar10")


def dcgan_mnist(latent_size: int = 100) -> keras.Model:
    """The course-example MNIST generator: one channel, 28×28."""
    z = keras.Input((latent_size,), name="z")
    x = layers.Dense(7 * 7 * 128, activation="relu")(z)
    x = layers.BatchNormalization()(x)
    x = layers.Reshape((7, 7, 128))(x)
    x = layers.Conv2DTranspose(64, 3, strides=2, padding="same")(x)
    x = layers.LeakyReLU(negative_slope=0.01)(x)
    out = layers.Conv2DTranspose(1, 3, strides=2, padding="same", activation="tanh")(x)
    return keras.Model(z, out, name="dcgan_mnist")


def dcgan_faces64(latent_size: int = 100, ngf: int = 64) -> keras.Model:
    """The PyTorch DCGAN-tutorial generator (Radford et al.) in Keras: 100 → 4×4×8ngf → 64×64×3.

    Layer for layer equal to `ConvTranspose2d(k=4)` stacks with BatchNorm2d(eps=1e-5): the first
    layer is a 'valid' transpose convolution over a 1×1 map, the others 'same' with stride 2
    (k − s even, so the pads are symmetric like PyTorch's padding=1).
    """
    z = keras.Input((latent_size,), name="z")
    x = layers.Reshape((1, 1, latent_size))(z)
    x = layers.Conv2DTranspose(ngf * 8, 4, strides=1, padding="valid", use_bias=False)(x)
    x = layers.BatchNormalization(epsilon=1e-5)(x)
    x = layers.ReLU()(x)
    for mult in (4, 2, 1):
        x = layers.Conv2DTranspose(ngf * mult, 4, strides=2, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization(epsilon=1e-5)(x)
        x = layers.ReLU()(x)
    out = layers.Conv2DTranspose(3, 4, strides=2, padding="same", use_bias=False, activation="tanh")(x)
    return keras.Model(z, out, name="dcgan_faces64")


def srgan_x4(blocks: int = 16, filters: int = 64, channels: int = 3) -> keras.Model:
    """SRGAN ×4 generator (Ledig et al.): input in [0, 1], tanh output in [-1, 1], any H×W."""
    lr = keras.Input((None, None, channels), name="lr")
    x = layers.Conv2D(filters, 9, padding="same")(lr)
    x = layers.PReLU(shared_axes=[1, 2])(x)
    skip = x
    for _ in range(blocks):
        y = layers.Conv2D(filters, 3, padding="same")(x)
        y = layers.BatchNormalization()(y)
        y = layers.PReLU(shared_axes=[1, 2])(y)
        y = layers.Conv2D(filters, 3, padding="same")(y)
        y = layers.BatchNormalization()(y)
        x = layers.Add()([x, y])
    x = layers.Conv2D(filters, 3, padding="same")(x)
    x = layers.BatchNormalization()(x)
    x = layers.Add()([skip, x])
    for _ in range(2):
        x = layers.Conv2D(filters * 4, 3, padding="same")(x)
        x = PixelShuffle(2)(x)
        x = layers.PReLU(shared_axes=[1, 2])(x)
    out = layers.Conv2D(channels, 9, padding="same", activation="tanh")(x)
    return keras.Model(lr, out, name="srgan_x4")


@dataclass(frozen=True)
class Architecture:
    """A built-in architecture and what its model card records about its I/O."""

    name: str
    build: Callable[..., keras.Model]
    kind: ModelKind
    description: str
    output_range: tuple[float, float] = (-1.0, 1.0)
    input_range: tuple[float, float] | None = None
    scale: int | None = None
    image_shape: tuple[int, int, int] | None = None  # (H, W, C) of a generator's image
    flat_output: bool = False
    options: dict[str, int] = field(default_factory=dict)  # builder keyword arguments and defaults


ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture(
            "mlp-cifar10",
            mlp_cifar10,
            "generator",
            "MLP generator, CIFAR-10 32×32×3, flat tanh output",
            image_shape=(32, 32, 3),
            flat_output=True,
            options={"latent_size": 100},
        ),
        Architecture(
            "dcgan-cifar10",
            dcgan_cifar10,
            "generator",
            "DCGAN generator, CIFAR-10 32×32×3 (kernel 5, stride 2)",
            image_shape=(32, 32, 3),
            options={"latent_size": 100},
        ),
        Architecture(
            "dcgan-mnist",
            dcgan_mnist,
            "generator",
            "DCGAN generator, MNIST 28×28 grayscale",
            image_shape=(28, 28, 1),
            options={"latent_size": 100},
        ),
        Architecture(
            "dcgan-faces64",
            dcgan_faces64,
            "generator",
            "DCGAN generator (PyTorch tutorial architecture), faces 64×64×3",
            image_shape=(64, 64, 3),
            options={"latent_size": 100, "ngf": 64},
        ),
        Architecture(
            "srgan-x4",
            srgan_x4,
            "upscaler",
            "SRGAN ×4 generator: residual blocks, two pixel-shuffle ×2 stages",
            input_range=(0.0, 1.0),
            scale=4,
            options={"blocks": 16, "filters": 64, "channels": 3},
        ),
    )
}


def build(name: str, **options: int) -> keras.Model:
    """Build the built-in architecture `name`; unknown option names raise `TypeError`."""
    arch = ARCHITECTURES[name]
    unknown = set(options) - set(arch.options)
    if unknown:
        raise TypeError(f"{name} takes options {sorted(arch.options)}, not {sorted(unknown)}")
    return arch.build(**{**arch.options, **options})
