"""`GET /health/live` (the process answers) and `GET /health/ready` (every model loaded and warm)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from service.deps import StateDep
from service.responses import error_responses

router = APIRouter(prefix="/health", tags=["health"])


class Liveness(BaseModel):
    """The process is up and its event loop answers."""

    status: Literal["alive"] = "alive"


class Readiness(BaseModel):
    """Every model is loaded and warmed up; each model's execution provider."""

    status: Literal["ready"] = "ready"
    device: str = Field(examples=["auto"])
    providers: dict[str, str] = Field(examples=[{"dcgan-cifar10": "CPUExecutionProvider"}])


@router.get("/live", summary="Liveness", responses=error_responses(401, 413))
async def live() -> Liveness:
    """200 as long as the process serves requests."""
    return Liveness()


@router.get("/ready", summary="Readiness", responses=error_responses(401, 413, 503))
async def ready(state: StateDep) -> Readiness:
    """200 once every model is loaded and warm, with each model's provider; 503 before and while stopping."""
    providers = {name: m.provider for name, m in sorted(state.repository.models.items())}
    return Readiness(device=state.settings.device, providers=providers)
