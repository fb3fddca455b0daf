"""Train the `cgan-digits` conditional generator on scikit-learn's 8×8 handwritten digits.

    python -m zoo.training.train_cgan_digits --out zoo/weights --grid docs/img/digits-cgan-grid.png

The data is `sklearn.datasets.load_digits()` (1,797 images, 10 classes, ink 0..16 scaled to
[-1, 1]), bundled with scikit-learn: nothing is downloaded. The discriminator sees the label too,
through a projection (Miyato & Koyama 2018): its score is `dense(h) + <embed(label), h>` over the
image features `h`. Non-saturating GAN loss, Adam, fixed seeds (runs repeat bit for bit on CPU).

Whether the label controls the image is measured, not eyeballed: a logistic-regression classifier
fitted on real digits classifies generated samples (a fixed number per label, from a fixed seed),
and the report gives the fraction classified as the label they were generated for, per class.
`<out>/cgan_digits.weights.h5` holds the final weights (Keras 3 `save_weights`),
`<out>/cgan_digits.json` the configuration, losses over time and these figures, and
`<out>/train_cgan_digits.log` the log. `--no-train` only redraws `--grid` from existing weights.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

WEIGHTS_FILENAME = "cgan_digits.weights.h5"
REPORT_FILENAME = "cgan_digits.json"
LOG_FILENAME = "train_cgan_digits.log"
ARCHITECTURE = "cgan-digits"
CLASSES = 10
SIDE = 8
log = logging.getLogger("train_cgan_digits")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the trained weights (recorded next to them)."""

    latent_size: int = 32
    steps: int = 10_000
    minutes: float = 30.0  # upper bound; `steps` usually ends training first
    batch: int = 64
    learning_rate: float = 2e-4
    beta_1: float = 0.5
    disc_filters: int = 32
    seed: int = 1234
    log_every: int = 250
    eval_per_class: int = 100
    eval_seed: int = 7


@dataclass(frozen=True)
class Digits:
    """The digits as float32 (N, 8, 8, 1) in [-1, 1], int labels, and a fixed classifier split."""

    images: np.ndarray
    labels: np.ndarray
    train: np.ndarray  # indices the classifier is fitted on
    test: np.ndarray  # indices it is scored on


def load_digits(split_seed: int = 0) -> Digits:
    """scikit-learn's bundled 8×8 digits scaled to the tanh range, with a stratified 75/25 split."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    data = sklearn_digits()
    images = (data.images.astype(np.float32) / 8.0 - 1.0)[..., None]
    labels = data.target.astype(np.int32)
    train, test = train_test_split(
        np.arange(len(labels)), test_size=0.25, stratify=labels, random_state=split_seed
    )
    return Digits(images, labels, np.sort(train), np.sort(test))


def fit_classifier(digits: Digits) -> tuple[Any, float]:
    """Logistic regression on the real training split's pixels; returns it and its held-out accuracy."""
    from sklearn.linear_model import LogisticRegression

    flat = digits.images.reshape(len(digits.images), -1)
    classifier = LogisticRegression(max_iter=2000)
    classifier.fit(flat[digits.train], digits.labels[digits.train])
    accuracy = float(classifier.score(flat[digits.test], digits.labels[digits.test]))
    return classifier, accuracy


def sample(model: Any, labels: np.ndarray, seed: int) -> np.ndarray:
    """Images for these labels from N(0, 1) latents drawn with `seed`, in inference mode."""
    latent_size = int(model.inputs[0].shape[1])
    z = np.random.default_rng(seed).standard_normal((len(labels), latent_size)).astype(np.float32)
    return np.asarray(model([z, labels.astype(np.int32)[:, None]], training=False))


def label_accuracy(model: Any, classifier: Any, per_class: int, seed: int) -> dict[str, Any]:
    """How often generated samples are classified as the label they were generated for, per class."""
    labels = np.repeat(np.arange(CLASSES), per_class)
    images = sample(model, labels, seed)
    predicted = classifier.predict(images.reshape(len(images), -1))
    hits = predicted == labels
    return {
        "overall": round(float(hits.mean()), 4),
        "per_class": {str(c): round(float(hits[labels == c].mean()), 4) for c in range(CLASSES)},
    }


def diversity(model: Any, digits: Digits, per_class: int, seed: int) -> dict[str, float]:
    """Mean per-pixel standard deviation within each class: generated vs real (mode collapse → 0)."""
    labels = np.repeat(np.arange(CLASSES), per_class)
    images = sample(model, labels, seed)
    generated = np.mean([images[labels == c].std(axis=0).mean() for c in range(CLASSES)])
    real = np.mean([digits.images[digits.labels == c].std(axis=0).mean() for c in range(CLASSES)])
    return {"generated": round(float(generated), 4), "real": round(float(real), 4)}


def discriminator(filters: int = 32, classes: int = CLASSES) -> Any:
    """Two strided convolutions and a projection of the label onto the image features."""
    import keras
    from keras import layers

    image = keras.Input((SIDE, SIDE, 1), name="image")
    label = keras.Input((1,), dtype="int32", name="label")
    x = layers.Conv2D(filters, 3, strides=2, padding="same")(image)
    x = layers.LeakyReLU(negative_slope=0.2)(x)
    x = layers.Conv2D(filters * 2, 3, strides=2, padding="same")(x)
    x = layers.LeakyReLU(negative_slope=0.2)(x)
    h = layers.Flatten()(x)
    unconditional = layers.Dense(1)(h)
    embedded = layers.Flatten()(layers.Embedding(classes, h.shape[-1])(label))
    projection = layers.Dot(axes=1)([embedded, h])
    return keras.Model([image, label], layers.Add()([unconditional, projection]), name="discriminator")


def train(config: TrainConfig, out: Path, *, progress: bool = True) -> dict[str, Any]:
    """Train, save the final weights, write the report; returns the report."""
    import keras
    import tensorflow as tf

    from export.architectures import build

    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(config.seed)
    log.info("config %s", json.dumps(asdict(config)))
    digits = load_digits()
    classifier, classifier_accuracy = fit_classifier(digits)
    log.info(
        "%d digits; classifier held-out accuracy on real digits %.4f", len(digits.labels), classifier_accuracy
    )

    generator = build(ARCHITECTURE, latent_size=config.latent_size, classes=CLASSES)
    critic = discriminator(config.disc_filters)
    g_opt = keras.optimizers.Adam(learning_rate=config.learning_rate, beta_1=config.beta_1)
    d_opt = keras.optimizers.Adam(learning_rate=config.learning_rate, beta_1=config.beta_1)
    bce = keras.losses.BinaryCrossentropy(from_logits=True)

    @tf.function  # type: ignore[untyped-decorator]
    def step(
        real: tf.Tensor, real_labels: tf.Tensor, z: tf.Tensor, fake_labels: tf.Tensor
    ) -> tuple[Any, Any]:
        with tf.GradientTape() as tape:
            fake = generator([z, fake_labels], training=True)
            real_logits = critic([real, real_labels], training=True)
            fake_logits = critic([fake, fake_labels], training=True)
            d_loss = bce(tf.ones_like(real_logits), real_logits) + bce(
                tf.zeros_like(fake_logits), fake_logits
            )
        grads = tape.gradient(d_loss, critic.trainable_variables)
        d_opt.apply_gradients(zip(grads, critic.trainable_variables, strict=True))
        with tf.GradientTape() as tape:
            fake_logits = critic([generator([z, fake_labels], training=True), fake_labels], training=True)
            g_loss = bce(tf.ones_like(fake_logits), fake_logits)
        grads = tape.gradient(g_loss, generator.trainable_variables)
        g_opt.apply_gradients(zip(grads, generator.trainable_variables, strict=True))
        return d_loss, g_loss

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    rng = np.random.default_rng(config.seed)
    budget_s = config.minutes * 60.0
    history: list[dict[str, Any]] = []
    d_losses: list[float] = []
    g_losses: list[float] = []
    start = time.monotonic()
    done = 0
    columns = (
        TextColumn(ARCHITECTURE),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("train", total=config.steps, status="")
        while done < config.steps and time.monotonic() - start < budget_s:
            index = rng.integers(0, len(digits.labels), config.batch)
            z = rng.standard_normal((config.batch, config.latent_size)).astype(np.float32)
            fake_labels = rng.integers(0, CLASSES, (config.batch, 1)).astype(np.int32)
            d_loss, g_loss = step(digits.images[index], digits.labels[index, None], z, fake_labels)
            d_losses.append(float(d_loss))
            g_losses.append(float(g_loss))
            done += 1
            if done % config.log_every == 0 or done == config.steps:
                accuracy = label_accuracy(generator, classifier, config.eval_per_class, config.eval_seed)
                point = {
                    "step": done,
                    "seconds": round(time.monotonic() - start, 1),
                    "d_loss": round(float(np.mean(d_losses[-config.log_every :])), 4),
                    "g_loss": round(float(np.mean(g_losses[-config.log_every :])), 4),
                    "label_accuracy": accuracy["overall"],
                }
                history.append(point)
                log.info(
                    "step %d  %.0fs  d_loss %.4f  g_loss %.4f  label accuracy %.3f",
                    *(point[k] for k in ("step", "seconds", "d_loss", "g_loss", "label_accuracy")),
                )
            bar.update(task, completed=done, status=f"d {d_losses[-1]:.3f} g {g_losses[-1]:.3f}")
    train_s = time.monotonic() - start

    weights_path = out / WEIGHTS_FILENAME
    generator.save_weights(weights_path)
    report: dict[str, Any] = {
        "architecture": ARCHITECTURE,
        "architecture_options": {"latent_size": config.latent_size, "classes": CLASSES},
        "generator_parameters": int(generator.count_params()),
        "discriminator_parameters": int(critic.count_params()),
        "config": asdict(config),
        "loss": "non-saturating GAN loss (binary cross-entropy on logits); projection discriminator",
        "data": {
            "source": "sklearn.datasets.load_digits (UCI optical recognition of handwritten digits)",
            "images": len(digits.labels),
            "classes": CLASSES,
            "scaling": "ink 0..16 → x / 8 - 1, in [-1, 1]",
        },
        "steps": done,
        "train_seconds": round(train_s, 1),
        "machine": f"{platform.machine()}, {_cpu_count()} CPU cores, {platform.platform()}",
        "history": history,
        "evaluation": {
            "classifier": "sklearn LogisticRegression(max_iter=2000) on the pixels of a stratified 75% "
            "of the real digits (train_test_split random_state=0)",
            "classifier_accuracy_on_real_held_out": round(classifier_accuracy, 4),
            "samples_per_class": config.eval_per_class,
            "latent_seed": config.eval_seed,
            "label_accuracy": label_accuracy(generator, classifier, config.eval_per_class, config.eval_seed),
            "pixel_std_within_class": diversity(generator, digits, config.eval_per_class, config.eval_seed),
        },
    }
    (out / REPORT_FILENAME).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    log.info(
        "%d steps in %.0fs; label accuracy %s",
        done,
        train_s,
        json.dumps(report["evaluation"]["label_accuracy"]),
    )
    return report


def load_generator(weights: Path, latent_size: int) -> Any:
    """The `cgan-digits` architecture with trained weights loaded."""
    from export.architectures import build

    model = build(ARCHITECTURE, latent_size=latent_size, classes=CLASSES)
    model.load_weights(weights)
    return model


def write_grid(
    model: Any, path: Path, per_class: int = 10, seed: int = 1, zoom: int = 6, gap: int = 2
) -> Path:
    """One row per digit (label at the left), `per_class` samples each, drawn ×`zoom` with nearest."""
    from PIL import Image, ImageDraw

    labels = np.repeat(np.arange(CLASSES), per_class)
    images = np.clip(np.rint((sample(model, labels, seed)[..., 0] + 1.0) * 127.5), 0, 255).astype(np.uint8)
    side = SIDE * zoom
    label_w = 14
    grid = Image.new("L", (label_w + per_class * (side + gap) + gap, CLASSES * (side + gap) + gap), 160)
    draw = ImageDraw.Draw(grid)
    for i, image in enumerate(images):
        row, col = divmod(i, per_class)
        tile = Image.fromarray(image).resize((side, side), Image.Resampling.NEAREST)
        grid.paste(tile, (label_w + gap + col * (side + gap), gap + row * (side + gap)))
        if col == 0:
            draw.text((3, gap + row * (side + gap) + side // 2 - 5), str(row), fill=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path, optimize=True)
    return path


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def main(argv: list[str] | None = None) -> None:
    """Command line: step budget, latent size, batch and optimiser flags; see --help."""
    d = TrainConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("zoo/weights"), help="weights, report and log go here")
    p.add_argument("--steps", type=int, default=d.steps, help="step budget")
    p.add_argument("--minutes", type=float, default=d.minutes, help="wall-clock upper bound")
    p.add_argument("--latent-size", type=int, default=d.latent_size)
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--learning-rate", type=float, default=d.learning_rate)
    p.add_argument("--disc-filters", type=int, default=d.disc_filters, help="discriminator's first conv")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--log-every", type=int, default=d.log_every, help="log losses and accuracy every N steps")
    p.add_argument("--eval-per-class", type=int, default=d.eval_per_class, help="samples per label scored")
    p.add_argument("--grid", type=Path, help="also draw a 10×10 sample grid (one row per digit) here")
    p.add_argument("--no-train", action="store_true", help="only draw --grid from the weights in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    args = p.parse_args(argv)
    if args.no_train:
        if not args.grid:
            p.error("--no-train needs --grid")
        report = json.loads((args.out / REPORT_FILENAME).read_text())
        model = load_generator(args.out / WEIGHTS_FILENAME, report["architecture_options"]["latent_size"])
        print(write_grid(model, args.grid))
        return
    config = TrainConfig(
        latent_size=args.latent_size,
        steps=args.steps,
        minutes=args.minutes,
        batch=args.batch,
        learning_rate=args.learning_rate,
        disc_filters=args.disc_filters,
        seed=args.seed,
        log_every=args.log_every,
        eval_per_class=args.eval_per_class,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    handlers: list[logging.Handler] = [
        logging.FileHandler(args.out / LOG_FILENAME, mode="w"),
        logging.StreamHandler(),
    ]
    for handler in handlers:
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        report = train(config, args.out, progress=not args.no_progress)
    finally:
        for handler in handlers:
            log.removeHandler(handler)
            handler.close()
    if args.grid:
        print(write_grid(load_generator(args.out / WEIGHTS_FILENAME, config.latent_size), args.grid))
    accuracy = report["evaluation"]["label_accuracy"]
    print(f"label accuracy {accuracy['overall']:.3f}: {accuracy['per_class']}")


if __name__ == "__main__":
    main()
