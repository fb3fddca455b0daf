"""Built-in Keras architectures: the model families of the brief, by name.

Each builder returns an unbuilt-weights `keras.Model` with the exact layer structure users trained,
so a weights-only file saved from their notebook loads into it. `export.catalog.ARCHITECTURES` maps
the CLI name to an `Architecture`, which also says what the model card should record about its I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
from keras import layers

from export.catalog import ARCHITECTURES as ARCHITECTURES  # re-exported for callers that build


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


def cgan_digits(latent_size: int = 32, classes: int = 10) -> keras.Model:
    """A Keras-GAN-style conditional generator: noise × label embedding → 8×8 grayscale digit.

    Two inputs, `z` (N, latent_size) and an integer `label` (N, 1); the label's `Embedding` is
    multiplied with the noise, as in the Keras-GAN collection's `cgan`.
    """
    z = keras.Input((latent_size,), name="z")
    label = keras.Input((1,), dtype="int32", name="label")
    embedded = layers.Flatten()(layers.Embedding(classes, latent_size)(label))
    x = layers.Multiply()([z, embedded])
    x = layers.Dense(4 * 4 * 64)(x)
    x = layers.BatchNormalization()(x)
    x = layers.LeakyReLU(negative_slope=0.2)(x)
    x = layers.Reshape((4, 4, 64))(x)
    x = layers.Conv2DTranspose(32, 4, strides=2, padding="same")(x)
    x = layers.BatchNormalization()(x)
    x = layers.LeakyReLU(negative_slope=0.2)(x)
    out = layers.Conv2D(1, 3, padding="same", activation="tanh")(x)
    return keras.Model([z, label], out, name="cgan_digits")


def build(name: str, **options: int) -> keras.Model:
    """Build the built-in architecture `name`; unknown option names raise `TypeError`."""
    arch = ARCHITECTURES[name]
    unknown = set(options) - set(arch.options)
    if unknown:
        raise TypeError(f"{name} takes options {sorted(arch.options)}, not {sorted(unknown)}")
    builder: Callable[..., keras.Model] = globals()[arch.builder]
    return builder(**{**arch.options, **options})
