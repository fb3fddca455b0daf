"""Source model vs ONNX model on the same inputs: parity figures, the preview image, fp16 PSNR."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image

from export.source import SourceModel
from service.card import ParityCase, ValueRange
from service.pixels import to_uint8

SEED = 20261122
GENERATOR_BATCHES = (1, 7)
#: (batch, height, width): odd and non-square sizes catch padding and pixel-shuffle mistakes.
UPSCALER_SIZES = ((1, 16, 16), (1, 17, 23), (7, 12, 9))
PSNR_CAP_DB = 200.0  # identical outputs: PSNR is infinite, which JSON cannot hold


class OnnxRunner:
    """An onnxruntime CPU session over an in-memory model."""

    def __init__(self, model: onnx.ModelProto) -> None:
        options = ort.SessionOptions()
        options.log_severity_level = 4  # failures surface as exceptions, with a message of our own
        self.session = ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run(None, {self.input_name: x.astype(np.float32)})[0])


def probe_inputs(source: SourceModel, input_range: tuple[float, float] | None = None) -> list[np.ndarray]:
    """Deterministic inputs: N(0,1) latents for generators, uniform images in range for upscalers."""
    rng = np.random.default_rng(SEED)
    if source.is_generator:
        latent = int(source.latent_size or 0)
        batches = [rng.standard_normal((b, latent)).astype(np.float32) for b in GENERATOR_BATCHES]
        if source.condition is None:
            return batches
        # Conditional: every class appears across the probes (a batch of 7 cycles through them).
        classes = source.condition.classes
        labels = [np.arange(b) % classes if b > 1 else np.array([classes - 1]) for b in GENERATOR_BATCHES]
        return [
            np.concatenate([z, np.eye(classes, dtype=np.float32)[y]], axis=1)
            for z, y in zip(batches, labels, strict=True)
        ]
    low, high = input_range if input_range is not None else (0.0, 1.0)
    channels = int(source.input_shape[3] or 3)
    return [rng.uniform(low, high, (b, h, w, channels)).astype(np.float32) for b, h, w in UPSCALER_SIZES]


@dataclass
class Comparison:
    """Reference and candidate outputs on each probe input."""

    inputs: list[np.ndarray]
    expected: list[np.ndarray]
    actual: list[np.ndarray]

    def cases(self) -> list[ParityCase]:
        return [
            ParityCase(
                input_shape=list(x.shape),
                max_abs_error=float(np.max(np.abs(e - a))),
                mean_abs_error=float(np.mean(np.abs(e - a))),
            )
            for x, e, a in zip(self.inputs, self.expected, self.actual, strict=True)
        ]

    def max_abs_error(self) -> float:
        return max(c.max_abs_error for c in self.cases())

    def psnr_db(self, peak: float) -> float:
        """Worst PSNR of `actual` against `expected` over the cases, `peak` being the value range width."""
        worst = PSNR_CAP_DB
        for e, a in zip(self.expected, self.actual, strict=True):
            mse = float(np.mean((e.astype(np.float64) - a.astype(np.float64)) ** 2))
            if mse > 0:
                worst = min(worst, 10 * math.log10(peak * peak / mse))
        return worst


def compare_source(source: SourceModel, runner: OnnxRunner, inputs: list[np.ndarray]) -> Comparison:
    return Comparison(inputs, [source.predict(x) for x in inputs], [runner(x) for x in inputs])


def compare_graphs(before: onnx.ModelProto, after: onnx.ModelProto, inputs: list[np.ndarray]) -> float:
    """Max abs difference between two graphs over the probe inputs."""
    a, b = OnnxRunner(before), OnnxRunner(after)
    return max(float(np.max(np.abs(a(x) - b(x)))) for x in inputs)


def _tile(image: np.ndarray, min_side: int) -> Image.Image:
    array = image[..., 0] if image.shape[-1] == 1 else image
    tile = Image.fromarray(array).convert("RGB")
    factor = max(1, math.ceil(min_side / min(tile.size)))
    return tile.resize((tile.width * factor, tile.height * factor), Image.Resampling.NEAREST)


def write_preview(
    path: Path,
    rows: list[list[np.ndarray]],
    value_range: tuple[float, float],
    *,
    min_side: int = 64,
    gap: int = 4,
) -> None:
    """Write a grid PNG, one row per list of HWC images (source row above ONNX row).

    Pixels are mapped exactly as the service maps what it serves (`service.pixels.to_uint8`).
    """
    pixel_range = ValueRange(low=value_range[0], high=value_range[1])
    tiles = [[_tile(to_uint8(img, pixel_range), min_side) for img in row] for row in rows]
    width = max(sum(t.width for t in row) + gap * (len(row) + 1) for row in tiles)
    heights = [max(t.height for t in row) for row in tiles]
    canvas = Image.new("RGB", (width, sum(heights) + gap * (len(rows) + 1)), (40, 40, 40))
    y = gap
    for row, height in zip(tiles, heights, strict=True):
        x = gap
        for tile in row:
            canvas.paste(tile, (x, y))
            x += tile.width + gap
        y += height + gap
    canvas.save(path, format="PNG")
