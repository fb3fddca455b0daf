"""What every peer server does the same way as the product, so that their PNGs are byte-identical.

Each peer runs in its own virtual environment with only numpy, Pillow and onnxruntime beside its
framework, so this module imports nothing of the product: it reads the model card (model.json) as
plain JSON and repeats the product's conventions, which `bench_peers.py` checks byte for byte at
the start of every run:

- latents: `numpy.random.Generator(numpy.random.PCG64(seed)).standard_normal((n, latent), float32)`;
- pixels: model range mapped to 0..255 in float32, clipped, rounded to nearest (`service.pixels`);
- PNG: Pillow at compress_level 1 (`GAN_SERVE_PNG_COMPRESS_LEVEL`'s default); n > 1 images come as
  an uncompressed zip of `0000.png`, `0001.png`, ... (`service.encode.zip_files`).
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

PNG_COMPRESS_LEVEL = 1
#: Most generator images one session run takes, as the product's CPU default (`max_batch_size`).
MAX_RUN_IMAGES = 64


@dataclass(frozen=True)
class PeerCard:
    """The parts of a model card a peer needs: tensor names, shapes, layout and value ranges."""

    name: str
    kind: str
    path: Path
    input_name: str
    output_name: str
    layout: str
    channels: int
    output_low: float
    output_high: float
    height: int | None = None
    width: int | None = None
    flat_output: bool = False
    latent_size: int | None = None
    scale: int | None = None
    input_low: float = 0.0
    input_high: float = 1.0
    input_channels: int | None = None


def read_card(entry: Path) -> PeerCard:
    """The card in `entry`/model.json; only unconditional normal-latent generators and upscalers."""
    card: dict[str, Any] = json.loads((entry / "model.json").read_text())
    if card.get("condition") or card.get("latent_distribution", "normal") != "normal":
        raise ValueError(f"{entry}: the peers serve unconditional generators with normal latents only")
    output_range = card.get("output_range") or {"low": -1.0, "high": 1.0}
    input_range = card.get("input_range") or {"low": 0.0, "high": 1.0}
    return PeerCard(
        name=card["name"],
        kind=card["kind"],
        path=entry / card.get("file", "model.onnx"),
        input_name=card["input_name"],
        output_name=card["output_name"],
        layout=card.get("layout", "NHWC"),
        channels=card["channels"],
        output_low=float(output_range["low"]),
        output_high=float(output_range["high"]),
        height=card.get("height"),
        width=card.get("width"),
        flat_output=bool(card.get("flat_output", False)),
        latent_size=card.get("latent_size"),
        scale=card.get("scale"),
        input_low=float(input_range["low"]),
        input_high=float(input_range["high"]),
        input_channels=card.get("input_channels"),
    )


def models_dir() -> Path:
    """The repository the peer serves (`PEER_MODELS`), holding the same entries as the product's."""
    return Path(os.environ.get("PEER_MODELS", "models"))


def device() -> str:
    """`cpu` or `cuda` (`PEER_DEVICE`)."""
    return os.environ.get("PEER_DEVICE", "cpu")


def load_cards() -> dict[str, PeerCard]:
    """Every card in the peer's repository, by model name."""
    root = models_dir()
    return {card.name: card for card in (read_card(d) for d in sorted(root.iterdir()) if d.is_dir())}


def new_session(card: PeerCard) -> Any:
    """A plain onnxruntime session, as onnxruntime's own examples make one."""
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    if device() == "cuda":
        providers.insert(0, "CUDAExecutionProvider")
    session = ort.InferenceSession(str(card.path), providers=providers)
    if session.get_providers()[0] != providers[0]:
        raise RuntimeError(f"{card.name}: asked for {providers[0]}, got {session.get_providers()}")
    return session


def draw_latents(seed: int, n: int, size: int) -> np.ndarray:
    """(n, size) float32 latents: the product's generator and call, so a seed gives the same images."""
    return np.random.Generator(np.random.PCG64(seed)).standard_normal((n, size), dtype=np.float32)


def to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Model values in [low, high] to 0..255: float32 scale, clip, round to nearest (as the product)."""
    scale = np.float32(255.0 / (high - low))
    scaled = (values.astype(np.float32, copy=False) - np.float32(low)) * scale
    return np.rint(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)


def from_uint8(pixels: np.ndarray, low: float, high: float) -> np.ndarray:
    """0..255 pixels to float32 values in [low, high] (as the product)."""
    scale = np.float32((high - low) / 255.0)
    return pixels.astype(np.float32) * scale + np.float32(low)


def generated_images(raw: np.ndarray, card: PeerCard) -> np.ndarray:
    """Generator output as (N, H, W, C) uint8."""
    assert card.height and card.width
    if card.flat_output:
        raw = raw.reshape(raw.shape[0], card.height, card.width, card.channels)
    elif card.layout == "NCHW":
        raw = raw.transpose(0, 2, 3, 1)
    return to_uint8(raw, card.output_low, card.output_high)


def upscale_input(pixels: np.ndarray, card: PeerCard) -> np.ndarray:
    """(H, W, 3) uint8 pixels as the upscaler's (1, ...) float32 input."""
    batch = from_uint8(pixels[None], card.input_low, card.input_high)
    if card.layout == "NCHW":
        batch = np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
    return batch


def upscaled_image(raw: np.ndarray, card: PeerCard) -> np.ndarray:
    """One upscaler output (C, H, W or H, W, C) as (H, W, C) uint8."""
    if card.layout == "NCHW":
        raw = raw.transpose(1, 2, 0)
    return to_uint8(raw, card.output_low, card.output_high)


def decode_rgb(data: bytes) -> np.ndarray:
    """An uploaded image as (H, W, 3) uint8 RGB."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def encode_png(pixels: np.ndarray) -> bytes:
    """(H, W, C) uint8 pixels as a PNG at the product's default compression level."""
    image = Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def png_response_body(images: np.ndarray) -> tuple[bytes, str]:
    """One PNG, or an uncompressed zip of `0000.png`, ... for several images; with its media type."""
    files = [encode_png(image) for image in images]
    if len(files) == 1:
        return files[0], "image/png"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for index, data in enumerate(files):
            archive.writestr(f"{index:04d}.png", data)
    return buffer.getvalue(), "application/zip"


def run_generator(session: Any, card: PeerCard, latents: np.ndarray) -> np.ndarray:
    """Generator output for `latents`, in runs of at most MAX_RUN_IMAGES rows."""
    outputs = [
        session.run([card.output_name], {card.input_name: latents[i : i + MAX_RUN_IMAGES]})[0]
        for i in range(0, len(latents), MAX_RUN_IMAGES)
    ]
    return outputs[0] if len(outputs) == 1 else np.concatenate(outputs)
