"""Random samples made ahead of demand: single images of fresh seeds, ready before they are asked for.

The plainest `/generate` — one image with no seed, latents, truncation, label, labels or
interpolation — is a random sample: nothing in it depends on the request. Each generator keeps a
few of them ready (`Settings.ready_images`), each from its own fresh seed drawn as a request's
would be, its latent drawn by `draw_latents(seed, 1, ...)` and its class the one a request without
a label gets. An answer taken from here is therefore the answer a request with that seed (its
`X-Seed`) gets, and each image is handed out once.

Images are made only while the model is otherwise idle (`ModelRunner.idle`: no run going, no
request waiting), a batch of at most `REFILL_ROWS` at a time, so a request queues behind at most one
such batch. Under steady load the model is never idle: the supply runs out and requests take the
ordinary path, as without it; between requests (one client, bursts) it refills. The supply is
bounded by count and by `MAX_BYTES` of model output per generator (large images get fewer, the
largest none).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from service import __name__ as package_name
from service.card import ModelCard
from service.labels import generator_input, resolve_labels
from service.latents import draw_latents, random_seed
from service.pixels import image_values
from service.runner import run_in_chunks_finished
from service.sessions import LoadedModel

log = logging.getLogger(package_name)

#: Rows per refill batch: long enough to batch well on a CPU stream, short enough that a request
#: arriving meanwhile finds the other streams (or this one soon) free.
REFILL_ROWS = 8
#: Model output held ready per generator, at most.
MAX_BYTES = 16 * 1024 * 1024
#: After a refill fails, the next waits this long (the model may be broken; requests will say how).
RETRY_AFTER_FAILURE_S = 30.0


@dataclass(frozen=True)
class ReadyImage:
    """One image made ahead of demand."""

    seed: int
    #: (1, height, width, channels) float32 model output, as `GeneratedImages.values`.
    values: np.ndarray
    #: (1,) class index for a conditional generator (the one a request without a label gets), else None.
    labels: np.ndarray | None
    #: Seconds its refill batch took.
    seconds: float


def ready_capacity(card: ModelCard, wanted: int) -> int:
    """How many images a generator keeps ready: `wanted`, within `MAX_BYTES` of its output; 0 for
    any other model, and for a generator whose graph takes a fixed batch size."""
    if card.kind != "generator" or card.latent_size is None or card.input_shape[0] is not None:
        return 0
    assert card.height is not None and card.width is not None
    image_bytes = card.height * card.width * card.channels * 4
    return min(wanted, MAX_BYTES // image_bytes)


class ReadyImages:
    """The images one generator keeps ready, and the task that refills them (on the event loop)."""

    def __init__(self, model: LoadedModel, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.model = model
        self.capacity = capacity
        self._images: deque[ReadyImage] = deque()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._paused_until = 0.0
        card = model.card
        # The class of a one-image request without a label (None: unconditional).
        self._label = resolve_labels(card, None, None, 1)

    def __len__(self) -> int:
        return len(self._images)

    def take(self) -> ReadyImage | None:
        """The oldest ready image, gone from here; None if there is none. Wakes the refill."""
        image = self._images.popleft() if self._images else None
        self.wake()
        return image

    def wake(self) -> None:
        """Start refilling if images are missing, no refill runs and the model is idle."""
        if (
            self._closed
            or self._task is not None
            or len(self._images) >= self.capacity
            or time.monotonic() < self._paused_until
            or not self.model.runner.idle()
        ):
            return
        # In a context of its own: a refill is no request, and never runs on the event loop's
        # thread the way a lone client's request may (the batcher's solo path), which would hold
        # up the requests that the images it makes are for.
        self._task = asyncio.get_running_loop().create_task(
            self._refill(), name=f"ready images {self.model.name}", context=contextvars.Context()
        )

    async def close(self) -> None:
        """Stop refilling and drop what is ready."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._images.clear()

    async def _refill(self) -> None:
        try:
            while not self._closed and len(self._images) < self.capacity and self.model.runner.idle():
                await self._make(min(REFILL_ROWS, self.capacity - len(self._images)))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._paused_until = time.monotonic() + RETRY_AFTER_FAILURE_S
            log.warning(
                "model %s: could not make images ahead of demand (%s); retrying in %g s",
                self.model.name,
                exc,
                RETRY_AFTER_FAILURE_S,
            )
        finally:
            self._task = None

    async def _make(self, count: int) -> None:
        card = self.model.card
        assert card.latent_size is not None
        seeds = [random_seed() for _ in range(count)]
        latents = np.concatenate(
            [draw_latents(seed, 1, card.latent_size, card.latent_distribution) for seed in seeds]
        )
        labels = None if self._label is None else np.repeat(self._label, count)
        inputs = generator_input(latents, labels, card)
        started = time.perf_counter()
        values = await run_in_chunks_finished(
            self.model.runner, inputs, lambda raw: np.array(image_values(raw, card))
        )
        seconds = time.perf_counter() - started
        if self._closed:
            return
        for row, seed in enumerate(seeds):
            self._images.append(ReadyImage(seed, values[row : row + 1], self._label, seconds))
