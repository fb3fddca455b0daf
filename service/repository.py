"""The model repository: every entry under the models directory, loaded into onnxruntime and warmed up.

Each subdirectory of the models directory is one entry (`<name>/model.json` + `<name>/model.onnx`,
as `gan-export` writes them). Entries are found by listing the directory, never by joining a
request's string onto a path: a request's model name is only ever a dictionary key here.

A broken entry stops the service from starting, with a message naming the entry: serving a
repository with a silently missing model would turn an operator's mistake into clients' 404s.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from service.batching import BatchingRunner, SyncModelRunner
from service.card import FP16_MODEL_FILENAME, ModelCard, ModelKind, is_valid_model_name, read_card
from service.errors import (
    InferenceError,
    ModelLoadError,
    ModelNotFound,
    ModelsDirMissing,
    ProviderUnavailable,
    WrongModelKind,
)
from service.labels import generator_input_width
from service.metrics import ServiceMetrics
from service.placement import enable_placement_profile, node_placement
from service.runner import ModelRunner, SessionRunner
from service.settings import Settings

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

BUILD_HINT = "build the default models with `make models`, or export your own with `gan-export`"


@dataclass(frozen=True)
class LoadedModel:
    """One repository entry with its live session and what it actually runs on."""

    card: ModelCard
    path: Path
    runner: ModelRunner
    providers: list[str]
    fp16: bool
    warmup_ms: float
    #: Op type -> nodes onnxruntime put on the CPU provider in a CUDA session (empty on CPU).
    cpu_nodes: dict[str, int] = field(default_factory=dict)

    @property
    def provider(self) -> str:
        """The execution provider that runs the graph (the first one the session got)."""
        return self.providers[0]


@dataclass(frozen=True)
class EntryFiles:
    """A repository entry found on disk, its card read and its files resolved."""

    card: ModelCard
    directory: Path
    model_path: Path
    fp16_path: Path | None


def scan_repository(models_dir: Path) -> list[EntryFiles]:
    """List and validate every entry without creating sessions; raise on the first broken one."""
    if not models_dir.is_dir():
        raise ModelsDirMissing(f"models directory {models_dir} does not exist: {BUILD_HINT}")
    entries = []
    for directory in sorted(p for p in models_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        entries.append(_read_entry(directory))
    if not entries:
        raise ModelsDirMissing(f"models directory {models_dir} holds no model entry: {BUILD_HINT}")
    return entries


def _read_entry(directory: Path) -> EntryFiles:
    name = directory.name
    if not is_valid_model_name(name):
        raise ModelLoadError(
            f"model entry {directory}: the name must be letters, digits, '.', '_' or '-' (at most 64)"
        )
    try:
        card = read_card(directory)
    except ValueError as exc:
        raise ModelLoadError(f"model entry {name}: {exc}") from exc
    if card.name != name:
        raise ModelLoadError(f"model entry {name}: its card names it {card.name!r}; rename one to match")
    model_path = _entry_file(directory, card.file)
    fp16_path = None
    if card.fp16 is not None and card.fp16.accepted:
        fp16_path = _entry_file(directory, card.fp16.file or FP16_MODEL_FILENAME)
    return EntryFiles(card=card, directory=directory, model_path=model_path, fp16_path=fp16_path)


def _entry_file(directory: Path, filename: str) -> Path:
    # Cards are files on disk and could be edited by hand: a file name must stay inside its entry.
    path = directory / filename
    if Path(filename).name != filename or filename in ("", ".", ".."):
        raise ModelLoadError(
            f"model entry {directory.name}: card file {filename!r} must be a plain file name"
        )
    if not path.is_file():
        raise ModelLoadError(f"model entry {directory.name}: {path} is missing")
    return path


def cuda_options(settings: Settings, kind: ModelKind) -> dict[str, Any]:
    """CUDA execution-provider options for one model kind."""
    search = (
        settings.cudnn_conv_algo_search_upscaler
        if kind == "upscaler"
        else settings.cudnn_conv_algo_search_generator
    )
    options: dict[str, Any] = {
        "device_id": settings.cuda_device_id,
        "arena_extend_strategy": settings.arena_extend_strategy,
        "cudnn_conv_algo_search": search,
        "prefer_nhwc": "1" if settings.cuda_prefer_nhwc else "0",
    }
    if settings.gpu_mem_limit is not None:
        options["gpu_mem_limit"] = settings.gpu_mem_limit
    return options


class ModelRepository:
    """The loaded models by name, with one default per kind."""

    def __init__(self, models: Mapping[str, LoadedModel], defaults: Mapping[ModelKind, str | None]) -> None:
        self.models = dict(models)
        self.defaults = dict(defaults)

    @classmethod
    def load(
        cls, settings: Settings, executor: Executor, metrics: ServiceMetrics | None = None
    ) -> ModelRepository:
        """Scan, load and warm every entry; raise a `StartupError` naming the first one that fails."""
        entries = scan_repository(settings.models_dir)
        cuda_built = CUDA in ort.get_available_providers()
        if settings.device == "cuda" and not cuda_built:
            raise ProviderUnavailable(
                "device=cuda but this onnxruntime has no CUDA execution provider "
                f"(it has {', '.join(ort.get_available_providers())}): install onnxruntime-gpu, "
                "or set GAN_SERVE_DEVICE=cpu"
            )
        if settings.device == "auto" and not cuda_built:
            log.warning("device=auto: this onnxruntime has no CUDA execution provider; running on CPU")
        models = {}
        for entry in entries:
            model = _load_entry(
                entry, settings, executor, metrics, use_cuda=settings.device != "cpu" and cuda_built
            )
            models[model.card.name] = model
        defaults: dict[ModelKind, str | None] = {}
        overrides: dict[ModelKind, str | None] = {
            "generator": settings.default_generator,
            "upscaler": settings.default_upscaler,
        }
        for kind, override in overrides.items():
            names = sorted(name for name, model in models.items() if model.card.kind == kind)
            if override is not None and override not in names:
                raise ModelLoadError(
                    f"default {kind} {override!r} is not a {kind} in {settings.models_dir} "
                    f"(there: {', '.join(names) or 'none'})"
                )
            # Trained weights before untrained demo entries, then by name: a request that names no
            # model should get the best the repository has, not noise.
            ranked = sorted(names, key=lambda name: (models[name].card.demo_weights, name))
            defaults[kind] = override or (ranked[0] if ranked else None)
        return cls(models, defaults)

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
        model = self.models.get(name)
        if model is None:
            raise ModelNotFound(f"no model named {name!r}; the loaded models are: {self._names()}")
        if model.card.kind != kind:
            raise WrongModelKind(
                f"model {name!r} is {_article(model.card.kind)}, this endpoint needs {_article(kind)}; "
                f"{kind}s loaded: {self._names(kind)}"
            )
        return model

    def _names(self, kind: ModelKind | None = None) -> str:
        names = [n for n, m in sorted(self.models.items()) if kind is None or m.card.kind == kind]
        return ", ".join(names) or "none"


def _article(kind: ModelKind) -> str:
    return f"an {kind}" if kind == "upscaler" else f"a {kind}"


def _load_entry(
    entry: EntryFiles,
    settings: Settings,
    executor: Executor,
    metrics: ServiceMetrics | None,
    *,
    use_cuda: bool,
) -> LoadedModel:
    card = entry.card
    fp16 = use_cuda and entry.fp16_path is not None
    path = entry.fp16_path if fp16 and entry.fp16_path is not None else entry.model_path
    providers: list[Any] = [CPU]
    if use_cuda:
        providers = [(CUDA, cuda_options(settings, card.kind)), CPU]
    # CUDA sessions profile their warm-up so the nodes onnxruntime left on the CPU can be reported.
    session = _session(entry, path, providers, settings, profile=use_cuda)
    profiled = use_cuda
    active = session.get_providers()
    if use_cuda and CUDA not in active:
        if settings.device == "cuda":
            raise ProviderUnavailable(
                f"model {card.name}: device=cuda but the session got only {', '.join(active)} "
                "(is a GPU visible and are the CUDA/cuDNN libraries installed?)"
            )
        log.warning("model %s: CUDA execution provider unavailable, falling back to CPU", card.name)
        if fp16:
            fp16, path = False, entry.model_path
            session = _session(entry, path, [CPU], settings)
            active = session.get_providers()
            profiled = False
    _check_io(entry, session)
    on_cuda = active[0] == CUDA
    io_binding = on_cuda if settings.io_binding is None else settings.io_binding
    session_runner = SessionRunner(
        session,
        card,
        executor,
        io_binding=io_binding,
        device="cuda" if on_cuda else "cpu",
        device_id=settings.cuda_device_id if on_cuda else 0,
    )
    runner: ModelRunner = session_runner
    warm: SyncModelRunner = session_runner
    buckets: tuple[int, ...] = ()
    # A graph with a fixed batch size cannot take merged batches; it runs request by request.
    if settings.batching and card.input_shape[0] is None:
        batching = BatchingRunner(
            session_runner,
            executor,
            max_batch_size=_max_batch_size(settings, card.kind, on_cuda),
            max_queue_delay_ms=settings.max_queue_delay_ms,
            max_queue_size=settings.max_queue_size,
            pad_to_buckets=on_cuda if settings.pad_batches is None else settings.pad_batches,
            batch_size_observer=metrics.batch_size.labels(card.name) if metrics else None,
            queue_time_observer=metrics.queue_seconds.labels(card.name) if metrics else None,
        )
        runner, warm, buckets = batching, batching, batching.buckets
    warmup_ms = _warm_up(warm, settings, buckets)
    cpu_nodes: dict[str, int] = {}
    if profiled:
        placement = node_placement(session)
        cpu_nodes = dict(placement.get(CPU, {})) if on_cuda else {}
        if cpu_nodes:
            log.warning(
                "model %s: %d nodes run on the CPU provider, each a device-host round trip per run: %s",
                card.name,
                sum(cpu_nodes.values()),
                ", ".join(f"{op} x{count}" for op, count in sorted(cpu_nodes.items())),
                extra={"model": card.name, "cpu_nodes": cpu_nodes},
            )
    log.info(
        "model %s (%s) on %s%s, warm-up %.1f ms",
        card.name,
        card.kind,
        active[0],
        " fp16" if fp16 else "",
        warmup_ms,
        extra={"model": card.name, "provider": active[0], "fp16": fp16, "warmup_ms": round(warmup_ms, 1)},
    )
    return LoadedModel(
        card=card,
        path=path,
        runner=runner,
        providers=active,
        fp16=fp16,
        warmup_ms=warmup_ms,
        cpu_nodes=cpu_nodes,
    )


def _max_batch_size(settings: Settings, kind: ModelKind, on_cuda: bool) -> int:
    if kind == "upscaler":
        return settings.max_tile_batch
    # The brief's H100 figures peak at batch 256; on CPU images/s stops growing well before that.
    return settings.max_batch_size or (256 if on_cuda else 64)


def _session(
    entry: EntryFiles, path: Path, providers: list[Any], settings: Settings, *, profile: bool = False
) -> ort.InferenceSession:
    options = ort.SessionOptions()
    if profile:
        enable_placement_profile(options, Path(tempfile.gettempdir()), entry.card.name)
    options.intra_op_num_threads = settings.intra_op_threads
    # Idle intra-op threads would spin for a while after each run, stealing the cores that HTTP
    # parsing and image encoding need on a small CPU host.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:
        raise ModelLoadError(f"model entry {entry.card.name}: onnxruntime cannot load {path}: {exc}") from exc


def _check_io(entry: EntryFiles, session: ort.InferenceSession) -> None:
    card = entry.card
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    problems = []
    if card.input_name not in inputs:
        problems.append(f"input {card.input_name!r} not in the graph's {sorted(inputs)}")
    elif len(inputs[card.input_name].shape) != len(card.input_shape):
        problems.append(f"input rank {len(inputs[card.input_name].shape)}, card shape {card.input_shape}")
    if card.output_name not in outputs:
        problems.append(f"output {card.output_name!r} not in the graph's {sorted(outputs)}")
    if problems:
        raise ModelLoadError(f"model entry {card.name}: card and graph disagree: {'; '.join(problems)}")


def warmup_inputs(card: ModelCard, settings: Settings, buckets: tuple[int, ...] = ()) -> list[np.ndarray]:
    """The inputs a model is warmed up with: common batch sizes, or full upscale tiles.

    `buckets` are the padded batch sizes a batching runner uses: warming every one of them means
    no request ever meets a shape the session (and cuDNN's algorithm search) has not seen.
    """
    fixed_batch = card.input_shape[0]
    if card.kind == "generator":
        wanted = set(buckets) or set(settings.warmup_batch_sizes)
        sizes = [fixed_batch] if fixed_batch is not None else sorted(wanted)
        return [np.zeros((b, generator_input_width(card)), np.float32) for b in sizes]
    assert card.input_channels is not None
    fixed_edge = card.input_shape[1 if card.layout == "NHWC" else 2]
    edge = fixed_edge or (settings.tile_size + 2 * settings.tile_overlap if settings.tile_size else 64)
    row = (edge, edge, card.input_channels) if card.layout == "NHWC" else (card.input_channels, edge, edge)
    return [np.zeros((b, *row), np.float32) for b in buckets or (1,)]


def _warm_up(runner: SyncModelRunner, settings: Settings, buckets: tuple[int, ...]) -> float:
    start = time.perf_counter()
    try:
        for inputs in warmup_inputs(runner.card, settings, buckets):
            runner.run_sync(inputs)
    except InferenceError as exc:
        raise ModelLoadError(f"model entry {runner.card.name}: warm-up failed: {exc.message}") from exc
    return (time.perf_counter() - start) * 1000
