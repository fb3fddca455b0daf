"""Mapping between 8-bit pixels and a model's value range, and laying images out in a grid."""

from __future__ import annotations

import math

import numpy as np

from service.card import ModelCard, ValueRange
from service.errors import InferenceError


def to_uint8(values: np.ndarray, value_range: ValueRange) -> np.ndarray:
    """Map model values in `value_range` to 0..255, clipping what falls outside and rounding to nearest."""
    scale = np.float32(255.0 / (value_range.high - value_range.low))
    scaled = (values.astype(np.float32, copy=False) - np.float32(value_range.low)) * scale
    return np.rint(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)


def from_uint8(pixels: np.ndarray, value_range: ValueRange) -> np.ndarray:
    """Map 0..255 pixels to float32 values in `value_range` (0 → low, 255 → high)."""
    scale = np.float32((value_range.high - value_range.low) / 255.0)
    return pixels.astype(np.float32) * scale + np.float32(value_range.low)


def grid_shape(n: int, columns: int | None = None) -> tuple[int, int]:
    """Rows and columns of a grid holding `n` images row by row: `columns` wide, else the most square."""
    columns = columns or math.ceil(math.sqrt(n))
    return math.ceil(n / columns), columns


def make_grid(images: np.ndarray, columns: int | None = None) -> np.ndarray:
    """Lay (N, H, W, C) images out edge to edge, row by row; cells past the last image are black."""
    n, height, width, channels = images.shape
    rows, columns = grid_shape(n, columns)
    grid = np.zeros((rows * height, columns * width, channels), images.dtype)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        grid[row * height : (row + 1) * height, column * width : (column + 1) * width] = image
    return grid


def image_values(raw: np.ndarray, card: ModelCard) -> np.ndarray:
    """Generator output as (N, H, W, C) values: reshaped per the card, checked against its shape."""
    assert card.height is not None and card.width is not None
    n = raw.shape[0]
    expected = (n, card.height, card.width, card.channels)
    if card.flat_output:
        if raw.ndim != 2 or raw.shape[1] != card.height * card.width * card.channels:
            raise InferenceError(
                f"model {card.name} returned shape {list(raw.shape)}, expected flat {expected}"
            )
        raw = raw.reshape(expected)
    elif card.layout == "NCHW" and raw.ndim == 4:
        raw = raw.transpose(0, 2, 3, 1)
    if raw.shape != expected:
        raise InferenceError(f"model {card.name} returned shape {list(raw.shape)}, expected {list(expected)}")
    return raw
