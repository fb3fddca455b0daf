"""`POST /generate`: images from a generator, drawn from a seed or from explicit latent vectors.

Conditional generators also take a class per image (`label` or `labels`; see `service.labels`).
With `interpolate`, the images are the frames of a walk from one seed or latent to another
(`service.latents.interpolate_latents`), as files, one grid or one animation (`layout=animation`).

`serve_generate` is the whole path of a parsed `GenerateRequest`, for this route and SageMaker's
`/invocations`: the request becomes a core `Generation`, the result is rendered as asked.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from service.deps import AcceptHeader, FactsDep, StateDep
from service.encode import MEDIA_TYPES, GenerateFormat
from service.errors import InvalidRequest, UnsupportedMediaType
from service.facts import RequestFacts
from service.inference import GeneratedImages, Generation, Interpolation
from service.latents import MAX_SEED, InterpolationMethod
from service.rendering import (
    DEFAULT_FRAME_MS,
    MAX_HEADER_LABELS,
    ZIP_MEDIA_TYPE,
    GenerateLayout,
    Rendered,
    Rendering,
    check_format,
    prefers_json,
    render_generated,
)
from service.responses import error_responses
from service.state import ServiceState
from service.uploads import unless_disconnected

router = APIRouter(tags=["inference"])

#: A class: its index (0 .. classes-1) or its name on the model card.
ClassLabel = int | str
#: Longer strings cannot be class names worth echoing back in an error message.
MAX_CLASS_NAME = 200
#: An interpolation end: a seed, or a latent vector of the model's latent size.
InterpolationEnd = int | list[float]
MAX_STEPS = 64


class InterpolateOptions(BaseModel):
    """A walk through the latent space: `steps` frames from one seed or latent to another, ends included."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    start: InterpolationEnd = Field(
        alias="from",
        description="where the walk starts: a seed (its latent is the one /generate draws for one image "
        "from that seed, truncation included) or a latent vector of the model's latent size",
    )
    end: InterpolationEnd = Field(alias="to", description="where the walk ends: a seed or a latent vector")
    steps: int = Field(default=16, ge=2, le=MAX_STEPS, description="frames, both ends included")
    method: InterpolationMethod = Field(
        default="slerp",
        description="slerp: the direction turns along the great circle and the norm moves linearly "
        "(kept when both ends have the same norm); lerp: the straight line",
    )

    @field_validator("start", "end", mode="before")
    @classmethod
    def _seed_or_latent(cls, value: object, info: ValidationInfo) -> object:
        # Checked before pydantic's coercion, which would take JSON true as seed 1 and 2.0 as 2.
        where = "interpolate.from" if info.field_name == "start" else "interpolate.to"
        if isinstance(value, int) and not isinstance(value, bool):
            if not 0 <= value <= MAX_SEED:
                raise ValueError(f"{where} is seed {value}: seeds are 0 .. {MAX_SEED}")
            return value
        if isinstance(value, list) and value:
            for index, item in enumerate(value):
                if isinstance(item, bool) or not isinstance(item, int | float):
                    raise ValueError(f"{where}[{index}] is {json.dumps(item)}: a latent holds numbers")
            return value
        shown = "[]" if isinstance(value, list) else json.dumps(value) if _is_json(value) else repr(value)
        raise ValueError(
            f"{where} is {shown}: give a seed (an integer) or a latent vector (a list of numbers)"
        )

    def interpolation(self) -> Interpolation:
        """The core's view of this walk."""
        return Interpolation(start=self.start, end=self.end, steps=self.steps, method=self.method)


def _is_json(value: object) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


class GenerateRequest(BaseModel):
    """What to generate: which model, how many images, from which seed or latents, in which format."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(
        default=None,
        max_length=64,
        description="generator name (default: the repository's default generator)",
    )
    n: int | None = Field(
        default=None,
        ge=1,
        description="number of images, up to the server's max_n (default 1, or len(latents))",
    )
    seed: int | None = Field(
        default=None,
        ge=0,
        le=MAX_SEED,
        description="seed for the host-side latent generator (default: random, returned in X-Seed)",
    )
    latents: list[list[float]] | None = Field(
        default=None, min_length=1, description="explicit latent vectors, each of the model's latent size"
    )
    truncation: float | None = Field(
        default=None, ge=0.1, le=100, description="redraw latent entries whose absolute value exceeds this"
    )
    format: GenerateFormat = Field(
        default="png",
        description="png, jpeg, webp, or npy (uint8 array); for layout=animation webp (the default "
        "there) or gif",
    )
    layout: GenerateLayout = Field(
        default="images",
        description="images: one file per image (zip when n > 1); grid: one image; "
        "animation: one animated image, a frame per image",
    )
    columns: int | None = Field(
        default=None,
        ge=1,
        description="layout=grid only: images per grid row (default: one class per row for a "
        "conditional model when no label is given and n is a multiple of its classes; "
        "else the most square grid)",
    )
    label: ClassLabel | None = Field(
        default=None,
        description="conditional generators: the class of every image, an index 0 .. classes-1 or a "
        "class name (default: the images spread evenly over the classes)",
    )
    labels: list[ClassLabel] | None = Field(
        default=None,
        min_length=1,
        description="conditional generators: one class per image (index or name); "
        "without n or latents, its length is the number of images",
    )
    interpolate: InterpolateOptions | None = Field(
        default=None,
        description="the images are the frames of a walk from one seed or latent to another "
        "(n, seed, latents and labels do not apply; label is every frame's class)",
    )
    frame_ms: int | None = Field(
        default=None,
        ge=20,
        le=10_000,
        description=f"layout=animation only: milliseconds per frame (default {DEFAULT_FRAME_MS}; "
        "GIF counts in tens of milliseconds and rounds down)",
    )

    @field_validator("truncation", mode="before")
    @classmethod
    def _finite_number(cls, value: object) -> object:
        # Checked before pydantic's coercion, which would take JSON true as 1.0 and "2" as 2.0, and
        # would answer NaN with a range message that NaN does not break.
        if value is None:
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            shown = json.dumps(value) if _is_json(value) or isinstance(value, list | dict) else repr(value)
            raise ValueError(f"truncation must be a number (0.1 .. 100), not {shown}")
        if not math.isfinite(value):
            raise ValueError("truncation must be a finite number")
        return value

    @field_validator("label", "labels", mode="before")
    @classmethod
    def _indices_or_names(cls, value: object, info: ValidationInfo) -> object:
        # Checked before pydantic's coercion, which would pass JSON true/false as 1/0 and 2.0 as 2.
        if info.field_name == "labels":
            if not isinstance(value, list):
                return value
            items = [(f"labels[{index}]", item) for index, item in enumerate(value)]
        else:
            if value is None:
                return value
            items = [("label", value)]
        for where, item in items:
            if isinstance(item, str):
                if len(item) > MAX_CLASS_NAME:
                    raise ValueError(f"{where} is {len(item)} characters long: no class name is")
            elif isinstance(item, bool) or not isinstance(item, int):
                shown = json.dumps(item) if isinstance(item, bool | None) else repr(item)
                raise ValueError(f"{where} is {shown}: a label is a class index (0, 1, ...) or a class name")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> GenerateRequest:
        if self.interpolate is not None:
            self._check_interpolation(self.interpolate)
        if self.layout == "animation" and "format" not in self.model_fields_set:
            self.format = "webp"
        try:
            check_format(self.format, self.layout)
        except InvalidRequest as exc:
            raise ValueError(exc.message) from None
        if self.frame_ms is not None and self.layout != "animation":
            raise ValueError("frame_ms applies to layout=animation only")
        if self.latents is not None:
            if self.seed is not None:
                raise ValueError("give either seed or latents, not both")
            if self.truncation is not None:
                raise ValueError("truncation applies to drawn latents; it cannot be combined with latents")
            if self.n is not None and self.n != len(self.latents):
                raise ValueError(f"n is {self.n} but {len(self.latents)} latent vectors were given")
        if self.label is not None and self.labels is not None:
            raise ValueError(
                "give either label (one class for all images) or labels (one per image), not both"
            )
        if self.labels is not None:
            if self.latents is not None and len(self.labels) != len(self.latents):
                raise ValueError(
                    f"{len(self.labels)} labels for {len(self.latents)} latent vectors; give one per image"
                )
            if self.n is not None and len(self.labels) != self.n:
                raise ValueError(
                    f"n is {self.n} but {len(self.labels)} labels were given: give one per image"
                )
        if self.columns is not None:
            if self.layout != "grid":
                raise ValueError("columns applies to layout=grid only")
            if self.columns > self.count:
                raise ValueError(f"columns is {self.columns} but only {self.count} images are asked for")
        return self

    def _check_interpolation(self, walk: InterpolateOptions) -> None:
        misplaced = {
            "n": "the number of frames is interpolate.steps",
            "seed": "give the seeds as interpolate.from and interpolate.to",
            "latents": "give the latents as interpolate.from and interpolate.to",
            "labels": "label gives every frame's class",
        }
        for name, advice in misplaced.items():
            if getattr(self, name) is not None:
                raise ValueError(f"interpolate takes no {name}: {advice}")
        if self.truncation is not None and not (isinstance(walk.start, int) or isinstance(walk.end, int)):
            raise ValueError(
                "truncation applies to latents drawn from a seed; both interpolate ends are latents"
            )

    @property
    def count(self) -> int:
        """How many images this request asks for."""
        if self.interpolate is not None:
            return self.interpolate.steps
        if self.latents is not None:
            return len(self.latents)
        if self.n is None and self.labels is not None:
            return len(self.labels)
        return self.n or 1


GENERATE_EXAMPLES: dict[str, Any] = {
    "one": {"summary": "One PNG from a seed", "value": {"n": 1, "seed": 42}},
    "zip": {"summary": "Eight PNGs in a zip", "value": {"model": "dcgan-cifar10", "n": 8, "seed": 7}},
    "grid": {"summary": "A 4x4 grid as one JPEG", "value": {"n": 16, "layout": "grid", "format": "jpeg"}},
    "truncated": {"summary": "Truncation trick", "value": {"n": 4, "seed": 1, "truncation": 0.7}},
    "latents": {"summary": "Explicit latents (latent_size values each)", "value": {"latents": [[0.0] * 100]}},
    "label": {
        "summary": "Conditional generator: four images of class 3",
        "value": {"model": "cgan-mnist", "n": 4, "seed": 1, "label": 3},
    },
    "classes": {
        "summary": "Conditional generator: a grid with one class per row",
        "value": {"model": "cgan-mnist", "n": 40, "seed": 1, "layout": "grid"},
    },
    "interpolate": {
        "summary": "A walk from seed 1 to seed 2 as an animated WebP, 16 frames of 80 ms",
        "value": {"interpolate": {"from": 1, "to": 2, "steps": 16}, "layout": "animation", "frame_ms": 80},
    },
}

GENERATE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "One image (`image/*`), several images as a zip (`0000.png`, `0001.png`, ...), "
        "one animated WebP or GIF (layout=animation), "
        "an `.npy` array, or JSON with base64 images when Accept is application/json. "
        "`X-Seed` gives the seed used (absent when latents were given), `X-Model` the model, "
        "`X-Images` the number of images, `X-Labels` the class of each image (conditional "
        f"generators, up to {MAX_HEADER_LABELS} images; JSON `labels` always has them).",
        "content": {
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            "image/webp": {"schema": {"type": "string", "format": "binary"}},
            "image/gif": {"schema": {"type": "string", "format": "binary"}},
            ZIP_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}},
            MEDIA_TYPES["npy"]: {"schema": {"type": "string", "format": "binary"}},
            "application/json": {
                "example": {
                    "model": "dcgan-cifar10",
                    "seed": 42,
                    "n": 1,
                    "layout": "images",
                    "labels": None,
                    "interpolate": None,
                    "format": "png",
                    "images": [{"index": 0, "media_type": "image/png", "data": "iVBORw0KGgo..."}],
                }
            },
        },
    },
    **error_responses(400, 401, 404, 413, 415, 422, 500, 503),
}


def generation_of(request: GenerateRequest) -> Generation:
    """The core's view of a /generate body: what to generate (the rest is how to render it)."""
    return Generation(
        model=request.model,
        n=request.count,
        seed=request.seed,
        latents=request.latents,
        truncation=request.truncation,
        label=request.label,
        labels=request.labels,
        interpolation=None if request.interpolate is None else request.interpolate.interpolation(),
    )


async def serve_generate(
    request: GenerateRequest, rendering: Rendering, state: ServiceState, facts: RequestFacts
) -> Rendered:
    """Generate what `request` asks for and render it as `rendering` says."""
    check_format(rendering.format, request.layout)  # Accept may have replaced the body's format
    frame_ms = request.frame_ms or DEFAULT_FRAME_MS

    def render(result: GeneratedImages) -> Rendered:
        # In the worker that ran the batch, right after it: converting, encoding and zipping cost
        # no hop of their own. The model is known from here on, even if rendering fails.
        facts.model = result.card.name
        return render_generated(result, rendering, request.layout, request.columns, frame_ms)

    return await state.core.generate_finished(generation_of(request), render)


def is_json_or_absent(content_type: str | None) -> bool:
    """Whether a /generate body with this Content-Type is read as JSON (absent: it is)."""
    if content_type is None:
        return True
    media_type = content_type.partition(";")[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


async def json_body(request: Request) -> None:
    """Refuse a body that is not JSON before it is read (`curl -d` sends a form unless told otherwise)."""
    # `async def` only so FastAPI calls it on the event loop: a plain `def` dependency costs a
    # worker-thread round trip on every request (service/deps.py).
    content_type = request.headers.get("content-type")
    if is_json_or_absent(content_type):
        return
    media_type = (content_type or "").partition(";")[0].strip().lower()
    raise UnsupportedMediaType(
        f"Content-Type {media_type!r} is not served by /generate: send the body as application/json "
        "(with curl: -H 'Content-Type: application/json')"
    )


@router.post(
    "/generate",
    summary="Generate images",
    response_class=Response,
    responses=GENERATE_RESPONSES,
    dependencies=[Depends(json_body)],
)
async def generate(
    request: Request,
    state: StateDep,
    facts: FactsDep,
    body: Annotated[GenerateRequest, Body(openapi_examples=GENERATE_EXAMPLES)] = GenerateRequest(),  # noqa: B008
    accept: AcceptHeader = None,
) -> Response:
    """Generate `n` images from a seed (random when absent) or from explicit latent vectors."""
    return await answer_generate(request, state, facts, body, accept)


async def answer_generate(
    request: Request, state: ServiceState, facts: RequestFacts, body: GenerateRequest, accept: str | None
) -> Response:
    """The route's answer to a parsed body; `service.fast_lane` calls it too, past FastAPI."""
    rendering = state.rendering(body.format, "json" if prefers_json(accept) else "auto")
    work = serve_generate(body, rendering, state, facts)
    return (await unless_disconnected(request, work)).response()
