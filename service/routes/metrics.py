"""`GET /metrics`: Prometheus text exposition of this app's registry."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.responses import error_responses

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {"example": "gan_serve_ready 1.0\n"}}},
        **error_responses(401, 413),
    },
)
async def metrics(request: Request) -> Response:
    """Requests and latency by route and model, images generated, pixels upscaled, errors, in-flight work."""
    return Response(content=request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
