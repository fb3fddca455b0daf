"""One repository entry made ready to serve: its onnxruntime session, runner, placement and warm-up.

`load_model` takes an entry `service.entries.scan_repository` found and does, in order:

1. `open_session`: create the session on CUDA or the CPU, check the providers it really got (fail
   for device=cuda, fall back with a warning for device=auto), and drop the fp16 graph off CUDA;
2. `check_io`: the card's input and output names and ranks against the graph; `check_card`: the
   card's input fields against the graph's input, then one probe run's output against every shape
   field and the output range (`service.card_check`), so a card that lies stops startup;
3. `make_runner`: a `SessionRunner`, wrapped in a `BatchingRunner` when batching is on and the
   graph's batch axis is dynamic;
4. `warm_up`: run the shapes requests will bring, so no client meets a cold session; then
   `release_warmup_memory` hands the CPU memory the warm-up left in onnxruntime's arena back;
5. `cpu_placement`: on CUDA, the nodes onnxruntime left on the CPU during warm-up (`GET /models`).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import math
import sys
import tempfile
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from service.batching import BatchingRunner, SyncModelRunner
from service.card import ModelCard, ModelKind, content_version
from service.card_check import PROBE_SEED, check_inputs, check_outputs, probe_inputs
from service.entries import EntryFiles
from service.errors import InferenceError, ModelLoadError, ProviderUnavailable
from service.labels import generator_input_width
from service.metrics import ServiceMetrics
from service.placement import enable_placement_profile, node_placement
from service.runner import ModelRunner, SessionRunner
from service.settings import Settings
from service.wide_convs import widen_narrow_convs

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
#: A widened graph is kept only when its fastest probe run takes at most this share of the original's.
WIDE_KEEP_RATIO = 0.95
#: Alternated probe runs of each graph when choosing between them.
WIDE_TIMING_ROUNDS = 3


@dataclass(frozen=True)
class LoadedModel:
    """One repository entry with its live session and what it actually runs on."""

    card: ModelCard
    path: Path
    version: str
    runner: ModelRunner
    providers: list[str]
    fp16: bool
    warmup_ms: float
    #: Op type -> nodes onnxruntime put on the CPU provider in a CUDA session (empty on CPU).
    cpu_nodes: dict[str, int] = field(default_factory=dict)
    #: The runner of the session itself (under any batching), for idle memory release.
    session: SessionRunner | None = field(default=None, repr=False, compare=False)
    #: Convolutions the CPU session runs widened (`service.wide_convs`).
    wide_convs: int = 0

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def provider(self) -> str:
        """The execution provider that runs the graph (the first one the session got)."""
        return self.providers[0]


@dataclass(frozen=True)
class OpenedSession:
    """A session and the facts of how it was opened."""

    session: ort.InferenceSession
    path: Path
    fp16: bool
    providers: list[str]
    #: The session profiles its runs (CUDA): `cpu_placement` can read where each node ran.
    profiled: bool
    #: The graph the session runs when it is not the file's: narrow convolutions widened (CPU).
    graph: bytes | None = field(default=None, repr=False)
    #: Convolutions the session runs widened (`service.wide_convs`).
    wide_convs: int = 0

    @property
    def model(self) -> Path | bytes:
        """What another session of the same graph is opened from."""
        return self.graph if self.graph is not None else self.path

    @property
    def on_cuda(self) -> bool:
        return self.providers[0] == CUDA


def use_cuda(settings: Settings) -> bool:
    """Whether sessions should ask for CUDA; refuses device=cuda on an onnxruntime built without it."""
    available = ort.get_available_providers()
    cuda_built = CUDA in available
    if settings.device == "cuda" and not cuda_built:
        raise ProviderUnavailable(
            "device=cuda but this onnxruntime has no CUDA execution provider "
            f"(it has {', '.join(available)}): install onnxruntime-gpu, or set GAN_SERVE_DEVICE=cpu"
        )
    if settings.device == "auto" and not cuda_built:
        log.warning("device=auto: this onnxruntime has no CUDA execution provider; running on CPU")
    return settings.device != "cpu" and cuda_built


def load_model(
    entry: EntryFiles,
    settings: Settings,
    executor: Executor,
    metrics: ServiceMetrics | None,
    *,
    cuda: bool,
) -> LoadedModel:
    """Open, check, wrap, warm up and place one entry; raise a `StartupError` naming it on failure."""
    card = entry.card
    opened = open_session(entry, settings, cuda=cuda)
    check_io(card, opened.session)
    check_card(card, opened.session)
    opened = widen_on_cpu(entry, opened, settings)
    lone = lone_session(entry, opened, settings)
    solo = lone_session(entry, opened, settings, spin=True) if lone is not None else None
    session_runner, runner, warm, buckets = make_runner(opened, card, settings, executor, metrics, lone, solo)
    warmup_ms = warm_up(warm, settings, buckets)
    # The lone and solo sessions, each with its runner (present together or not at all).
    companions = [
        (other, other_runner)
        for other, other_runner in ((lone, session_runner.lone), (solo, session_runner.solo))
        if other is not None and other_runner is not None
    ]
    for _, other_runner in companions:
        # One small run sets the session up and leaves its arena small.
        warmup_ms += warm_up(other_runner, settings, (), [_smallest_input(card)])
    release_warmup_memory(opened, card, settings)
    if not opened.on_cuda and cpu_mem_arena(settings, card.kind):
        session_runner.release_memory = partial(release_warmup_memory, opened, card, settings)
        for other, other_runner in companions:
            other_runner.release_memory = partial(release_warmup_memory, other, card, settings)
    if metrics is not None:
        # Observed from here on: warm-up runs are not requests.
        session_runner.run_observer = metrics.inference_seconds.labels(card.name)
        for _, other_runner in companions:
            other_runner.run_observer = session_runner.run_observer
    cpu_nodes = cpu_placement(opened, card)
    log.info(
        "model %s (%s) on %s%s, warm-up %.1f ms",
        card.name,
        card.kind,
        opened.providers[0],
        " fp16" if opened.fp16 else "",
        warmup_ms,
        extra={
            "model": card.name,
            "provider": opened.providers[0],
            "fp16": opened.fp16,
            "warmup_ms": round(warmup_ms, 1),
        },
    )
    return LoadedModel(
        card=card,
        path=opened.path,
        version=card.version or content_version(entry.model_path.read_bytes()),
        runner=runner,
        providers=opened.providers,
        fp16=opened.fp16,
        warmup_ms=warmup_ms,
        cpu_nodes=cpu_nodes,
        session=session_runner,
        wide_convs=opened.wide_convs,
    )


def open_session(entry: EntryFiles, settings: Settings, *, cuda: bool) -> OpenedSession:
    """The entry's session on CUDA (fp16 graph when accepted) or the CPU, checked against `device`."""
    card = entry.card
    fp16 = cuda and entry.fp16_path is not None
    path = entry.fp16_path if fp16 and entry.fp16_path is not None else entry.model_path
    providers: list[Any] = [(CUDA, cuda_options(settings, card.kind)), CPU] if cuda else [CPU]
    # CUDA sessions profile their warm-up so the nodes onnxruntime left on the CPU can be reported.
    session = _session(entry, path, providers, settings, profile=cuda)
    active = session.get_providers()
    if not cuda or CUDA in active:
        return OpenedSession(session, path, fp16, active, profiled=cuda)
    if settings.device == "cuda":
        raise ProviderUnavailable(
            f"model {card.name}: device=cuda but the session got only {', '.join(active)} "
            "(is a GPU visible and are the CUDA/cuDNN libraries installed?)"
        )
    log.warning("model %s: CUDA execution provider unavailable, falling back to CPU", card.name)
    if not fp16:
        return OpenedSession(session, path, False, active, profiled=True)
    # The fp16 graph is for the GPU: on the CPU the fp32 graph is both faster and exact.
    session = _session(entry, entry.model_path, [CPU], settings)
    return OpenedSession(session, entry.model_path, False, session.get_providers(), profiled=False)


def widen_on_cpu(entry: EntryFiles, opened: OpenedSession, settings: Settings) -> OpenedSession:
    """The CPU session on the graph with its narrow convolutions widened (`service.wide_convs`),
    when that graph answers probe inputs bit-identically and runs them faster; else `opened`."""
    card = entry.card
    if opened.on_cuda or not settings.wide_convs:
        return opened
    try:
        graph, count = widen_narrow_convs(opened.path.read_bytes())
        if not count:
            return opened
        wide = _session(entry, graph, [CPU], settings)
        probes = [probe_inputs(card)]
        probes.append(np.random.default_rng(PROBE_SEED).standard_normal(probes[0].shape).astype(np.float32))
        identical = all(
            np.array_equal(_run(opened.session, card, probe), _run(wide, card, probe)) for probe in probes
        )
    except Exception as exc:  # The file's own graph serves as it is: only speed is at stake.
        log.warning(
            "model %s: serving its convolutions as they are (widening failed: %s)",
            card.name,
            exc,
            extra={"model": card.name},
        )
        return opened
    if not identical:
        log.warning(
            "model %s: widened convolutions were not bit-identical here; serving the file's graph",
            card.name,
            extra={"model": card.name},
        )
        return opened
    before, after = _fastest_ms(opened.session, wide, card, probes[0])
    if after > WIDE_KEEP_RATIO * before:
        log.info(
            "model %s: %d narrow convolutions kept as they are (widened: %.2f ms, not faster than %.2f ms)",
            card.name,
            count,
            after,
            before,
            extra={"model": card.name},
        )
        return opened
    log.info(
        "model %s: %d narrow convolutions run widened on the CPU: bit-identical outputs, a probe run "
        "%.2f ms -> %.2f ms",
        card.name,
        count,
        before,
        after,
        extra={"model": card.name, "wide_convs": count},
    )
    return OpenedSession(wide, opened.path, False, wide.get_providers(), False, graph, count)


def _run(session: ort.InferenceSession, card: ModelCard, inputs: np.ndarray) -> np.ndarray:
    return np.asarray(session.run([card.output_name], {card.input_name: inputs})[0])


def _fastest_ms(
    first: ort.InferenceSession, second: ort.InferenceSession, card: ModelCard, inputs: np.ndarray
) -> tuple[float, float]:
    """The fastest of `WIDE_TIMING_ROUNDS` alternated runs of each session on `inputs`, in ms."""
    best = [math.inf, math.inf]
    for _ in range(WIDE_TIMING_ROUNDS):
        for index, session in enumerate((first, second)):
            start = time.perf_counter()
            session.run([card.output_name], {card.input_name: inputs})
            best[index] = min(best[index], (time.perf_counter() - start) * 1000)
    return best[0], best[1]


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


def _session(
    entry: EntryFiles,
    model: Path | bytes,
    providers: list[Any],
    settings: Settings,
    *,
    profile: bool = False,
    threads: int | None = None,
    spin: bool = False,
) -> ort.InferenceSession:
    options = ort.SessionOptions()
    if profile:
        enable_placement_profile(options, Path(tempfile.gettempdir()), entry.card.name)
    # Each of the model's streams runs with its share of the cores (`Settings.session_threads`).
    on_cuda = any(isinstance(p, tuple) and p[0] == CUDA for p in providers)
    options.intra_op_num_threads = threads or settings.session_threads(on_cuda)
    # Idle intra-op threads would spin for a while after each run, stealing the cores that HTTP
    # parsing and image encoding need on a small CPU host. With `spin` (the solo session) they
    # spin between the run's parallel sections, not sleep, and stop when the run ends.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    if spin:
        options.add_session_config_entry("session.force_spinning_stop", "1")
    options.enable_cpu_mem_arena = cpu_mem_arena(settings, entry.card.kind)
    options.log_severity_level = 3
    try:
        source = model if isinstance(model, bytes) else str(model)
        return ort.InferenceSession(source, sess_options=options, providers=providers)
    except Exception as exc:
        what = "its widened graph" if isinstance(model, bytes) else str(model)
        raise ModelLoadError(f"model entry {entry.card.name}: onnxruntime cannot load {what}: {exc}") from exc


def lone_session(
    entry: EntryFiles, opened: OpenedSession, settings: Settings, *, spin: bool = False
) -> OpenedSession | None:
    """A second CPU session with a thread per core, for requests that find their model idle.

    Only where the streams' sessions have fewer threads than there are cores, and the model is
    batched (`Settings.lone_threads`). Its arena is handed back when it idles, as the streams' is.
    With `spin`, the third: the solo session (`Settings.solo_threads`), whose threads spin while
    it runs, for a lone client's requests that the batcher runs on the event loop's thread.
    """
    threads = (settings.solo_threads if spin else settings.lone_threads)(opened.on_cuda)
    if not threads or not settings.batching or entry.card.input_shape[0] is not None:
        return None
    session = _session(entry, opened.model, [CPU], settings, threads=threads, spin=spin)
    return OpenedSession(
        session, opened.path, False, session.get_providers(), False, opened.graph, opened.wide_convs
    )


def cpu_mem_arena(settings: Settings, kind: ModelKind) -> bool:
    """Whether sessions of this model kind keep onnxruntime's CPU memory arena between runs.

    The arena keeps a run's working memory for the next run: without it every run maps and faults
    in its memory afresh, measured 10-17 % slower for srgan-x4 tiles on CPU (docs/performance.md,
    "Memory"), so both kinds keep it unless an operator trades that for memory.
    """
    return settings.cpu_mem_arena_upscaler if kind == "upscaler" else settings.cpu_mem_arena_generator


def release_warmup_memory(opened: OpenedSession, card: ModelCard, settings: Settings) -> None:
    """Hand back the CPU memory the warm-up left in the session's arena: one tiny shrinking run.

    An upscaler's warm-up tile leaves its whole working set in the arena (about 0.9 GB for
    srgan-x4's 288x288 tile), which onnxruntime never shrinks by itself: an idle service would hold
    it. After this run the arena keeps only what is in use; the first request grows it back once.
    CUDA sessions keep theirs (their working memory is on the device; not measured here).
    """
    if opened.on_cuda or not cpu_mem_arena(settings, card.kind):
        return
    options = ort.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    try:
        opened.session.run([card.output_name], {card.input_name: _smallest_input(card)}, options)
    except Exception as exc:  # Only memory is at stake: the model serves as well with its arena full.
        log.warning(
            "model %s: the warm-up memory stays in its arena (a run on the smallest input failed: %s)",
            card.name,
            exc,
            extra={"model": card.name},
        )
        return
    trim_c_heap()


def trim_c_heap() -> None:
    """Give the C heap's free pages back to the system (glibc's `malloc_trim`; elsewhere nothing).

    What the arena frees goes back to malloc, which returns it to the system only when it was
    mapped on its own: glibc raises its mmap threshold as a process frees large blocks (up to
    32 MiB), after which smaller chunks live in the heap and stay resident once freed unless the
    heap is trimmed. Called after each arena release (start-up and idle), never on a request.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None


def _smallest_input(card: ModelCard) -> np.ndarray:
    """One row of the smallest input the card allows: one latent, or a 16x16 image when not fixed."""
    batch = card.input_shape[0] or 1
    if card.kind == "generator":
        return np.zeros((batch, generator_input_width(card)), np.float32)
    assert card.input_channels is not None
    nhwc = card.layout == "NHWC"
    height = card.input_shape[1 if nhwc else 2] or 16
    width = card.input_shape[2 if nhwc else 3] or 16
    channels = card.input_channels
    return np.zeros(
        (batch, height, width, channels) if nhwc else (batch, channels, height, width), np.float32
    )


def check_io(card: ModelCard, session: ort.InferenceSession) -> None:
    """Refuse an entry whose card names inputs or outputs the graph does not have."""
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


def check_card(card: ModelCard, session: ort.InferenceSession) -> None:
    """Refuse a card the graph's input or one probe run's output contradicts (`service.card_check`)."""
    graph_input = next(i for i in session.get_inputs() if i.name == card.input_name)
    check_inputs(card, graph_input.shape)
    inputs = probe_inputs(card)
    try:
        output = _run(session, card, inputs)
    except Exception as exc:
        # onnxruntime's own words say what broke; a traceback would say nothing more to an operator.
        raise ModelLoadError(
            f"model entry {card.name}: the model fails on the input its card describes "
            f"(float32 {list(inputs.shape)}; check input_shape, input_channels and layout): {exc}"
        ) from exc
    check_outputs(card, inputs, output)


def make_runner(
    opened: OpenedSession,
    card: ModelCard,
    settings: Settings,
    executor: Executor,
    metrics: ServiceMetrics | None,
    lone: OpenedSession | None = None,
    solo: OpenedSession | None = None,
) -> tuple[SessionRunner, ModelRunner, SyncModelRunner, tuple[int, ...]]:
    """The session's runner, the runner requests use, the one to warm up, and its padded batch sizes.

    `lone` (`lone_session`) becomes the batching runner's runner for requests on an idle model,
    `solo` (`lone_session(spin=True)`) its runner for those of a lone client.
    """
    on_cuda = opened.on_cuda
    io_binding = on_cuda if settings.io_binding is None else settings.io_binding
    session_runner = SessionRunner(
        opened.session,
        card,
        executor,
        io_binding=io_binding,
        device="cuda" if on_cuda else "cpu",
        device_id=settings.cuda_device_id if on_cuda else 0,
        concurrent_runs=settings.streams(on_cuda),
    )
    # A graph with a fixed batch size cannot take merged batches; it runs request by request.
    if not settings.batching or card.input_shape[0] is not None:
        return session_runner, session_runner, session_runner, ()
    if lone is not None:
        session_runner.lone = SessionRunner(lone.session, card, executor)
    if solo is not None:
        session_runner.solo = SessionRunner(solo.session, card, executor)
    batching = BatchingRunner(
        session_runner,
        executor,
        max_batch_size=max_batch_size(settings, card.kind, on_cuda),
        max_queue_delay_ms=settings.max_queue_delay_ms,
        max_queue_size=settings.max_queue_size,
        concurrent_batches=settings.streams(on_cuda),
        # Tiles cost the same per tile in any batch (srgan-x4: 91 ms alone, 93 in twos): no wait.
        min_batch_while_busy=settings.min_batch_while_busy if card.kind == "generator" else 1,
        lone=session_runner.lone,
        solo=session_runner.solo,
        solo_max_ms=settings.solo_inline_max_ms,
        pad_to_buckets=on_cuda if settings.pad_batches is None else settings.pad_batches,
        batch_size_observer=metrics.batch_size.labels(card.name) if metrics else None,
        queue_time_observer=metrics.queue_wait_seconds.labels(card.name) if metrics else None,
    )
    if metrics is not None:
        metrics.queued_requests.labels(card.name).set_function(lambda: batching.queued_requests)
    return session_runner, batching, batching, batching.buckets


def max_batch_size(settings: Settings, kind: ModelKind, on_cuda: bool) -> int:
    """Most rows in one batched session run: tiles for upscalers, images for generators."""
    if kind == "upscaler":
        return settings.max_tile_batch
    # The brief's H100 figures peak at batch 256; on CPU images/s stops growing well before that.
    return settings.max_batch_size or (256 if on_cuda else 64)


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


def warm_up(
    runner: SyncModelRunner,
    settings: Settings,
    buckets: tuple[int, ...],
    inputs_list: list[np.ndarray] | None = None,
) -> float:
    """Run every warm-up input (or `inputs_list`) once; the milliseconds it took."""
    start = time.perf_counter()
    try:
        for inputs in inputs_list or warmup_inputs(runner.card, settings, buckets):
            runner.run_sync(inputs)
    except InferenceError as exc:
        raise ModelLoadError(f"model entry {runner.card.name}: warm-up failed: {exc.message}") from exc
    return (time.perf_counter() - start) * 1000


def cpu_placement(opened: OpenedSession, card: ModelCard) -> dict[str, int]:
    """On CUDA, op type -> nodes that ran on the CPU provider during warm-up, logged as a warning."""
    if not opened.profiled:
        return {}
    placement = node_placement(opened.session)
    cpu_nodes = dict(placement.get(CPU, {})) if opened.on_cuda else {}
    if cpu_nodes:
        log.warning(
            "model %s: %d nodes run on the CPU provider, each a device-host round trip per run: %s",
            card.name,
            sum(cpu_nodes.values()),
            ", ".join(f"{op} x{count}" for op, count in sorted(cpu_nodes.items())),
            extra={"model": card.name, "cpu_nodes": cpu_nodes},
        )
    return cpu_nodes
