"""The peers of `make bench-peers` repeat the product's pixel conventions, so their images can match.

`bench/peers/common.py` imports nothing of the product (each peer runs in its own environment);
these tests catch the day the product's latents or pixel mapping change and the copy does not.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from service.card import ValueRange
from service.latents import draw_latents
from service.pixels import from_uint8, to_uint8

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from peers import common


def test_latents_from_a_seed_are_the_products() -> None:
    for seed, n in ((0, 1), (7, 16), (2**53 - 1, 3)):
        np.testing.assert_array_equal(common.draw_latents(seed, n, 100), draw_latents(seed, n, 100, "normal"))


def test_pixel_mappings_are_the_products() -> None:
    values = np.random.default_rng(0).uniform(-1.3, 1.3, (4, 16, 16, 3)).astype(np.float32)
    values[0, 0, 0] = [-1.0, 1.0, 0.0]
    for low, high in ((-1.0, 1.0), (0.0, 1.0), (0.0, 255.0)):
        scaled = values * np.float32((high - low) / 2) + np.float32((high + low) / 2)
        value_range = ValueRange(low=low, high=high)
        np.testing.assert_array_equal(common.to_uint8(scaled, low, high), to_uint8(scaled, value_range))
        pixels = to_uint8(scaled, value_range)
        np.testing.assert_array_equal(common.from_uint8(pixels, low, high), from_uint8(pixels, value_range))
