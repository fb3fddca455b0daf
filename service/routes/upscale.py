"""`POST /upscale`: an image in (raw body or multipart `file`), the upscaled image out.

`respond_upscale` holds the whole bytes → response path so other routers (SageMaker's
`/invocations`) can call it with the body they already read and parsed options.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.datastructures import UploadFile
from starlette.types import Message

from service.decode import IMAGE_MEDIA_TYPES, check_media_type, decode_image, media_type
from service.deps import AcceptHeader, StateDep
from service.encode import MEDIA_TYPES, OutputFormat, encode_image, supports_alpha
from service.errors import InvalidImage, InvalidRequest, OutputTooLarge, PayloadTooLarge
from service.responses import binary_response, error_responses, json_images_response, wants_json
from service.state import ServiceState
from service.tiling import upscale_alpha, upscale_color, upscaled_size

router = APIRouter(tags=["inference"])

MULTIPART = "multipart/form-data"


class UpscaleOptions(BaseModel):
    """How to upscale: which model, output format, and tiling (query parameters)."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(
        default=None, max_length=64, description="upscaler name (default: the repository's default upscaler)"
    )
    format: OutputFormat = Field(default="png", description="png, jpeg, webp, or npy (uint8 H x W x C array)")
    tile: int | None = Field(
        default=None,
        ge=0,
        le=4096,
        description="tile edge in input pixels; 0 disables tiling (default: server)",
    )
    overlap: int | None = Field(
        default=None, ge=0, le=256, description="context pixels around each tile (default: server)"
    )

    @field_validator("tile")
    @classmethod
    def _tile_size(cls, tile: int | None) -> int | None:
        if tile is not None and 0 < tile < 16:
            raise ValueError("tile must be 0 (no tiling) or at least 16")
        return tile


UPSCALE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The image: raw PNG, JPEG or WebP bytes, or a multipart form with a `file` field.",
        "content": {
            **{kind: {"schema": {"type": "string", "format": "binary"}} for kind in IMAGE_MEDIA_TYPES},
            MULTIPART: {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
        },
    }
}

UPSCALE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The upscaled image in the input's mode family (L, LA, RGB, RGBA). "
        "Headers: `X-Model`, `X-Tiles`, `X-Input-Size` and `X-Output-Size` (WxH).",
        "content": {
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            "image/webp": {"schema": {"type": "string", "format": "binary"}},
            MEDIA_TYPES["npy"]: {"schema": {"type": "string", "format": "binary"}},
            "application/json": {
                "example": {
                    "model": "srgan-x4",
                    "width": 1024,
                    "height": 1024,
                    "format": "png",
                    "images": [{"index": 0, "media_type": "image/png", "data": "iVBORw0KGgo..."}],
                }
            },
        },
    },
    **error_responses(400, 404, 413, 415, 422, 500, 503),
}


async def respond_upscale(
    data: bytes, content_type: str | None, options: UpscaleOptions, accept: str | None, state: ServiceState
) -> Response:
    """Serve one upscale: check and decode the image, run the model tile by tile, encode the result."""
    settings = state.settings
    check_media_type(content_type)
    if len(data) > settings.max_body_bytes:
        raise _body_too_large(settings.max_body_bytes)
    model = state.repository.get(options.model, "upscaler")
    card = model.card
    assert card.scale is not None
    image = await state.in_encode_pool(decode_image, data, settings.max_image_pixels)
    out_height, out_width = upscaled_size(card, image.height, image.width)
    if out_height * out_width > settings.max_output_pixels:
        raise OutputTooLarge(
            f"a {image.width}x{image.height} image upscaled x{card.scale} would be {out_width}x{out_height} "
            f"= {out_width * out_height} pixels; the limit is {settings.max_output_pixels} pixels"
        )
    if image.alpha is not None and not supports_alpha(options.format):
        raise InvalidRequest(
            f"format={options.format} cannot carry the image's alpha channel: ask for png or webp"
        )

    tile = settings.tile_size if options.tile is None else options.tile
    overlap = settings.tile_overlap if options.overlap is None else options.overlap
    with state.metrics.model_runs_in_flight.labels(card.name).track_inprogress():
        color, tiles = await upscale_color(image.color, model.runner, tile=tile, overlap=overlap)
    pixels = color
    if image.alpha is not None:
        alpha = await state.in_encode_pool(upscale_alpha, image.alpha, card.scale)
        pixels = np.concatenate([color, alpha[..., None]], axis=2)
    encoded = await state.in_encode_pool(
        _encode, pixels, options.format, settings.png_compress_level, settings.jpeg_quality
    )
    state.metrics.pixels_upscaled.labels(card.name).inc(out_height * out_width)

    headers = {
        "X-Model": card.name,
        "X-Tiles": str(tiles),
        "X-Input-Size": f"{image.width}x{image.height}",
        "X-Output-Size": f"{out_width}x{out_height}",
    }
    if wants_json(accept):
        meta = {"model": card.name, "width": out_width, "height": out_height}
        return json_images_response([encoded], options.format, headers, meta)
    return binary_response(encoded, MEDIA_TYPES[options.format], headers)


def _encode(pixels: np.ndarray, image_format: OutputFormat, png_level: int, quality: int) -> bytes:
    return encode_image(pixels, image_format, png_compress_level=png_level, quality=quality)


def _body_too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the request body is larger than the limit of {limit} bytes")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused from Content-Length before reading and while streaming past `limit`."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _body_too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _body_too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_upload(request: Request, limit: int) -> tuple[bytes, str | None]:
    """The uploaded image and its Content-Type, from a raw body or a multipart `file` field."""
    content_type = request.headers.get("content-type")
    if media_type(content_type) != MULTIPART:
        check_media_type(content_type)
        return await read_body(request, limit), content_type
    body = await read_body(request, limit)

    async def replay() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    # The body is already read (and size-checked): parse the form from memory.
    form = await Request(request.scope, replay).form(max_files=1, max_fields=0)
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise InvalidImage("the multipart form has no 'file' field holding the image")
    try:
        data = await upload.read()
    finally:
        await form.close()
    part_type = upload.content_type
    # Browsers and curl label unknown files application/octet-stream: the bytes decide then.
    return data, part_type


@router.post(
    "/upscale",
    summary="Upscale an image",
    response_class=Response,
    responses=UPSCALE_RESPONSES,
    openapi_extra=UPSCALE_BODY,
)
async def upscale(
    request: Request,
    state: StateDep,
    options: Annotated[UpscaleOptions, Query()],
    accept: AcceptHeader = None,
) -> Response:
    """Upscale a PNG, JPEG or WebP image; large images run in overlapping tiles."""
    data, content_type = await read_upload(request, state.settings.max_body_bytes)
    return await respond_upscale(data, content_type, options, accept, state)
