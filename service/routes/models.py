"""`GET /models` (every loaded model, lean; the whole cards with `?full=true`) and `GET /models/{name}`.

What these show anyone who may call them never includes where or with what the model was built:
a card's `source.path` is cut to its file name (an export host's absolute path says nothing a
client needs and much an attacker likes), and the export tool versions (`tools`) appear only with
`?full=true`.
"""

from __future__ import annotations

import re
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
    wide_convs: int = Field(
        default=0,
        description="CPU only: convolutions with few output channels the session runs widened to fill "
        "the vector lanes (bit-identical outputs, checked at load; GAN_SERVE_WIDE_CONVS)",
    )
    warmup_ms: float
    memory_mib: float | None = Field(
        description="resident memory the process kept for this model after loading and warming it up "
        "(its growth while the model loaded; null where the OS does not say). Runs need more while they "
        "last: an upscaler's working memory grows back with its first tiles",
    )
    cpu_nodes: dict[str, int] = Field(
        description="CUDA only: op type -> nodes onnxruntime left on the CPU provider (device-host copies)"
    )
    card: ModelCard | None = Field(
        default=None,
        description="the model card, `source.path` cut to its file name: with `?full=true`, and always on "
        "GET /models/{name}; its `tools` (export tool versions) only with `?full=true`",
    )


class ModelsResponse(BaseModel):
    """The repository as loaded."""

    device: str = Field(description="the device setting: auto, cuda or cpu")
    cuda_active: bool = Field(description="at least one model runs on CUDA")
    defaults: dict[ModelKind, str | None]
    models: list[ModelInfo]


def file_name(path: str) -> str:
    """The last part of a POSIX or Windows path (a SavedModel directory's own name)."""
    return re.split(r"[\\/]", path.rstrip("\\/"))[-1] or path


def public_card(card: ModelCard, *, tools: bool) -> ModelCard:
    """The card as clients see it: the source's file name only; tool versions only when `tools`."""
    source = card.source.model_copy(update={"path": file_name(card.source.path)})
    return card.model_copy(update={"source": source, "tools": card.tools if tools else {}})


def model_info(
    model: LoadedModel, *, with_card: bool, full: bool, memory_bytes: int | None = None
) -> ModelInfo:
    """The model's listing; with its public card when `with_card`, tool versions in it when `full`."""
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
        wide_convs=model.wide_convs,
        warmup_ms=round(model.warmup_ms, 1),
        memory_mib=None if memory_bytes is None else round(memory_bytes / 2**20, 1),
        cpu_nodes=model.cpu_nodes,
        card=public_card(card, tools=full) if with_card else None,
    )


@router.get("/models", summary="List loaded models", responses=error_responses(401, 413, 422, 503))
async def list_models(
    state: StateDep,
    full: Annotated[
        bool, Query(description="include each model's card, with the export tool versions")
    ] = False,
) -> ModelsResponse:
    """Every model's version, kind, image size, active provider and warm-up time; the default per kind."""
    repository = state.repository
    models = [
        model_info(model, with_card=full, full=full, memory_bytes=repository.memory_bytes.get(name))
        for name, model in sorted(repository.models.items())
    ]
    return ModelsResponse(
        device=state.settings.device,
        cuda_active=any(m.provider == CUDA for m in models),
        defaults=state.repository.defaults,
        models=models,
    )


@router.get("/models/{name}", summary="One model", responses=error_responses(401, 404, 413, 422, 503))
async def get_model(
    state: StateDep,
    name: Annotated[str, Path(description="the model's name")],
    full: Annotated[bool, Query(description="include the export tool versions in the card")] = False,
) -> ModelInfo:
    """One model's listing with its card and readiness; 404 `model_not_found` for an unknown name."""
    repository = state.repository
    return model_info(
        repository.find(name), with_card=True, full=full, memory_bytes=repository.memory_bytes.get(name)
    )
