"""`POST /upscale`: an image in (raw body or multipart `file`), the upscaled image out.

`serve_upscale` is the whole bytes → rendered path, for this route and SageMaker's `/invocations`:
the image header's size is checked against the server's limits (tiling bounds, output size, work)
before a pixel is decoded, and the request's deadline runs from when it arrived.
"""

from __future__ import annotations

import io
from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from service.decode import IMAGE_MEDIA_TYPES, DecodedImage, check_media_type, decode_image
from service.deps import AcceptHeader, FactsDep, StateDep
from service.encode import MEDIA_TYPES, OutputFormat
from service.facts import RequestFacts
from service.inference import UpscaleJob
from service.rendering import Rendered, Rendering, check_still_format, prefers_json, render_upscaled
from service.responses import error_responses
from service.state import ServiceState
from service.uploads import MULTIPART, read_upload, unless_disconnected

router = APIRouter(tags=["inference"])


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
        description="tile edge in input pixels, within the server's bounds (by default 64 to 512); 0 "
        "disables tiling, for images up to the server's untiled limit (default: server)",
    )
    overlap: int | None = Field(
        default=None,
        ge=0,
        le=256,
        description="context pixels around each tile, at most a fraction of it (by default a quarter) "
        "(default: server)",
    )


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


def upscale_job(options: UpscaleOptions) -> UpscaleJob:
    """The core's view of the options: model and tiling (the format is how to render it)."""
    return UpscaleJob(model=options.model, tile=options.tile, overlap=options.overlap)


async def serve_upscale(
    data: bytes,
    content_type: str | None,
    options: UpscaleOptions,
    rendering: Rendering,
    state: ServiceState,
    facts: RequestFacts,
    deadline: float | None = None,
) -> Rendered:
    """Decode the uploaded image, upscale it as `options` say, and render it as `rendering` says.

    `deadline` (event-loop time) is when the answer is due; None: the server's deadline from now.
    """
    check_media_type(content_type)
    job = replace(upscale_job(options), deadline=deadline if deadline is not None else state.core.deadline())
    # One hop to the encode pool reads the header, checks the plan and decodes.
    image = await state.in_encode_pool(decode_within_limits, data, job, state)
    check_still_format(rendering.format, image.alpha is not None)
    result = await state.core.upscale(image, job)
    facts.model = result.card.name
    return await state.in_encode_pool(render_upscaled, result, rendering)


@router.post(
    "/upscale",
    summary="Upscale an image",
    response_class=Response,
    responses={**UPSCALE_RESPONSES, **error_responses(401)},
    openapi_extra=UPSCALE_BODY,
)
async def upscale(
    request: Request,
    state: StateDep,
    facts: FactsDep,
    options: Annotated[UpscaleOptions, Query()],
    accept: AcceptHeader = None,
) -> Response:
    """Upscale a PNG, JPEG or WebP image; large images run in overlapping tiles."""
    deadline = state.core.deadline()
    data, content_type = await read_upload(request, state.settings.max_body_bytes)
    rendering = state.rendering(options.format, "json" if prefers_json(accept) else "auto")
    work = serve_upscale(data, content_type, options, rendering, state, facts, deadline)
    return (await unless_disconnected(request, work)).response()


def decode_within_limits(data: bytes, job: UpscaleJob, state: ServiceState) -> DecodedImage:
    """Decode the image, once its header's size has passed the server's limits for `job`."""
    size = header_size(data)
    if size is not None and size[0] * size[1] <= state.settings.max_image_pixels:
        # Refused from the header alone: a too costly request never costs its decode (an image
        # above max_image_pixels is decode_image's to refuse, as image_too_large).
        state.core.plan_upscale(job, *size)
    return decode_image(data, state.settings.max_image_pixels)


def header_size(data: bytes) -> tuple[int, int] | None:
    """The image's (width, height) from its header alone; None when unreadable (decoding says why)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Exception:  # Anything wrong with the bytes is `decode_image`'s to name, with its own error.
        return None
    return width, height
