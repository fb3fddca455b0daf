"""`GET /models`: every loaded model's card, where it runs, and the default per kind."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from service.card import ModelCard, ModelKind
from service.deps import StateDep
from service.responses import error_responses
from service.sessions import CUDA

router = APIRouter(tags=["models"])


class ModelInfo(BaseModel):
    """One loaded model: its card and what it really runs on."""

    name: str
    kind: ModelKind
    description: str
    demo_weights: bool = Field(description="untrained demo weights: the outputs only show the pipeline works")
    provider: str = Field(
        description="execution provider that runs the graph", examples=["CPUExecutionProvider"]
    )
    providers: list[str] = Field(description="every provider the session got, in priority order")
    fp16: bool = Field(description="the fp16 graph is in use (CUDA only, when the card accepts it)")
    warmup_ms: float
    cpu_nodes: dict[str, int] = Field(
        description="CUDA only: op type -> nodes onnxruntime left on the CPU provider (device-host copies)"
    )
    card: ModelCard


class ModelsResponse(BaseModel):
    """The repository as loaded."""

    device: str = Field(description="the device setting: auto, cuda or cpu")
    cuda_active: bool = Field(description="at least one model runs on CUDA")
    defaults: dict[ModelKind, str | None]
    models: list[ModelInfo]


@router.get("/models", summary="List loaded models", responses=error_responses(503))
async def list_models(state: StateDep) -> ModelsResponse:
    """Every model's card, active provider and warm-up time, with the default model per kind."""
    models = [
        ModelInfo(
            name=name,
            kind=m.card.kind,
            description=m.card.description,
            demo_weights=m.card.demo_weights,
            provider=m.provider,
            providers=m.providers,
            fp16=m.fp16,
            warmup_ms=round(m.warmup_ms, 1),
            cpu_nodes=m.cpu_nodes,
            card=m.card,
        )
        for name, m in sorted(state.repository.models.items())
    ]
    return ModelsResponse(
        device=state.settings.device,
        cuda_active=any(m.provider == CUDA for m in models),
        defaults=state.repository.defaults,
        models=models,
    )
