"""The service's routers, one module per feature; `create_app` includes every router in `ROUTERS`."""

from __future__ import annotations

from fastapi import APIRouter

from service.routes import batch_transform, generate, health, metrics, models, page, sagemaker, upscale, v2

ROUTERS: list[APIRouter] = [
    generate.router,
    upscale.router,
    models.router,
    health.router,
    metrics.router,
    sagemaker.router,
    batch_transform.router,
    v2.router,
    page.router,
]
