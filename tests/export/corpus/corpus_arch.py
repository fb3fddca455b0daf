"""The corpus's architectures in Keras 3, as their authors keep them: in code, next to the weights.

`gan-export convert FILE --architecture corpus_arch:NAME` imports this module from the current
directory (the corpus test runs the CLI from tests/export/corpus). The weights-only builders
(`keras_gan_dcgan`, `srgan_fixed`, `tf_tutorial_generator`) mirror layer for layer the tf.keras 2
code in make_tfkeras2.py that wrote the genuine files; the others are the Keras 3 models that
make_keras3.py saves whole. Widths are 4-16: the corpus is about how models are written, not
about their size.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

LATENT = 16
CLASSES = 10


def keras_gan_dcgan() -> keras.Model:
    """Keras-GAN's DCGAN generator, 28×28×1: `Model(noise, Sequential([...])(noise))`."""
    model = keras.Sequential()
    model.add(keras.Input((LATENT,)))
    model.add(layers.Dense(16 * 7 * 7, activation="relu"))
    model.add(layers.Reshape((7, 7, 16)))
    model.add(layers.UpSampling2D())
    model.add(layers.Conv2D(16, kernel_size=3, padding="same"))
    model.add(layers.BatchNormalization(momentum=0.8))
    model.add(layers.Activation("relu"))
    model.add(layers.UpSampling2D())
    model.add(layers.Conv2D(8, kernel_size=3, padding="same"))
    model.add(layers.BatchNormalization(momentum=0.8))
    model.add(layers.Activation("relu"))
    model.add(layers.Conv2D(1, kernel_size=3, padding="same"))
    model.add(layers.Activation("tanh"))
    noise = keras.Input((LATENT,))
    img = model(noise)
    return keras.Model(noise, img)


class DepthToSpace(layers.Layer):  # type: ignore[misc]
    """Pixel shuffle, the way Keras 3 users write it now that `tf.nn` ops are off limits."""

    def __init__(self, block_size: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.block_size = block_size

    def call(self, x: Any) -> Any:
        return keras.ops.depth_to_space(x, self.block_size)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        n, h, w, c = input_shape
        r = self.block_size
        return (
            n,
            None if h is None else h * r,
            None if w is None else w * r,
            None if c is None else c // (r * r),
        )

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "block_size": self.block_size}


def srgan_fixed(size: int = 24) -> keras.Model:
    """SRGAN ×4 generator built for `size`×`size` inputs (0: any size), input and output in [-1, 1].

    Conv 9×9 + PReLU(shared_axes=[1, 2]) → a residual block (Conv → BN → PReLU → Conv → BN, + skip)
    → Conv → BN → + long skip → two (Conv → pixel shuffle ×2 → PReLU) → Conv 9×9, tanh.
    """
    filters = 8
    lr = keras.Input((size or None, size or None, 3))
    x = layers.Conv2D(filters, 9, padding="same")(lr)
    x = skip = layers.PReLU(shared_axes=[1, 2])(x)
    y = layers.Conv2D(filters, 3, padding="same")(x)
    y = layers.BatchNormalization(momentum=0.8)(y)
    y = layers.PReLU(shared_axes=[1, 2])(y)
    y = layers.Conv2D(filters, 3, padding="same")(y)
    y = layers.BatchNormalization(momentum=0.8)(y)
    x = layers.Add()([x, y])
    x = layers.Conv2D(filters, 3, padding="same")(x)
    x = layers.BatchNormalization(momentum=0.8)(x)
    x = layers.Add()([skip, x])
    for _ in range(2):
        x = layers.Conv2D(filters * 4, 3, padding="same")(x)
        x = DepthToSpace(2)(x)
        x = layers.PReLU(shared_axes=[1, 2])(x)
    sr = layers.Conv2D(3, 9, padding="same", activation="tanh")(x)
    return keras.Model(lr, sr)


def tf_tutorial_generator() -> keras.Model:
    """The TensorFlow DCGAN tutorial's `make_generator_model`, 28×28×1, widths scaled down."""
    return keras.Sequential(
        [
            keras.Input((LATENT,)),
            layers.Dense(7 * 7 * 16, use_bias=False),
            layers.BatchNormalization(),
            layers.LeakyReLU(),
            layers.Reshape((7, 7, 16)),
            layers.Conv2DTranspose(8, (5, 5), strides=(1, 1), padding="same", use_bias=False),
            layers.BatchNormalization(),
            layers.LeakyReLU(),
            layers.Conv2DTranspose(4, (5, 5), strides=(2, 2), padding="same", use_bias=False),
            layers.BatchNormalization(),
            layers.LeakyReLU(),
            layers.Conv2DTranspose(
                1, (5, 5), strides=(2, 2), padding="same", use_bias=False, activation="tanh"
            ),
        ]
    )


def rdn_x2() -> keras.Model:
    """Residual dense network ×2 (Zhang et al.), [0, 255] in and out through Rescaling and a sigmoid.

    Two residual dense blocks of three densely connected convolutions (each sees the Concatenate of
    the block input and every earlier output), 1×1 local fusion and a local skip; the blocks'
    outputs are fused globally (1×1 then 3×3) and added to the first shallow features; then a
    stride-2 Conv2DTranspose and a 3-channel sigmoid convolution.
    """
    g0, growth, convs, blocks = 8, 4, 3, 2
    lr = keras.Input((None, None, 3))
    x = layers.Rescaling(1.0 / 255)(lr)
    shallow = layers.Conv2D(g0, 3, padding="same")(x)
    f = layers.Conv2D(g0, 3, padding="same")(shallow)
    block_outputs = []
    for _ in range(blocks):
        features = [f]
        for _ in range(convs):
            joined = features[0] if len(features) == 1 else layers.Concatenate()(features)
            features.append(layers.Conv2D(growth, 3, padding="same", activation="relu")(joined))
        fused = layers.Conv2D(g0, 1)(layers.Concatenate()(features))
        f = layers.Add()([f, fused])
        block_outputs.append(f)
    x = layers.Conv2D(g0, 1)(layers.Concatenate()(block_outputs))
    x = layers.Conv2D(g0, 3, padding="same")(x)
    x = layers.Add()([shallow, x])
    x = layers.Conv2DTranspose(g0, 3, strides=2, padding="same")(x)
    x = layers.Conv2D(3, 3, padding="same", activation="sigmoid")(x)
    hr = layers.Rescaling(255.0)(x)
    return keras.Model(lr, hr)


def wgan_gp_generator() -> keras.Model:
    """keras-io's WGAN-GP generator: 4×4 → three (UpSampling2D, Conv, BN, activation) → 32×32 → crop to 28."""

    def upsample_block(x: Any, filters: int, activation: layers.Layer) -> Any:
        x = layers.UpSampling2D((2, 2))(x)
        x = layers.Conv2D(filters, (3, 3), padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        return activation(x)

    noise = layers.Input((LATENT,))
    x = layers.Dense(4 * 4 * 16, use_bias=False)(noise)
    x = layers.BatchNormalization()(x)
    x = layers.LeakyReLU(0.2)(x)
    x = layers.Reshape((4, 4, 16))(x)
    x = upsample_block(x, 8, layers.LeakyReLU(0.2))
    x = upsample_block(x, 4, layers.LeakyReLU(0.2))
    x = upsample_block(x, 1, layers.Activation("tanh"))
    x = layers.Cropping2D((2, 2))(x)
    return keras.Model(noise, x, name="generator")


def acgan_onehot_generator() -> keras.Model:
    """Two inputs, noise (N, 16) and a one-hot label (N, 10), concatenated inside; 16×16×3 tanh."""
    noise = keras.Input((LATENT,), name="noise")
    label = keras.Input((CLASSES,), name="label")
    x = layers.Concatenate()([noise, label])
    x = layers.Dense(4 * 4 * 16, use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.Reshape((4, 4, 16))(x)
    x = layers.Conv2DTranspose(8, 4, strides=2, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    img = layers.Conv2DTranspose(3, 4, strides=2, padding="same", activation="tanh")(x)
    return keras.Model([noise, label], img)


def keras_io_conditional_generator() -> keras.Model:
    """keras-io's conditional GAN: one input of latent + one-hot values (16 + 10), 28×28×1 sigmoid."""
    generator_in_channels = LATENT + CLASSES
    return keras.Sequential(
        [
            layers.InputLayer((generator_in_channels,)),
            layers.Dense(7 * 7 * generator_in_channels),
            layers.LeakyReLU(negative_slope=0.2),
            layers.Reshape((7, 7, generator_in_channels)),
            layers.Conv2DTranspose(8, (4, 4), strides=(2, 2), padding="same"),
            layers.LeakyReLU(negative_slope=0.2),
            layers.Conv2DTranspose(8, (4, 4), strides=(2, 2), padding="same"),
            layers.LeakyReLU(negative_slope=0.2),
            layers.Conv2D(1, (7, 7), padding="same", activation="sigmoid"),
        ],
        name="generator",
    )
