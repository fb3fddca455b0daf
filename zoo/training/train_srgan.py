"""Train the `srgan-x4` architecture on scikit-image's sample photographs with a pixel loss.

    python -m zoo.training.train_srgan --minutes 28 --out zoo/weights

Low-resolution inputs are Pillow bicubic ×1/4 downsamplings of the photographs (at three scales,
for more data); patches are randomly flipped and rotated. The loss is L1 (or MSE) on pixels only: no
adversarial or perceptual term, so this is SRResNet-style training of the SRGAN generator. The best
weights by validation PSNR (the `astronaut` photograph, never trained on) are kept as
`<out>/srgan_x4.weights.h5`; `<out>/srgan_x4.json` records the configuration and the final
Y-channel PSNR against bicubic on the held-out test photographs; `<out>/train_srgan.log` is the log.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from zoo import srgan_data
from zoo.srgan_data import SCALE

WEIGHTS_FILENAME = "srgan_x4.weights.h5"
REPORT_FILENAME = "srgan_x4.json"
LOG_FILENAME = "train_srgan.log"
log = logging.getLogger("train_srgan")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the trained weights (recorded next to them)."""

    blocks: int = 5
    filters: int = 32
    patch: int = 24  # low-resolution patch side; the target is patch × 4
    batch: int = 16
    steps: int = 1_000_000  # upper bound; `minutes` usually ends training first
    minutes: float = 28.0
    learning_rate: float = 5e-4
    loss: str = "l1"
    seed: int = 1234
    val_every: int = 250
    init: str = "nearest"  # "nearest" (see `nearest_neighbour_init`) or "random"
    resume: str | None = None  # weights file of an earlier run to continue from
    data_scales: tuple[float, ...] = (1.0, 0.75, 0.5)


@dataclass
class Pair:
    """One high-resolution photograph and its bicubic ×1/4 version."""

    hr: np.ndarray
    lr: np.ndarray


def make_pairs(images: dict[str, Any], scales: tuple[float, ...]) -> list[Pair]:
    """HR/LR pairs of each photograph, also at smaller `scales` (Pillow bicubic first)."""
    pairs = []
    for loader in images.values():
        full = srgan_data.load_rgb(loader)
        for s in scales:
            if s == 1.0:
                hr = full
            else:
                h, w = full.shape[:2]
                size = (int(w * s) // SCALE * SCALE, int(h * s) // SCALE * SCALE)
                hr = np.asarray(Image.fromarray(full).resize(size, Image.Resampling.BICUBIC))
            pairs.append(Pair(hr, srgan_data.downscale(hr)))
    return pairs


class PatchSampler:
    """Random aligned LR/HR patches, with flips and 90° rotations, from a fixed seed."""

    def __init__(self, pairs: list[Pair], patch: int, seed: int) -> None:
        self.pairs = pairs
        self.patch = patch
        self.rng = np.random.default_rng(seed)
        areas = np.array([p.lr.shape[0] * p.lr.shape[1] for p in pairs], dtype=np.float64)
        self.weights = areas / areas.sum()

    def batch(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """LR in [0, 1] and HR in [-1, 1] (the tanh range), float32 NHWC."""
        p, hp = self.patch, self.patch * SCALE
        lrs = np.empty((size, p, p, 3), np.float32)
        hrs = np.empty((size, hp, hp, 3), np.float32)
        for i, k in enumerate(self.rng.choice(len(self.pairs), size=size, p=self.weights)):
            pair = self.pairs[k]
            y = int(self.rng.integers(0, pair.lr.shape[0] - p + 1))
            x = int(self.rng.integers(0, pair.lr.shape[1] - p + 1))
            lr = pair.lr[y : y + p, x : x + p]
            hr = pair.hr[y * SCALE : y * SCALE + hp, x * SCALE : x * SCALE + hp]
            rot, flip = int(self.rng.integers(4)), bool(self.rng.integers(2))
            lr, hr = np.rot90(lr, rot), np.rot90(hr, rot)
            if flip:
                lr, hr = lr[:, ::-1], hr[:, ::-1]
            lrs[i] = lr / 255.0
            hrs[i] = hr / 127.5 - 1.0
        return lrs, hrs


def nearest_neighbour_init(model: Any, channels: int = 3) -> None:
    """Start training from nearest-neighbour ×4 instead of noise (only the initial weights change).

    Channels 0-2 carry the input through the first conv, past the residual blocks (their last
    BatchNorm scale set to 0, so each block starts as the identity, as in Goyal et al. 2017),
    through both pixel-shuffle stages (each sub-pixel copies its source) and out of the last conv
    as tanh(2x - 1). The other channels keep their random initialisation, scaled down where they
    feed the output. On two CPU cores this is what lets a 30-minute run get past bicubic.
    """
    import keras

    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    first, *_, up1, up2, last = convs
    kernel, bias = first.get_weights()
    centre = kernel.shape[0] // 2
    kernel[centre, centre, :, :channels] = 0.0
    kernel[centre, centre, np.arange(channels), np.arange(channels)] = 1.0
    first.set_weights([kernel, np.zeros_like(bias)])
    # The second BatchNorm of every residual block and the one after the blocks.
    for norm in norms[1::2] + norms[-1:]:
        gamma, *rest = norm.get_weights()
        norm.set_weights([np.zeros_like(gamma), *rest])
    for up in (up1, up2):
        kernel, bias = up.get_weights()
        filters = kernel.shape[3] // 4
        for sub in range(4):  # depth_to_space: output channel c of sub-pixel k is input k * filters + c
            kernel[:, :, :, sub * filters : sub * filters + channels] *= 0.1
            kernel[1, 1, np.arange(channels), sub * filters + np.arange(channels)] = 1.0
        up.set_weights([kernel, np.zeros_like(bias)])
    kernel, bias = last.get_weights()
    kernel *= 0.1
    centre = kernel.shape[0] // 2
    kernel[centre, centre, np.arange(channels), np.arange(channels)] = 2.0
    last.set_weights([kernel, np.full_like(bias, -1.0)])


def upscale(model: Any, lr: np.ndarray) -> np.ndarray:
    """Run the Keras model on one uint8 LR image; uint8 ×4 result."""
    out = model(lr[None].astype(np.float32) / 255.0, training=False)
    return srgan_data.to_uint8(np.asarray(out)[0])


def evaluate(model: Any, images: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Y-channel PSNR (border 4 cropped) of the model and of bicubic on each photograph."""
    results = {}
    for name, loader in images.items():
        hr = srgan_data.load_rgb(loader)
        lr = srgan_data.downscale(hr)
        model_db = srgan_data.psnr_y(hr, upscale(model, lr))
        bicubic_db = srgan_data.psnr_y(hr, srgan_data.upscale_bicubic(lr))
        results[name] = {
            "psnr_y_model_db": round(model_db, 3),
            "psnr_y_bicubic_db": round(bicubic_db, 3),
            "gain_db": round(model_db - bicubic_db, 3),
        }
    return results


def train(config: TrainConfig, out: Path, *, progress: bool = True) -> dict[str, Any]:
    """Train, keep the best weights by validation PSNR, write the report; returns the report."""
    import keras
    import tensorflow as tf

    from export.architectures import build

    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(config.seed)
    log.info("config %s", json.dumps(asdict(config)))
    pairs = make_pairs(srgan_data.TRAIN_IMAGES, config.data_scales)
    log.info("training on %s: %d image pairs", ", ".join(srgan_data.TRAIN_IMAGES), len(pairs))
    sampler = PatchSampler(pairs, config.patch, config.seed)

    model = build("srgan-x4", blocks=config.blocks, filters=config.filters)
    if config.resume:
        model.load_weights(config.resume)
        log.info("resuming from %s", config.resume)
    elif config.init == "nearest":
        nearest_neighbour_init(model)
    optimizer = keras.optimizers.Adam(learning_rate=config.learning_rate)
    pixel_loss = tf.abs if config.loss == "l1" else tf.square

    @tf.function(reduce_retracing=True)  # type: ignore[untyped-decorator]
    def step(lr: tf.Tensor, hr: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(pixel_loss(model(lr, training=True) - hr))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    budget_s = config.minutes * 60.0
    weights_path = out / WEIGHTS_FILENAME
    best_db, best_step, losses = -math.inf, 0, []
    start = time.monotonic()
    done = 0
    columns = (
        TextColumn("srgan-x4"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("train", total=1.0, status="")
        while done < config.steps:
            elapsed = time.monotonic() - start
            fraction = max(elapsed / budget_s, done / config.steps)
            if fraction >= 1.0:
                break
            # Cosine decay over whichever budget (time or steps) runs out first.
            optimizer.learning_rate.assign(
                config.learning_rate * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * fraction)))
            )
            losses.append(float(step(*sampler.batch(config.batch))))
            done += 1
            last = done >= config.steps or time.monotonic() - start >= budget_s
            if done % config.val_every == 0 or last:
                val = evaluate(model, srgan_data.VALIDATION_IMAGES)
                val_db = float(np.mean([v["psnr_y_model_db"] for v in val.values()]))
                gain = float(np.mean([v["gain_db"] for v in val.values()]))
                kept = val_db > best_db
                if kept:
                    best_db, best_step = val_db, done
                    model.save_weights(weights_path)
                log.info(
                    "step %d  %.0fs  loss %.4f  val PSNR-Y %.3f dB (bicubic %+.3f)%s",
                    done,
                    time.monotonic() - start,
                    float(np.mean(losses[-config.val_every :])),
                    val_db,
                    gain,
                    "  saved" if kept else "",
                )
            bar.update(task, completed=min(fraction, 1.0), status=f"step {done} loss {losses[-1]:.4f}")
    train_s = time.monotonic() - start

    model.load_weights(weights_path)
    report = {
        "architecture": "srgan-x4",
        "architecture_options": {"blocks": config.blocks, "filters": config.filters, "channels": 3},
        "config": asdict(config),
        "loss": f"{config.loss} pixel loss only (no adversarial or perceptual term)",
        "data": {
            "source": "scikit-image sample photographs (skimage.data)",
            "train": list(srgan_data.TRAIN_IMAGES),
            "validation": list(srgan_data.VALIDATION_IMAGES),
            "test": list(srgan_data.TEST_IMAGES),
            "low_resolution": "Pillow bicubic x1/4 of the photograph cropped to a multiple of 4",
        },
        "steps": done,
        "best_step": best_step,
        "train_seconds": round(train_s, 1),
        "machine": f"{platform.machine()}, {_cpu_count()} CPU cores, {platform.platform()}",
        "metric": "PSNR on the Y channel (ITU-R BT.601), 4 pixels cropped from each border",
        "validation": evaluate(model, srgan_data.VALIDATION_IMAGES),
        "test": evaluate(model, srgan_data.TEST_IMAGES),
    }
    previous = Path(config.resume).with_name(REPORT_FILENAME) if config.resume else None
    if previous and previous.is_file():
        earlier = json.loads(previous.read_text())
        report["resumed_from"] = earlier
        report["steps_total"] = earlier.get("steps_total", earlier["steps"]) + done
        report["train_seconds_total"] = round(
            earlier.get("train_seconds_total", earlier["train_seconds"]) + train_s, 1
        )
    else:
        report["steps_total"], report["train_seconds_total"] = done, round(train_s, 1)
    (out / REPORT_FILENAME).write_text(json.dumps(report, indent=2) + "\n")
    log.info("best step %d of %d in %.0fs; test %s", best_step, done, train_s, json.dumps(report["test"]))
    return report


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def main(argv: list[str] | None = None) -> None:
    """Command line: budget, patch, batch and model size flags; see --help."""
    d = TrainConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("zoo/weights"), help="weights, report and log go here")
    p.add_argument("--minutes", type=float, default=d.minutes, help="wall-clock training budget")
    p.add_argument("--steps", type=int, default=d.steps, help="step budget")
    p.add_argument("--patch", type=int, default=d.patch, help="low-resolution patch side")
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--blocks", type=int, default=d.blocks, help="residual blocks")
    p.add_argument("--filters", type=int, default=d.filters)
    p.add_argument("--learning-rate", type=float, default=d.learning_rate)
    p.add_argument("--loss", choices=("l1", "mse"), default=d.loss)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--val-every", type=int, default=d.val_every, help="validate every N steps")
    p.add_argument("--init", choices=("nearest", "random"), default=d.init, help="initial weights")
    p.add_argument("--resume", help="continue from this .weights.h5 (same --blocks/--filters)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    args = p.parse_args(argv)
    config = TrainConfig(
        blocks=args.blocks,
        filters=args.filters,
        patch=args.patch,
        batch=args.batch,
        steps=args.steps,
        minutes=args.minutes,
        learning_rate=args.learning_rate,
        loss=args.loss,
        seed=args.seed,
        val_every=args.val_every,
        init=args.init,
        resume=args.resume,
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
    for name, r in report["test"].items():
        print(f"{name}: {r['psnr_y_model_db']:.2f} dB vs bicubic {r['psnr_y_bicubic_db']:.2f} dB")


if __name__ == "__main__":
    main()
