"""The error body every route documents in OpenAPI: `{"error": {"code", "message", "fields"?}}`."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


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
        400: "Body that cannot be read (JSON that is not UTF-8), corrupt or truncated image, bad tensors "
        "or custom attributes",
        401: "API key missing or wrong (only when the server has keys; `WWW-Authenticate: Bearer`)",
        404: "Unknown model",
        406: "Accept names no output this route makes",
        413: "Body too large (any route, from Content-Length before reading), or input or output too large",
        415: "Unsupported media type",
        422: "Invalid parameters (including n too large, bad latents, wrong model kind)",
        500: "Inference failed",
        503: "Not ready, shutting down (`shutting_down`) or overloaded (`queue_full`); `Retry-After` when "
        "known",
        504: "Past the SageMaker mode's time limit",
    }
    return {s: {"model": ErrorResponse, "description": descriptions[s]} for s in statuses}
