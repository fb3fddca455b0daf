"""`POST /generate`: images from a generator, drawn from a seed or from explicit latent vectors.

Conditional generators also take a class per image (`label` or `labels`; see `service.labels`).

`respond_generate` holds the whole request → response path so other routers (SageMaker's
`/invocations`) can call it with an already-parsed `GenerateRequest`.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Body, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from service.card import ModelCard
from service.deps import AcceptHeader, StateDep
from service.encode import FILE_EXTENSIONS, MEDIA_TYPES, OutputFormat, encode_image, encode_npy, zip_files
from service.errors import InferenceError, TooManyImages
from service.labels import generator_input, resolve_labels
from service.latents import MAX_SEED, check_latents, draw_latents, random_seed
from service.pixels import make_grid, to_uint8
from service.responses import (
    ZIP_MEDIA_TYPE,
    binary_response,
    error_responses,
    json_images_response,
    wants_json,
)
from service.runner import run_in_chunks
from service.state import ServiceState

router = APIRouter(tags=["inference"])

GenerateLayout = Literal["images", "grid"]
#: A class: its index (0 .. classes-1) or its name on the model card.
ClassLabel = int | str
#: Longer strings cannot be class names worth echoing back in an error message.
MAX_CLASS_NAME = 200

#: `X-Labels` lists the labels only up to this many images; JSON `labels` always holds them all.
MAX_HEADER_LABELS = 64


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


async def respond_generate(request: GenerateRequest, accept: str | None, state: ServiceState) -> Response:
    """Serve a parsed `GenerateRequest`: draw latents, run the generator, encode and package the images."""
    settings = state.settings
    model = state.repository.get(request.model, "generator")
    card = model.card
    assert card.latent_size is not None
    n = request.count
    if n > settings.max_n:
        raise TooManyImages(f"{n} images asked for; this server returns at most {settings.max_n} per request")
    labels = resolve_labels(card, request.label, request.labels, n)
    seed: int | None = None
    if request.latents is not None:
        latents = check_latents(request.latents, card.latent_size)
    else:
        seed = request.seed if request.seed is not None else random_seed()
        latents = draw_latents(seed, n, card.latent_size, card.latent_distribution, request.truncation)
    with state.metrics.model_runs_in_flight.labels(card.name).track_inprogress():
        raw = await run_in_chunks(model.runner, generator_input(latents, labels, card))
    images = generated_pixels(raw, card)
    files = await state.in_encode_pool(
        _encode_all,
        images,
        request,
        _grid_columns(request, card, n),
        settings.png_compress_level,
        settings.jpeg_quality,
    )
    state.metrics.images_generated.labels(card.name).inc(n)

    headers = {"X-Model": card.name, "X-Images": str(n)}
    if seed is not None:
        headers["X-Seed"] = str(seed)
    if labels is not None and n <= MAX_HEADER_LABELS:
        headers["X-Labels"] = ",".join(str(label) for label in labels.tolist())
    if wants_json(accept):
        meta = {
            "model": card.name,
            "seed": seed,
            "n": n,
            "layout": request.layout,
            "labels": None if labels is None else labels.tolist(),
        }
        return json_images_response(files, request.format, headers, meta)
    if len(files) == 1:
        return binary_response(files[0], MEDIA_TYPES[request.format], headers)
    extension = FILE_EXTENSIONS[request.format]
    archive = await state.in_encode_pool(
        zip_files, [(f"{i:04d}.{extension}", d) for i, d in enumerate(files)]
    )
    headers["Content-Disposition"] = 'attachment; filename="images.zip"'
    return binary_response(archive, ZIP_MEDIA_TYPE, headers)


def generated_pixels(raw: np.ndarray, card: ModelCard) -> np.ndarray:
    """Generator output as (N, H, W, C) uint8: reshaped per the card, mapped from its output range."""
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
    return to_uint8(raw, card.output_range)


def _grid_columns(request: GenerateRequest, card: ModelCard, n: int) -> int | None:
    """The asked-for grid width; one class per row for a default class spread that fills rows."""
    if request.columns is not None:
        return request.columns
    condition = card.condition
    if condition is None or request.label is not None or request.labels is not None:
        return None
    return n // condition.classes if n % condition.classes == 0 else None


def _encode_all(
    images: np.ndarray, request: GenerateRequest, columns: int | None, png_level: int, quality: int
) -> list[bytes]:
    if request.layout == "grid":
        images = make_grid(images, columns)[None]
    if request.format == "npy":
        return [encode_npy(images[0] if request.layout == "grid" else images)]
    return [encode_image(i, request.format, png_compress_level=png_level, quality=quality) for i in images]


@router.post(
    "/generate",
    summary="Generate images",
    response_class=Response,
    responses=GENERATE_RESPONSES,
)
async def generate(
    state: StateDep,
    body: Annotated[GenerateRequest, Body(openapi_examples=GENERATE_EXAMPLES)] = GenerateRequest(),  # noqa: B008
    accept: AcceptHeader = None,
) -> Response:
    """Generate `n` images from a seed (random when absent) or from explicit latent vectors."""
    return await respond_generate(body, accept, state)
