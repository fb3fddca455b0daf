"""`GET /models` (every loaded model, lean; the whole cards with `?full=true`) and `GET /models/{name}`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from service.card import ModelCard, ModelKind
from service.deps import StateDep
from service.responses import error_responses
from service.sessions import CUDA, LoadedModel

router = APIRouter(tags=["models"])


class ModelInfo(BaseModel):
    """One loaded model: what it makes, what it really runs on, and (when asked) its whole card."""

    name: str
    version: str = Field(description="`--version` at export, else a short hash of the model's content")
    kind: ModelKind
    description: str
    ready: bool = Field(description="loaded, warmed up and taking requests")
    demo_weights: bool = Field(description="untrained demo weights: the outputs only show the pipeline works")
    height: int | None = Field(description="generators: image height")
    width: int | None = Field(description="generators: image width")
    channels: int = Field(description="channels of the output image (1 = grayscale)")
    latent_size: int | None = Field(description="generators: values per latent vector")
    classes: int | None = Field(
        description="conditional generators: number of classes (labels 0 .. classes-1)"
    )
    class_names: list[str] | None = Field(
        description="conditional generators: the name of each class, if any"
    )
    scale: int | None = Field(description="upscalers: the upscale factor")
    provider: str = Field(
        description="execution provider that runs the graph", examples=["CPUExecutionProvider"]
    )
    providers: list[str] = Field(description="every provider the session got, in priority order")
    fp16: bool = Field(description="the fp16 graph is in use (CUDA only, when the card accepts it)")
    warmup_ms: float
    cpu_nodes: dict[str, int] = Field(
        description="CUDA only: op type -> nodes onnxruntime left on the CPU provider (device-host copies)"
    )
    card: ModelCard | None = Field(
        default=None, description="the whole model card: with `?full=true`, and always on GET /models/{name}"
    )


class ModelsResponse(BaseModel):
    """The repository as loaded."""

    device: str = Field(description="the device setting: auto, cuda or cpu")
    cuda_active: bool = Field(description="at least one model runs on CUDA")
    defaults: dict[ModelKind, str | None]
    models: list[ModelInfo]


def model_info(model: LoadedModel, *, full: bool) -> ModelInfo:
    """The model's listing; with its whole card when `full`."""
    card = model.card
    condition = card.condition
    return ModelInfo(
        name=card.name,
        version=model.version,
        kind=card.kind,
        description=card.description,
        ready=True,  # a repository only holds models that loaded and warmed up
        demo_weights=card.demo_weights,
        height=card.height,
        width=card.width,
        channels=card.channels,
        latent_size=card.latent_size,
        classes=condition.classes if condition else None,
        class_names=condition.class_names if condition else None,
        scale=card.scale,
        provider=model.provider,
        providers=model.providers,
        fp16=model.fp16,
        warmup_ms=round(model.warmup_ms, 1),
        cpu_nodes=model.cpu_nodes,
        card=card if full else None,
    )


@router.get("/models", summary="List loaded models", responses=error_responses(503))
async def list_models(
    state: StateDep,
    full: Annotated[bool, Query(description="include each model's whole card")] = False,
) -> ModelsResponse:
    """Every model's version, kind, image size, active provider and warm-up time; the default per kind."""
    models = [model_info(model, full=full) for _, model in sorted(state.repository.models.items())]
    return ModelsResponse(
        device=state.settings.device,
        cuda_active=any(m.provider == CUDA for m in models),
        defaults=state.repository.defaults,
        models=models,
    )


@router.get("/models/{name}", summary="One model", responses=error_responses(404, 503))
async def get_model(
    state: StateDep,
    name: Annotated[str, Path(description="the model's name")],
) -> ModelInfo:
    """One model's listing with its whole card and readiness; 404 `model_not_found` for an unknown name."""
    return model_info(state.repository.find(name), full=True)
