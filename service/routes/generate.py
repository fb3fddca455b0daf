"""`POST /generate`: images from a generator, drawn from a seed or from explicit latent vectors.

`respond_generate` holds the whole request → response path so other routers (SageMaker's
`/invocations`) can call it with an already-parsed `GenerateRequest`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Body, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.card import ModelCard
from service.deps import AcceptHeader, StateDep
from service.encode import FILE_EXTENSIONS, MEDIA_TYPES, OutputFormat, encode_image, encode_npy, zip_files
from service.errors import InferenceError, TooManyImages
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

    @model_validator(mode="after")
    def _consistent(self) -> GenerateRequest:
        if self.latents is not None:
            if self.seed is not None:
                raise ValueError("give either seed or latents, not both")
            if self.truncation is not None:
                raise ValueError("truncation applies to drawn latents; it cannot be combined with latents")
            if self.n is not None and self.n != len(self.latents):
                raise ValueError(f"n is {self.n} but {len(self.latents)} latent vectors were given")
        return self

    @property
    def count(self) -> int:
        """How many images this request asks for."""
        if self.latents is not None:
            return len(self.latents)
        return self.n or 1


GENERATE_EXAMPLES: dict[str, Any] = {
    "one": {"summary": "One PNG from a seed", "value": {"n": 1, "seed": 42}},
    "zip": {"summary": "Eight PNGs in a zip", "value": {"model": "dcgan-cifar10", "n": 8, "seed": 7}},
    "grid": {"summary": "A 4x4 grid as one JPEG", "value": {"n": 16, "layout": "grid", "format": "jpeg"}},
    "truncated": {"summary": "Truncation trick", "value": {"n": 4, "seed": 1, "truncation": 0.7}},
    "latents": {"summary": "Explicit latents (latent_size values each)", "value": {"latents": [[0.0] * 100]}},
}

GENERATE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "One image (`image/*`), several images as a zip (`0000.png`, `0001.png`, ...), "
        "an `.npy` array, or JSON with base64 images when Accept is application/json. "
        "`X-Seed` gives the seed used (absent when latents were given), `X-Model` the model, "
        "`X-Images` the number of images.",
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
    seed: int | None = None
    if request.latents is not None:
        latents = check_latents(request.latents, card.latent_size)
    else:
        seed = request.seed if request.seed is not None else random_seed()
        latents = draw_latents(seed, n, card.latent_size, card.latent_distribution, request.truncation)
    with state.metrics.model_runs_in_flight.labels(card.name).track_inprogress():
        raw = await run_in_chunks(model.runner, latents)
    images = generated_pixels(raw, card)
    files = await state.in_encode_pool(
        _encode_all, images, request, settings.png_compress_level, settings.jpeg_quality
    )
    state.metrics.images_generated.labels(card.name).inc(n)

    headers = {"X-Model": card.name, "X-Images": str(n)}
    if seed is not None:
        headers["X-Seed"] = str(seed)
    if wants_json(accept):
        meta = {"model": card.name, "seed": seed, "n": n, "layout": request.layout}
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


def _encode_all(images: np.ndarray, request: GenerateRequest, png_level: int, quality: int) -> list[bytes]:
    if request.layout == "grid":
        images = make_grid(images)[None]
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
