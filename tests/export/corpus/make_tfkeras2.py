"""Write the corpus's genuine tf.keras 2 files (run by hand, once; the outputs are committed).

Each model is written the way public tf.keras 2 GAN code writes it and saved the way its authors
save it (see cases.py for the table). Keras 3 cannot imitate these files, so they come from a
throwaway virtual environment with genuine tf.keras 2 (`tf-keras` needs the full `tensorflow`
package, which must not sit beside the project's `tensorflow-cpu`)::

    python3.11 -m venv /tmp/tfk
    /tmp/tfk/bin/pip install "tensorflow==2.21.*" "tf-keras==2.21.*"
    TF_USE_LEGACY_KERAS=1 /tmp/tfk/bin/python tests/export/corpus/make_tfkeras2.py

Widths are 4-16 so every file stays small. Initial kernels come from each layer's own initializer
(fixed seed) times a random factor; biases, BatchNorm statistics (moving variance positive), PReLU
slopes and embeddings are random, so parity checks are not trivially zero. `reference_tfkeras2.npz`
holds, per case, the fixed inputs (`<case>.latents`, `<case>.labels` for conditional generators,
`<case>.pixels` and `<case>.input` for upscalers) and `<case>.output`, computed by tf.keras 2 itself:
the corpus test checks the served ONNX against what the author's own framework computed.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np
import tensorflow as tf
import tf_keras as keras  # genuine tf.keras 2.x
from tf_keras import layers

FILES = Path(__file__).parent / "files"
LATENT = 16
CLASSES = 10
#: Labels fed to the conditional generators, one per latent vector.
LABELS = np.array([3, 0, 9], dtype=np.int32)


def randomize(model: keras.Model, seed: int) -> keras.Model:
    """Seeded random weights that keep activations in a useful range (see the module docstring)."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        name, shape = weight.name, tuple(weight.shape)
        if "moving_variance" in name:
            value = rng.uniform(0.5, 1.5, shape)
        elif "gamma" in name:
            value = rng.uniform(0.8, 1.2, shape)
        elif "moving_mean" in name or "beta" in name or "bias" in name:
            value = rng.normal(0.0, 0.1, shape)
        elif "alpha" in name:  # PReLU slopes
            value = rng.uniform(0.05, 0.3, shape)
        elif "embeddings" in name:
            value = rng.normal(0.0, 1.0, shape)
        else:
            value = weight.numpy() * rng.uniform(0.8, 1.2)
        weight.assign(np.asarray(value, dtype=np.float32))
    return model


def keras_gan_dcgan() -> keras.Model:
    """Keras-GAN's DCGAN generator: a Sequential built with `add`, wrapped as Model(noise, seq(noise))."""
    model = keras.Sequential()
    model.add(layers.Dense(16 * 7 * 7, activation="relu", input_dim=LATENT))
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
    noise = keras.Input(shape=(LATENT,))
    img = model(noise)
    return keras.Model(noise, img)


def espcn_x3() -> keras.Model:
    """keras-io's ESPCN: Y channel in [0, 1], pixel shuffle as tf.nn.depth_to_space on a Keras tensor."""
    upscale_factor, channels = 3, 1
    conv_args = {"activation": "relu", "kernel_initializer": "Orthogonal", "padding": "same"}
    inputs = keras.Input(shape=(None, None, channels))
    x = layers.Conv2D(8, 5, **conv_args)(inputs)
    x = layers.Conv2D(8, 3, **conv_args)(x)
    x = layers.Conv2D(4, 3, **conv_args)(x)
    x = layers.Conv2D(channels * (upscale_factor**2), 3, kernel_initializer="Orthogonal", padding="same")(x)
    outputs = tf.nn.depth_to_space(x, upscale_factor)
    return keras.Model(inputs, outputs)


def edsr_x2() -> keras.Model:
    """keras-io's EDSR: Rescaling in and out of [0, 255], residual blocks without BatchNorm."""
    filters = 8

    def res_block(inputs: tf.Tensor) -> tf.Tensor:
        x = layers.Conv2D(filters, 3, padding="same", activation="relu")(inputs)
        x = layers.Conv2D(filters, 3, padding="same")(x)
        return layers.Add()([inputs, x])

    input_layer = layers.Input(shape=(None, None, 3))
    x = layers.Rescaling(scale=1.0 / 255)(input_layer)
    x = x_new = layers.Conv2D(filters, 3, padding="same")(x)
    for _ in range(2):
        x_new = res_block(x_new)
    x_new = layers.Conv2D(filters, 3, padding="same")(x_new)
    x = layers.Add()([x, x_new])
    x = layers.Conv2D(filters * 4, 3, padding="same")(x)
    x = tf.nn.depth_to_space(x, block_size=2)
    x = layers.Conv2D(3, 3, padding="same")(x)
    x = layers.Rescaling(scale=255)(x)
    output_layer = tf.clip_by_value(x, 0, 255)
    return keras.Model(input_layer, output_layer)


def srgan_x2_tfops() -> keras.Model:
    """An SRGAN ×2 that normalises with arithmetic on Keras tensors ([0, 255] in and out)."""
    filters = 8
    lr = keras.Input(shape=(None, None, 3))
    x = lr / 127.5 - 1.0
    x = layers.Conv2D(filters, 9, padding="same")(x)
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
    x = layers.Conv2D(filters * 4, 3, padding="same")(x)
    x = tf.nn.depth_to_space(x, 2)
    x = layers.PReLU(shared_axes=[1, 2])(x)
    sr = layers.Conv2D(3, 9, padding="same", activation="tanh")(x)
    sr = (sr + 1.0) * 127.5
    return keras.Model(lr, sr)


def cgan_embedding() -> keras.Model:
    """Keras-GAN's cgan generator: noise × Flatten(Embedding(label)) into a nested Sequential MLP."""
    img_shape = (8, 8, 1)
    model = keras.Sequential()
    model.add(layers.Dense(16, input_dim=LATENT))
    model.add(layers.LeakyReLU(alpha=0.2))
    model.add(layers.BatchNormalization(momentum=0.8))
    model.add(layers.Dense(32))
    model.add(layers.LeakyReLU(alpha=0.2))
    model.add(layers.BatchNormalization(momentum=0.8))
    model.add(layers.Dense(int(np.prod(img_shape)), activation="tanh"))
    model.add(layers.Reshape(img_shape))
    noise = keras.Input(shape=(LATENT,))
    label = keras.Input(shape=(1,), dtype="int32")
    label_embedding = layers.Flatten()(layers.Embedding(CLASSES, LATENT)(label))
    model_input = layers.multiply([noise, label_embedding])
    img = model(model_input)
    return keras.Model([noise, label], img)


def mlp_model1() -> keras.Model:
    """ "Model 1": LeakyReLU layer objects as `activation=`, BatchNorm(momentum=0.7), flat tanh output."""
    model = keras.Sequential()
    model.add(layers.Dense(16, input_shape=(LATENT,), activation=layers.LeakyReLU(alpha=0.2)))
    model.add(layers.BatchNormalization(momentum=0.7))
    model.add(layers.Dense(32, activation=layers.LeakyReLU(alpha=0.2)))
    model.add(layers.BatchNormalization(momentum=0.7))
    model.add(layers.Dense(8 * 8 * 3, activation="tanh"))
    return model


def tf_tutorial_generator() -> keras.Model:
    """The TensorFlow DCGAN tutorial's `make_generator_model`, 28×28×1, widths scaled down."""
    model = keras.Sequential()
    model.add(layers.Dense(7 * 7 * 16, use_bias=False, input_shape=(LATENT,)))
    model.add(layers.BatchNormalization())
    model.add(layers.LeakyReLU())
    model.add(layers.Reshape((7, 7, 16)))
    model.add(layers.Conv2DTranspose(8, (5, 5), strides=(1, 1), padding="same", use_bias=False))
    model.add(layers.BatchNormalization())
    model.add(layers.LeakyReLU())
    model.add(layers.Conv2DTranspose(4, (5, 5), strides=(2, 2), padding="same", use_bias=False))
    model.add(layers.BatchNormalization())
    model.add(layers.LeakyReLU())
    model.add(
        layers.Conv2DTranspose(1, (5, 5), strides=(2, 2), padding="same", use_bias=False, activation="tanh")
    )
    return model


def tf_tutorial_discriminator() -> keras.Model:
    """The tutorial's `make_discriminator_model`, scaled down."""
    model = keras.Sequential()
    model.add(layers.Conv2D(4, (5, 5), strides=(2, 2), padding="same", input_shape=[28, 28, 1]))
    model.add(layers.LeakyReLU())
    model.add(layers.Dropout(0.3))
    model.add(layers.Conv2D(8, (5, 5), strides=(2, 2), padding="same"))
    model.add(layers.LeakyReLU())
    model.add(layers.Dropout(0.3))
    model.add(layers.Flatten())
    model.add(layers.Dense(1))
    return model


def faces64_dcgan() -> keras.Model:
    """Radford et al.'s face DCGAN: project to 4×4, four stride-2 transposed convolutions, BN, ReLU, tanh."""
    ngf = 2
    z = keras.Input((LATENT,))
    x = layers.Dense(4 * 4 * ngf * 8, use_bias=False)(z)
    x = layers.Reshape((4, 4, ngf * 8))(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    for mult in (4, 2, 1):
        x = layers.Conv2DTranspose(ngf * mult, 4, strides=2, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
    out = layers.Conv2DTranspose(3, 4, strides=2, padding="same", activation="tanh")(x)
    return keras.Model(z, out)


def build(function: Callable[[], keras.Model], seed: int, *, fresh: bool = True) -> keras.Model:
    """`function`'s model with seeded weights; `fresh` restarts layer naming, as a new notebook does."""
    if fresh:
        keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    return randomize(function(), seed)


def save_tf_tutorial_checkpoint(directory: Path, seed: int, latents: np.ndarray) -> np.ndarray:
    """The tutorial's training setup, one train step, then only `checkpoint.save(prefix)`."""
    generator = build(tf_tutorial_generator, seed)
    discriminator = build(tf_tutorial_discriminator, seed + 1, fresh=False)
    cross_entropy = keras.losses.BinaryCrossentropy(from_logits=True)
    generator_optimizer = keras.optimizers.Adam(1e-4)
    discriminator_optimizer = keras.optimizers.Adam(1e-4)
    checkpoint = tf.train.Checkpoint(
        generator_optimizer=generator_optimizer,
        discriminator_optimizer=discriminator_optimizer,
        generator=generator,
        discriminator=discriminator,
    )
    rng = np.random.default_rng(seed)
    images = rng.uniform(-1, 1, (4, 28, 28, 1)).astype(np.float32)
    noise = rng.standard_normal((4, LATENT)).astype(np.float32)
    with tf.GradientTape() as gen_tape, tf.GradientTape() as disc_tape:
        generated_images = generator(noise, training=True)
        real_output = discriminator(images, training=True)
        fake_output = discriminator(generated_images, training=True)
        gen_loss = cross_entropy(tf.ones_like(fake_output), fake_output)
        disc_loss = cross_entropy(tf.ones_like(real_output), real_output) + cross_entropy(
            tf.zeros_like(fake_output), fake_output
        )
    gen_grads = gen_tape.gradient(gen_loss, generator.trainable_variables)
    disc_grads = disc_tape.gradient(disc_loss, discriminator.trainable_variables)
    generator_optimizer.apply_gradients(zip(gen_grads, generator.trainable_variables, strict=True))
    discriminator_optimizer.apply_gradients(zip(disc_grads, discriminator.trainable_variables, strict=True))

    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    checkpoint.save(file_prefix=str(directory / "ckpt"))
    return np.asarray(generator(latents, training=False))


def upscaler_input(pixels: np.ndarray, low: float, high: float) -> np.ndarray:
    """8-bit pixels mapped to [low, high] exactly as the service maps them (service.pixels.from_uint8)."""
    return pixels.astype(np.float32) * np.float32((high - low) / 255.0) + np.float32(low)


def main() -> None:
    FILES.mkdir(exist_ok=True)
    rng = np.random.default_rng(2026)
    latents = rng.standard_normal((3, LATENT)).astype(np.float32)
    references: dict[str, Any] = {}

    def generator_case(case: str, model: keras.Model, x: object) -> None:
        references[f"{case}.latents"] = latents
        references[f"{case}.output"] = model(x, training=False).numpy()

    def upscaler_case(case: str, model: keras.Model, channels: int, low: float, high: float) -> None:
        pixels = rng.integers(0, 256, (1, 9, 11, channels), dtype=np.uint8)
        x = upscaler_input(pixels, low, high)
        references[f"{case}.pixels"] = pixels
        references[f"{case}.input"] = x
        references[f"{case}.output"] = model(x, training=False).numpy()

    model = build(keras_gan_dcgan, 1)
    model.save_weights(FILES / "keras_gan_dcgan.hdf5")  # Keras-GAN: "saved_model/%s_weights.hdf5"
    generator_case("keras_gan_dcgan", model, latents)

    model = build(espcn_x3, 3)
    model.layers[-2].bias.assign(model.layers[-2].bias + 0.5)  # output around mid-grey, like a trained one
    model.save(FILES / "espcn_x3.h5")
    upscaler_case("espcn_x3", model, 1, 0.0, 1.0)

    model = build(edsr_x2, 4)
    last = model.layers[-3]
    last.kernel.assign(last.kernel * 0.4)
    last.bias.assign(last.bias + 0.5)
    model.save(FILES / "edsr_x2.h5")
    upscaler_case("edsr_x2", model, 3, 0.0, 255.0)

    model = build(srgan_x2_tfops, 6)
    model.save(FILES / "srgan_x2_tfops.h5")
    upscaler_case("srgan_x2_tfops", model, 3, 0.0, 255.0)

    model = build(cgan_embedding, 9)
    model.save(FILES / "cgan_embedding.h5")
    generator_case("cgan_embedding", model, [latents, LABELS[:, None]])
    references["cgan_embedding.labels"] = LABELS

    model = build(mlp_model1, 12)
    saved = FILES / "mlp_model1_savedmodel"
    shutil.rmtree(saved, ignore_errors=True)
    tf.saved_model.save(model, str(saved))
    generator_case("mlp_model1", model, latents)

    references["tf_tutorial.latents"] = latents
    references["tf_tutorial.output"] = save_tf_tutorial_checkpoint(FILES / "tf_tutorial_ckpt", 13, latents)

    model = build(faces64_dcgan, 14)
    model.layers[-1].kernel.assign(model.layers[-1].kernel * 6.0)  # else the images are all mid-grey
    model.save(FILES / "faces64_dcgan.h5")
    generator_case("faces64_dcgan", model, latents)

    np.savez(FILES.parent / "reference_tfkeras2.npz", **references)
    for key, value in references.items():
        if key.endswith(".output"):
            print(f"{key:28s} {value.shape!s:18s} min {value.min():9.3f} max {value.max():9.3f}")
    for path in sorted(FILES.rglob("*")):
        if path.is_file():
            print(f"{path.stat().st_size:>9,d}  {path.relative_to(FILES)}")


if __name__ == "__main__":
    main()
