"""The inference core: what to generate or upscale in, arrays and what happened out; no HTTP.

Every front door — `POST /generate`, `POST /upscale`, SageMaker's `/invocations`, the Open Inference
Protocol's `/v2/.../infer` — parses its own input into a `Generation` or a `DecodedImage` with
`UpscaleJob`, calls `InferenceCore.generate` or `InferenceCore.upscale`, and hands the result to
`service.rendering`. The core picks the model, checks the request against its card and the server's
limits, draws latents, runs the model through its runner (batched, tiled) and counts what it made;
it never sees a header, a media type or a response.

Every request has a deadline (`Settings.request_deadline_s` from when it arrived, or from when the
core got it) and is admitted by its model's queued work (`service.admission`): refused at once,
before any run, when it could not finish in time. Past the deadline its queued rows and tiles are
dropped and it ends with 503 `deadline_exceeded`; cancelling it (a client that left) drops them too.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from functools import cached_property
from typing import TypeVar

import numpy as np

from service.admission import Ticket, Work
from service.card import ModelCard
from service.decode import DecodedImage
from service.errors import (
    DeadlineExceeded,
    InvalidRequest,
    InvalidTiling,
    OutputTooLarge,
    TooCostly,
    TooManyImages,
    UpscaleTooCostly,
)
from service.labels import generator_input, resolve_labels
from service.latents import (
    InterpolationMethod,
    check_latents,
    draw_latents,
    end_latent,
    interpolate_latents,
    random_seed,
)
from service.metrics import ServiceMetrics
from service.pixels import image_values, to_uint8
from service.ready_images import ReadyImage, ReadyImages
from service.repository import ModelRepository
from service.runner import run_in_chunks_finished
from service.sessions import LoadedModel
from service.settings import Settings
from service.tiling import UpscaleWork, upscale_alpha, upscale_color, upscale_work, upscaled_size

T = TypeVar("T")


@dataclass(frozen=True)
class Interpolation:
    """A walk through the latent space: `steps` frames from one end to the other, both ends included."""

    #: Each end: a seed (its latent drawn exactly as for one image from that seed) or a latent vector.
    start: int | Sequence[float] | np.ndarray
    end: int | Sequence[float] | np.ndarray
    steps: int
    method: InterpolationMethod = "slerp"

    @property
    def seeds(self) -> tuple[int | None, int | None]:
        """The ends' seeds; None for an end given as a latent."""
        start = self.start if isinstance(self.start, int) else None
        end = self.end if isinstance(self.end, int) else None
        return start, end


@dataclass(frozen=True)
class Generation:
    """What to generate: the model, how many images, from which latents or seed, of which classes.

    With `interpolation`, the images are its frames: `n` is its `steps`, and `seed`, `latents` and
    `labels` do not apply (`label` is every frame's class: 0 when not given, as for one image).
    """

    model: str | None = None
    n: int = 1
    seed: int | None = None
    #: Explicit latent vectors, (n, latent_size); `seed` and `truncation` apply only without them.
    latents: np.ndarray | Sequence[Sequence[float]] | None = None
    truncation: float | None = None
    #: Conditional generators: one class for every image, or one per image (index or class name).
    label: int | str | None = None
    labels: Sequence[int | str] | np.ndarray | None = None
    interpolation: Interpolation | None = None
    #: When the answer is due, in event-loop time (`loop.time()`); None: the server's request
    #: deadline from when the core gets the request.
    deadline: float | None = None


@dataclass(frozen=True)
class GeneratedImages:
    """A generator's images and what produced them."""

    model: LoadedModel
    #: (n, height, width, channels) float32 model output, in the card's `output_range`.
    values: np.ndarray
    #: The seed the latents were drawn from; None when the request gave latents.
    seed: int | None
    #: Each image's class index for a conditional generator, else None.
    labels: np.ndarray | None
    #: The labels are the default even spread over the classes (no label was asked for).
    spread_labels: bool
    #: Seconds from handing the latents to the runner to having every image (queue included).
    inference_seconds: float
    #: The walk the images are the frames of, if they are.
    interpolation: Interpolation | None = None

    @property
    def card(self) -> ModelCard:
        return self.model.card

    @property
    def n(self) -> int:
        return int(self.values.shape[0])

    @cached_property
    def pixels(self) -> np.ndarray:
        """The images as (n, height, width, channels) uint8."""
        return to_uint8(self.values, self.card.output_range)


@dataclass(frozen=True)
class UpscaleJob:
    """How to upscale: the model and the tiling (None: the server's setting), and when it is due."""

    model: str | None = None
    tile: int | None = None
    overlap: int | None = None
    #: As `Generation.deadline`.
    deadline: float | None = None


@dataclass(frozen=True)
class UpscalePlan:
    """An upscale checked against the server's limits: the model, the tiling and what it costs."""

    model: LoadedModel
    tile: int
    overlap: int
    cost: UpscaleWork


@dataclass(frozen=True)
class UpscaledImage:
    """An upscaler's output image and what produced it."""

    model: LoadedModel
    #: (height, width, channels) uint8 in the input's mode family; the alpha plane last, if any.
    pixels: np.ndarray
    #: (width, height) of the input image.
    input_size: tuple[int, int]
    tiles: int
    inference_seconds: float

    @property
    def card(self) -> ModelCard:
        return self.model.card

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the output image."""
        return int(self.pixels.shape[1]), int(self.pixels.shape[0])


@dataclass(frozen=True)
class InferenceCore:
    """Generate and upscale with the repository's models, within the server's limits."""

    settings: Settings
    repository: ModelRepository
    metrics: ServiceMetrics
    #: Worker threads for CPU-side image work: tiles converted and pasted, the alpha plane resized.
    image_pool: Executor
    #: Each generator's images made ahead of demand (`service.ready_images`), by model name.
    ready: Mapping[str, ReadyImages] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, model in self.repository.models.items():
            self.metrics.queued_work_seconds.labels(name).set_function(model.runner.admission.queued_seconds)

    async def generate(self, request: Generation) -> GeneratedImages:
        """Draw or check the latents, add the classes, run the generator; the images as values."""
        return await self.generate_finished(request, _as_is)

    async def generate_finished(self, request: Generation, finish: Callable[[GeneratedImages], T]) -> T:
        """`finish(await generate(request))`, with `finish` (converting and encoding the images,
        say) called in the worker thread that ran the generator's batch: one hop off the event
        loop for the model run and the rendering together."""
        deadline = self._deadline(request.deadline)
        model = self.repository.get(request.model, "generator")
        card = model.card
        assert card.latent_size is not None
        walk = request.interpolation
        n = request.n if walk is None else walk.steps
        if n < 1:
            raise InvalidRequest(f"{n} images asked for; ask for at least one")
        if n > self.settings.max_n:
            raise TooManyImages(
                f"{n} images asked for; this server returns at most {self.settings.max_n} per request"
            )
        ready = self._ready_image(request, model)
        if ready is not None:
            return await self._finish_ready(model, ready, finish)
        seed: int | None = None
        if walk is not None:
            labels = resolve_labels(card, _frame_label(request, card), None, n)
            latents = self._walk(walk, card, request)
        else:
            labels = resolve_labels(card, request.label, request.labels, n)
            if request.latents is not None:
                latents = check_latents(request.latents, card.latent_size)
            else:
                seed = request.seed if request.seed is not None else random_seed()
                latents = draw_latents(
                    seed, n, card.latent_size, card.latent_distribution, request.truncation
                )
        inputs = generator_input(latents, labels, card)
        fixed_batch = card.input_shape[0]
        work = Work(elements=inputs.size, runs=1 if fixed_batch is None else max(1, n // fixed_batch))
        advice = f"ask for fewer images than {n}"
        started = time.perf_counter()

        def images(raw: np.ndarray) -> T:
            return finish(
                GeneratedImages(
                    model=model,
                    values=image_values(raw, card),
                    seed=seed,
                    labels=labels,
                    spread_labels=labels is not None and _asked_no_class(request),
                    inference_seconds=time.perf_counter() - started,
                    interpolation=walk,
                )
            )

        with self._admit(model, work, deadline, f"generating {n} images", advice, TooCostly):
            run = run_in_chunks_finished(model.runner, inputs, images)
            result, _ = await self._timed(model, deadline, run)
        self.metrics.images_generated.labels(card.name).inc(n)
        return result

    def _ready_image(self, request: Generation, model: LoadedModel) -> ReadyImage | None:
        """An image made ahead of demand, if `request` is a random sample and one is ready."""
        supply = self.ready.get(model.name)
        if (
            supply is None
            or not self.settings.ready_images
            or request.n != 1
            or request.seed is not None
            or request.latents is not None
            or request.truncation is not None
            or not _asked_no_class(request)
        ):
            return None
        return supply.take()

    async def _finish_ready(
        self, model: LoadedModel, image: ReadyImage, finish: Callable[[GeneratedImages], T]
    ) -> T:
        """`finish` an image made ahead of demand, in the image pool: exactly as its seed's request."""
        result = GeneratedImages(
            model=model,
            values=image.values,
            seed=image.seed,
            labels=image.labels,
            spread_labels=image.labels is not None,
            inference_seconds=image.seconds,
        )
        finished = await asyncio.get_running_loop().run_in_executor(self.image_pool, finish, result)
        self.metrics.images_generated.labels(model.name).inc()
        self.metrics.ready_images_served.labels(model.name).inc()
        return finished

    def _walk(self, walk: Interpolation, card: ModelCard, request: Generation) -> np.ndarray:
        """The frames' latents: each end drawn or checked, then the path between them."""
        assert card.latent_size is not None
        if request.seed is not None or request.latents is not None or request.labels is not None:
            raise InvalidRequest(
                "an interpolation takes its seeds or latents from its two ends and one label for every "
                "frame: leave out seed, latents and labels"
            )
        if walk.steps < 2:
            raise InvalidRequest(f"an interpolation of {walk.steps} steps: it needs at least its two ends")
        if request.truncation is not None and walk.seeds == (None, None):
            raise InvalidRequest("truncation applies to latents drawn from a seed; both ends are latents")
        start, end = (
            end_latent(
                value, f"interpolate.{name}", card.latent_size, card.latent_distribution, request.truncation
            )
            for name, value in (("from", walk.start), ("to", walk.end))
        )
        return interpolate_latents(start, end, walk.steps, walk.method)

    def plan_upscale(self, job: UpscaleJob, width: int, height: int, channels: int = 3) -> UpscalePlan:
        """Check an upscale of a width x height image against the server's limits, before any work.

        Front doors call it with the image header's size to refuse before decoding; `upscale`
        calls it again with the decoded image.
        """
        model = self.repository.get(job.model, "upscaler")
        card = model.card
        assert card.scale is not None
        out_height, out_width = upscaled_size(card, height, width)
        if out_height * out_width > self.settings.max_output_pixels:
            raise OutputTooLarge(
                f"a {width}x{height} image upscaled x{card.scale} would be "
                f"{out_width}x{out_height} = {out_width * out_height} pixels; the limit is "
                f"{self.settings.max_output_pixels} pixels"
            )
        tile, overlap = self._tiling(job, width, height)
        cost = upscale_work(card, height, width, channels, tile, overlap)
        limit = self.settings.upscale_max_work_pixels
        if cost.padded_pixels > limit:
            tiling = (
                "untiled" if cost.tiles == 1 else f"in {cost.tiles} tiles of {tile} with overlap {overlap}"
            )
            raise UpscaleTooCostly(
                f"upscaling this {width}x{height} image {tiling} runs {cost.padded_pixels:,} input pixels "
                f"through the model (overlaps included); this server's limit is {limit:,} per request: "
                "send a smaller image, or use a larger tile or a smaller overlap"
            )
        return UpscalePlan(model=model, tile=tile, overlap=overlap, cost=cost)

    def _tiling(self, job: UpscaleJob, width: int, height: int) -> tuple[int, int]:
        """The tile and overlap to use: the request's, within the server's bounds, else the server's own."""
        settings = self.settings
        low, high = settings.upscale_min_tile, settings.upscale_max_tile
        tile = settings.tile_size if job.tile is None else job.tile
        if job.tile == 0 and width * height > settings.upscale_untiled_max_pixels:
            raise InvalidTiling(
                f"tile=0 (no tiling) is allowed for images of up to {settings.upscale_untiled_max_pixels:,} "
                f"pixels; this one is {width}x{height} = {width * height:,}: leave tile out for the "
                f"server's {settings.tile_size}, or choose one from {low} to {high}"
            )
        if job.tile and not low <= job.tile <= high:
            raise InvalidTiling(f"tile={job.tile} is outside the {low} to {high} pixels this server allows")
        most = math.floor(tile * settings.upscale_max_overlap_ratio)
        if job.overlap is None:
            # The server's overlap shrinks to fit a small tile the request chose.
            overlap = settings.tile_overlap if job.tile is None else min(settings.tile_overlap, most)
        else:
            overlap = job.overlap
            if tile and overlap > most:
                raise InvalidTiling(
                    f"overlap={overlap} is more than {settings.upscale_max_overlap_ratio:g} of tile {tile} "
                    f"({most} pixels), the most this server allows: use a smaller overlap or a larger tile"
                )
        return tile, overlap

    async def upscale(self, image: DecodedImage, job: UpscaleJob) -> UpscaledImage:
        """Upscale the colour tile by tile with the model and the alpha plane bicubically."""
        deadline = self._deadline(job.deadline)
        plan = self.plan_upscale(job, image.width, image.height, image.color.shape[2])
        model, card = plan.model, plan.model.card
        assert card.scale is not None
        what = f"this {image.width}x{image.height} upscale ({plan.cost.tiles} tiles)"
        advice = "send a smaller image, or use a larger tile or a smaller overlap"
        with self._admit(model, plan.cost.work, deadline, what, advice, UpscaleTooCostly) as ticket:
            tiles_upscaled = self.metrics.tiles_upscaled.labels(card.name)

            def tile_done(elements: int) -> None:
                ticket.done(elements)
                tiles_upscaled.inc()

            (color, tiles), seconds = await self._timed(
                model,
                deadline,
                upscale_color(
                    image.color,
                    model.runner,
                    self.image_pool,
                    tile=plan.tile,
                    overlap=plan.overlap,
                    on_tile=tile_done,
                ),
            )
        pixels = color
        if image.alpha is not None:
            loop = asyncio.get_running_loop()
            alpha = await loop.run_in_executor(self.image_pool, upscale_alpha, image.alpha, card.scale)
            pixels = np.concatenate([color, alpha[..., None]], axis=2)
        out_height, out_width = upscaled_size(card, image.height, image.width)
        self.metrics.pixels_upscaled.labels(card.name).inc(out_height * out_width)
        return UpscaledImage(
            model=model,
            pixels=pixels,
            input_size=(image.width, image.height),
            tiles=tiles,
            inference_seconds=seconds,
        )

    def deadline(self) -> float:
        """A request arriving now is due at this event-loop time."""
        return asyncio.get_running_loop().time() + self.settings.request_deadline_s

    def _deadline(self, due: float | None) -> float:
        return self.deadline() if due is None else due

    def _admit(
        self,
        model: LoadedModel,
        work: Work,
        deadline: float,
        what: str,
        advice: str,
        too_costly: type[TooCostly],
    ) -> Ticket:
        """Reserve the model for `work`, or refuse at once if it cannot be done by `deadline`."""
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            raise self._past_deadline(model)
        return model.runner.admission.admit(
            work, left, self.settings.request_deadline_s, what=what, advice=advice, too_costly=too_costly
        )

    def _past_deadline(self, model: LoadedModel) -> DeadlineExceeded:
        retry_after = max(1, math.ceil(model.runner.admission.queued_seconds()))
        return DeadlineExceeded(
            f"not done within {self.settings.request_deadline_s:g} s, the most a request may take here; "
            f"its queued work was dropped: retry after {retry_after} s, or ask for less",
            retry_after=retry_after,
        )

    async def _timed(self, model: LoadedModel, deadline: float, work: Awaitable[T]) -> tuple[T, float]:
        """Await the model's work until `deadline`, counted in `gan_serve_model_runs_in_flight` and timed.

        Past the deadline the work is cancelled (its queued rows and tiles leave the batcher) and the
        request ends with `DeadlineExceeded`; cancelled from outside, it is counted and re-raised.
        """
        started = time.perf_counter()
        name = model.card.name
        timeout = asyncio.timeout_at(deadline)
        with self.metrics.model_runs_in_flight.labels(name).track_inprogress():
            try:
                async with timeout:
                    result = await work
            except TimeoutError:
                if not timeout.expired():
                    raise
                self.metrics.cancelled_requests.labels(name, "deadline").inc()
                raise self._past_deadline(model) from None
            except asyncio.CancelledError:
                self.metrics.cancelled_requests.labels(name, "cancelled").inc()
                raise
        return result, time.perf_counter() - started


def _as_is(images: GeneratedImages) -> GeneratedImages:
    return images


def _asked_no_class(request: Generation) -> bool:
    """The request leaves the classes to the default spread: no label, no labels, no interpolation."""
    return request.label is None and request.labels is None and request.interpolation is None


def _frame_label(request: Generation, card: ModelCard) -> int | str | None:
    """Every frame's class: the one asked for, else class 0, the one image's class without a label."""
    if request.label is None and card.condition is not None:
        return 0
    return request.label
