"""A user's own generator builder, as `--architecture tests.export.user_builder:build_generator` finds it."""

from __future__ import annotations

import keras
from keras import layers


def build_generator(latent_size: int = 16, width: int = 8) -> keras.Model:
    """A small DCGAN-style generator for 12×12 RGB images with a sigmoid output in [0, 1]."""
    z = keras.Input((latent_size,))
    x = layers.Dense(3 * 3 * width)(z)
    x = layers.Reshape((3, 3, width))(x)
    x = layers.Conv2DTranspose(width, 3, strides=2, padding="same")(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    out = layers.Conv2DTranspose(3, 3, strides=2, padding="same", activation="sigmoid")(x)
    return keras.Model(z, out)
