"""The service's routers, one module per feature; `create_app` includes every router in `ROUTERS`."""

from __future__ import annotations

from fastapi import APIRouter

from service.routes import generate, health, metrics, models, sagemaker, upscale, v2

ROUTERS: list[APIRouter] = [
    generate.router,
    upscale.router,
    models.router,
    health.router,
    metrics.router,
    sagemaker.router,
    v2.router,
]
