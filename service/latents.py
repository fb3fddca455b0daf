"""Latent vectors drawn on the host, so a seed gives the same images on CPU and GPU.

`numpy.random.Generator(numpy.random.PCG64(seed))` draws `standard_normal((n, latent_size),
dtype=float32)` for cards with `latent_distribution="normal"`, and `2 * random((n, latent_size),
dtype=float32) - 1` (uniform in [-1, 1)) for `"uniform"`. With `truncation=t`, every entry whose
absolute value exceeds t is redrawn from the same generator until none does.

An interpolation walks from one latent to another (each a seed's latent, drawn as for one image,
or a given vector) in `steps` frames whose first and last latents are exactly the two ends.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Literal

import numpy as np

from service.card import LatentDistribution
from service.errors import InvalidLatents, InvalidRequest

InterpolationMethod = Literal["slerp", "lerp"]
#: Below this sine of the angle between the two ends, they count as parallel (or opposite).
_PARALLEL = 1e-7

#: Random seeds are drawn below 2**53 so that JavaScript clients can hold them exactly.
RANDOM_SEED_BOUND = 2**53
MAX_SEED = 2**63 - 1


class _SeedSource:
    """Seeds from the operating system's CSPRNG (as `secrets`), read 4 KiB at a time.

    `os.urandom` releases the GIL for its system call, and the event loop, which draws the seeds,
    may then wait a worker thread's switch interval to get it back: one call per 512 seeds instead
    of one per request. The seeds stay unpredictable, so no client can guess another's images.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clear()

    def _clear(self) -> None:
        self._bytes = b""
        self._offset = 0

    def draw(self) -> int:
        with self._lock:
            if self._offset + 8 > len(self._bytes):
                self._bytes, self._offset = os.urandom(4096), 0
            chunk = self._bytes[self._offset : self._offset + 8]
            self._offset += 8
        # 2**53 divides 2**64: masking keeps every seed equally likely.
        return int.from_bytes(chunk, "little") & (RANDOM_SEED_BOUND - 1)


_seeds = _SeedSource()
# A forked child must not hand out its parent's remaining bytes again.
os.register_at_fork(after_in_child=_seeds._clear)


def random_seed() -> int:
    """A fresh seed for a request that gave none."""
    return _seeds.draw()


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


def end_latent(
    end: int | Sequence[float] | np.ndarray,
    where: str,
    size: int,
    distribution: LatentDistribution,
    truncation: float | None = None,
) -> np.ndarray:
    """One end of an interpolation as a (size,) float32 latent: a seed's, drawn exactly as for one
    image (`truncation` included), or a given vector (checked, named `where` in errors)."""
    if isinstance(end, int):
        return draw_latents(end, 1, size, distribution, truncation)[0]
    vector = np.asarray(end, dtype=np.float64)
    if vector.shape != (size,):
        raise InvalidLatents(f"{where} is a latent of {vector.size} values; this model takes {size}")
    if not np.isfinite(vector).all():
        raise InvalidLatents(f"{where} contains NaN or Inf")
    if np.abs(vector).max(initial=0.0) > np.finfo(np.float32).max:
        raise InvalidLatents(f"{where} holds values too large for float32")
    return vector.astype(np.float32)


def interpolate_latents(
    start: np.ndarray, end: np.ndarray, steps: int, method: InterpolationMethod = "slerp"
) -> np.ndarray:
    """(steps, size) float32 latents from `start` to `end`; the first and last rows are exactly the ends.

    `lerp` goes along the straight line. `slerp` turns the direction along the great circle between
    the two ends' directions and moves the norm linearly from one end's norm to the other's: between
    ends of equal norm every latent keeps that norm; otherwise the norm changes evenly, frame by frame.
    An end of norm 0 has no direction: slerp is then lerp.
    """
    a, b = start.astype(np.float64), end.astype(np.float64)
    t = np.linspace(0.0, 1.0, steps)[:, None]
    norm_a, norm_b = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if method == "lerp" or norm_a == 0.0 or norm_b == 0.0:
        path = (1.0 - t) * a + t * b
    else:
        unit_a, unit_b = a / norm_a, b / norm_b
        cosine = float(np.clip(unit_a @ unit_b, -1.0, 1.0))
        angle = float(np.arccos(cosine))
        if np.sin(angle) < _PARALLEL and cosine < 0:
            raise InvalidRequest(
                "interpolate.from and interpolate.to point in opposite directions: slerp has no single "
                "path between them; use method=lerp"
            )
        if np.sin(angle) < _PARALLEL:
            direction = np.broadcast_to(unit_a, (steps, a.size))
        else:
            direction = (np.sin((1.0 - t) * angle) * unit_a + np.sin(t * angle) * unit_b) / np.sin(angle)
        path = direction * ((1.0 - t) * norm_a + t * norm_b)
    latents = path.astype(np.float32)
    latents[0], latents[-1] = start, end
    return latents
