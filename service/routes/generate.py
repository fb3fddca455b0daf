"""`POST /generate`: images from a generator, drawn from a seed or from explicit latent vectors.

Conditional generators also take a class per image (`label` or `labels`; see `service.labels`).

`serve_generate` is the whole path of a parsed `GenerateRequest`, for this route and SageMaker's
`/invocations`: the request becomes a core `Generation`, the result is rendered as asked.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Body, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from service.deps import AcceptHeader, FactsDep, StateDep
from service.encode import MEDIA_TYPES, OutputFormat
from service.facts import RequestFacts
from service.inference import Generation
from service.latents import MAX_SEED
from service.rendering import (
    MAX_HEADER_LABELS,
    ZIP_MEDIA_TYPE,
    GenerateLayout,
    Rendered,
    Rendering,
    prefers_json,
    render_generated,
)
from service.responses import error_responses
from service.state import ServiceState

router = APIRouter(tags=["inference"])

#: A class: its index (0 .. classes-1) or its name on the model card.
ClassLabel = int | str
#: Longer strings cannot be class names worth echoing back in an error message.
MAX_CLASS_NAME = 200


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
    format: OutputFormat = Field(default="png", description="png, jpeg, webp, or npy (uint8 array)")
    layout: GenerateLayout = Field(
        default="images", description="images: one file per image (zip when n > 1); grid: one image"
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

    @property
    def count(self) -> int:
        """How many images this request asks for."""
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
}

GENERATE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "One image (`image/*`), several images as a zip (`0000.png`, `0001.png`, ...), "
        "an `.npy` array, or JSON with base64 images when Accept is application/json. "
        "`X-Seed` gives the seed used (absent when latents were given), `X-Model` the model, "
        "`X-Images` the number of images, `X-Labels` the class of each image (conditional "
        f"generators, up to {MAX_HEADER_LABELS} images; JSON `labels` always has them).",
        "content": {
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            "image/webp": {"schema": {"type": "string", "format": "binary"}},
            ZIP_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}},
            MEDIA_TYPES["npy"]: {"schema": {"type": "string", "format": "binary"}},
            "application/json": {
                "example": {
                    "model": "dcgan-cifar10",
                    "seed": 42,
                    "n": 1,
                    "layout": "images",
                    "labels": None,
                    "format": "png",
                    "images": [{"index": 0, "media_type": "image/png", "data": "iVBORw0KGgo..."}],
                }
            },
        },
    },
    **error_responses(404, 422, 500, 503),
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
    )


async def serve_generate(
    request: GenerateRequest, rendering: Rendering, state: ServiceState, facts: RequestFacts
) -> Rendered:
    """Generate what `request` asks for and render it as `rendering` says."""
    result = await state.core.generate(generation_of(request))
    facts.model = result.card.name
    return await state.in_encode_pool(render_generated, result, rendering, request.layout, request.columns)


@router.post(
    "/generate",
    summary="Generate images",
    response_class=Response,
    responses=GENERATE_RESPONSES,
)
async def generate(
    state: StateDep,
    facts: FactsDep,
    body: Annotated[GenerateRequest, Body(openapi_examples=GENERATE_EXAMPLES)] = GenerateRequest(),  # noqa: B008
    accept: AcceptHeader = None,
) -> Response:
    """Generate `n` images from a seed (random when absent) or from explicit latent vectors."""
    rendering = state.rendering(body.format, "json" if prefers_json(accept) else "auto")
    return (await serve_generate(body, rendering, state, facts)).response()
