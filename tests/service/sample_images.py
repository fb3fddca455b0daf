"""Test images: encoding arrays and decoding responses."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image


def png_bytes(pixels: np.ndarray, **save: Any) -> bytes:
    """Encode an array as PNG, its mode inferred from shape and dtype (uint16 (H, W) → 16-bit)."""
    buffer = io.BytesIO()
    image = Image.fromarray(pixels)
    image.save(buffer, "PNG", **save)
    return buffer.getvalue()


def random_pixels(height: int, width: int, channels: int, seed: int = 0) -> np.ndarray:
    """Smooth-ish random test pixels (H, W, C) or (H, W) when channels is 0."""
    rng = np.random.default_rng(seed)
    shape = (height, width) if channels == 0 else (height, width, channels)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def open_image(data: bytes) -> Image.Image:
    """Decode response bytes with Pillow."""
    image = Image.open(io.BytesIO(data))
    image.load()
    return image
