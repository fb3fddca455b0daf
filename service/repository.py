"""The model repository: every entry under the models directory, loaded, warmed up, one default per kind.

Finding the entries is `service.entries` (no onnxruntime); making each one ready to serve is
`service.sessions`. A request's model name is only ever a dictionary key here, never a path.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from concurrent.futures import Executor
from pathlib import Path

from service.batching import BatchingRunner
from service.card import ModelCard, ModelKind
from service.entries import scan_repository
from service.errors import ModelLoadError, ModelNotFound, WrongModelKind
from service.metrics import ServiceMetrics
from service.sessions import LoadedModel, load_model, use_cuda
from service.settings import Settings


class ModelRepository:
    """The loaded models by name, with one default per kind."""

    def __init__(
        self,
        models: Mapping[str, LoadedModel],
        defaults: Mapping[ModelKind, str | None],
        memory_bytes: Mapping[str, int] | None = None,
    ) -> None:
        self.models = dict(models)
        self.defaults = dict(defaults)
        #: Resident memory the process kept for each model after loading and warming it up.
        self.memory_bytes = dict(memory_bytes or {})

    @classmethod
    def load(
        cls, settings: Settings, executor: Executor, metrics: ServiceMetrics | None = None
    ) -> ModelRepository:
        """Scan, load and warm every entry; raise a `StartupError` naming the first one that fails."""
        entries = scan_repository(settings.models_dir)
        cuda = use_cuda(settings)
        defaults = choose_defaults([entry.card for entry in entries], settings)
        models: dict[str, LoadedModel] = {}
        memory: dict[str, int] = {}
        for entry in entries:
            # Models load one after another on this thread while nothing else runs, so the growth
            # of the process's resident memory is this model's (approximately: freed memory is reused).
            before = resident_bytes()
            models[entry.card.name] = load_model(entry, settings, executor, metrics, cuda=cuda)
            after = resident_bytes()
            if before is not None and after is not None:
                memory[entry.card.name] = max(0, after - before)
                if metrics is not None:
                    metrics.model_memory_bytes.labels(entry.card.name).set(memory[entry.card.name])
        return cls(models, defaults, memory)

    async def close(self) -> None:
        """Let batching runners finish what is queued, then refuse new work."""
        runners = [m.runner for m in self.models.values() if isinstance(m.runner, BatchingRunner)]
        await asyncio.gather(*(runner.close() for runner in runners))

    def get(self, name: str | None, kind: ModelKind) -> LoadedModel:
        """The model called `name` (or the default `kind`), checked to be of that kind."""
        if name is None:
            default = self.defaults.get(kind)
            if default is None:
                raise ModelNotFound(f"no {kind} is loaded; the loaded models are: {self._names()}")
            name = default
        model = self.find(name)
        if model.card.kind != kind:
            raise WrongModelKind(
                f"model {name!r} is {_article(model.card.kind)}, this endpoint needs {_article(kind)}; "
                f"{kind}s loaded: {self._names(kind)}"
            )
        return model

    def find(self, name: str) -> LoadedModel:
        """The model called `name`, of either kind."""
        model = self.models.get(name)
        if model is None:
            raise ModelNotFound(f"no model named {name!r}; the loaded models are: {self._names()}")
        return model

    def _names(self, kind: ModelKind | None = None) -> str:
        names = [n for n, m in sorted(self.models.items()) if kind is None or m.card.kind == kind]
        return ", ".join(names) or "none"


def resident_bytes() -> int | None:
    """This process's resident set size from /proc (None where there is no /proc)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def choose_defaults(cards: list[ModelCard], settings: Settings) -> dict[ModelKind, str | None]:
    """The model a request that names none gets, per kind: the setting, else the best entry."""
    defaults: dict[ModelKind, str | None] = {}
    overrides: dict[ModelKind, str | None] = {
        "generator": settings.default_generator,
        "upscaler": settings.default_upscaler,
    }
    for kind, override in overrides.items():
        of_kind = sorted((card for card in cards if card.kind == kind), key=lambda card: card.name)
        if override is not None and override not in {card.name for card in of_kind}:
            raise ModelLoadError(
                f"default {kind} {override!r} is not a {kind} in {settings.models_dir} "
                f"(there: {', '.join(card.name for card in of_kind) or 'none'})"
            )
        # Trained weights before untrained demo entries, then by name: a request that names no
        # model should get the best the repository has, not noise.
        ranked = sorted(of_kind, key=lambda card: (card.demo_weights, card.name))
        defaults[kind] = override or (ranked[0].name if ranked else None)
    return defaults


def _article(kind: ModelKind) -> str:
    return f"an {kind}" if kind == "upscaler" else f"a {kind}"
