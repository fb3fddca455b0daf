"""Latent vectors drawn on the host, so a seed gives the same images on CPU and GPU.

`numpy.random.Generator(numpy.random.PCG64(seed))` draws `standard_normal((n, latent_size),
dtype=float32)` for cards with `latent_distribution="normal"`, and `2 * random((n, latent_size),
dtype=float32) - 1` (uniform in [-1, 1)) for `"uniform"`. With `truncation=t`, every entry whose
absolute value exceeds t is redrawn from the same generator until none does.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import numpy as np

from service.card import LatentDistribution
from service.errors import InvalidLatents

#: Random seeds are drawn below 2**53 so that JavaScript clients can hold them exactly.
RANDOM_SEED_BOUND = 2**53
MAX_SEED = 2**63 - 1


def random_seed() -> int:
    """A fresh seed for a request that gave none."""
    return secrets.randbelow(RANDOM_SEED_BOUND)


def draw_latents(
    seed: int, n: int, size: int, distribution: LatentDistribution, truncation: float | None = None
) -> np.ndarray:
    """(n, size) float32 latents from `seed`, redrawing entries above `truncation` in absolute value."""
    rng = np.random.Generator(np.random.PCG64(seed))

    def draw(shape: tuple[int, ...]) -> np.ndarray:
        if distribution == "normal":
            return rng.standard_normal(shape, dtype=np.float32)
        return rng.random(shape, dtype=np.float32) * np.float32(2) - np.float32(1)

    latents = draw((n, size))
    if truncation is not None:
        outside = np.abs(latents) > truncation
        while outside.any():
            latents[outside] = draw((int(outside.sum()),))
            outside = np.abs(latents) > truncation
    return latents


def check_latents(latents: Sequence[Sequence[float]] | np.ndarray, size: int) -> np.ndarray:
    """Explicit latents as an (n, size) float32 array; refuse wrong lengths and NaN/Inf, naming the index."""
    if isinstance(latents, np.ndarray):
        if latents.ndim != 2 or latents.shape[1] != size:
            raise InvalidLatents(f"latents have shape {list(latents.shape)}; this model takes [n, {size}]")
        array = latents.astype(np.float64, copy=False)
    else:
        for index, vector in enumerate(latents):
            if len(vector) != size:
                raise InvalidLatents(f"latents[{index}] has {len(vector)} values; this model takes {size}")
        array = np.asarray(latents, dtype=np.float64).reshape(len(latents), size)
    broken = np.flatnonzero(~np.isfinite(array).all(axis=1))
    if broken.size:
        raise InvalidLatents(f"latents[{broken[0]}] contains NaN or Inf")
    if np.abs(array).max(initial=0.0) > np.finfo(np.float32).max:
        raise InvalidLatents("latents hold values too large for float32")
    return array.astype(np.float32)
