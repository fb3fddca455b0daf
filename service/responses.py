"""Building responses: binary images by default, base64 JSON only when the client's Accept asks."""

from __future__ import annotations

import base64
from typing import Any

from fastapi import Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from service.encode import MEDIA_TYPES, OutputFormat

JSON_MEDIA_TYPE = "application/json"
ZIP_MEDIA_TYPE = "application/zip"


def wants_json(accept: str | None) -> bool:
    """True when Accept lists application/json (with q > 0) and prefers it to every image type."""
    if not accept:
        return False
    best_json, best_other = 0.0, 0.0
    for part in accept.split(","):
        kind, *params = (p.strip() for p in part.split(";"))
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if kind.lower() == JSON_MEDIA_TYPE:
            best_json = max(best_json, quality)
        elif kind.lower() not in ("*/*", "application/*"):
            best_other = max(best_other, quality)
    return best_json > 0 and best_json >= best_other


def binary_response(content: bytes, media_type: str, headers: dict[str, str]) -> Response:
    """Raw bytes with their media type and the result headers."""
    return Response(content=content, media_type=media_type, headers=headers)


def json_images_response(
    files: list[bytes], image_format: OutputFormat, headers: dict[str, str], meta: dict[str, Any]
) -> JSONResponse:
    """`{"images": [{"index", "media_type", "data"}], ...meta}` with base64 data."""
    images = [
        {"index": i, "media_type": MEDIA_TYPES[image_format], "data": base64.b64encode(data).decode("ascii")}
        for i, data in enumerate(files)
    ]
    return JSONResponse({**meta, "format": image_format, "images": images}, headers=headers)


class ErrorDetail(BaseModel):
    """What went wrong: a stable machine-readable code and a message for a person."""

    code: str = Field(examples=["model_not_found"])
    message: str = Field(examples=["no model named 'nope'; the loaded models are: dcgan-cifar10, srgan-x4"])
    fields: list[dict[str, Any]] | None = Field(
        default=None, description="for request validation errors: each invalid field and why"
    )


class ErrorResponse(BaseModel):
    """The body of every error response."""

    error: ErrorDetail


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the error statuses a route can return."""
    descriptions = {
        400: "Corrupt or truncated image",
        404: "Unknown model",
        413: "Body, input image or output image too large",
        415: "Unsupported media type",
        422: "Invalid parameters (including n too large, bad latents, wrong model kind)",
        500: "Inference failed",
        503: "Not ready",
    }
    return {s: {"model": ErrorResponse, "description": descriptions[s]} for s in statuses}
