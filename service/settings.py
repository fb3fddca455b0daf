"""Service settings: one pydantic-settings class, read from `GAN_SERVE_*` environment variables.

Every field is validated when the service starts; `gan-serve` turns a bad value into a one-line
message and exit status 2. docs/service.md lists every variable.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Device = Literal["auto", "cuda", "cpu"]
ConvAlgoSearch = Literal["EXHAUSTIVE", "HEURISTIC", "DEFAULT"]
ArenaExtendStrategy = Literal["kNextPowerOfTwo", "kSameAsRequested"]
LogFormat = Literal["json", "text"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


def cpu_cores() -> int:
    """The cores this process may use: its CPU affinity, narrowed by a cgroup CPU quota, at least 1.

    A container started with `--cpus 2` on a 16-core host sees 16 cores but gets the time of 2.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    with contextlib.suppress(OSError, ValueError):
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, math.ceil(int(quota) / int(period)))
    return max(1, cores)


#: SageMaker's variable for the port it wants the container to listen on.
SAGEMAKER_PORT_VARIABLE = "SAGEMAKER_BIND_TO_PORT"

#: How SageMaker runs the container: real-time endpoint, asynchronous endpoint, Batch Transform job,
#: serverless endpoint. Each has its own payload and time limits (docs/deploy.md).
SageMakerMode = Literal["realtime", "async", "batch", "serverless"]
#: SageMaker's time limit for one /invocations, by mode; batch: the job's InvocationsTimeoutInSeconds
#: default (gan-deploy transform sets GAN_SERVE_INVOCATION_TIMEOUT_S to the job's own).
SAGEMAKER_TIMEOUTS: dict[SageMakerMode, float] = {
    "realtime": 60,
    "async": 3600,
    "batch": 600,
    "serverless": 60,
}
#: SageMaker's payload limit per mode, bytes (batch: MaxPayloadInMB, a setting).
SAGEMAKER_PAYLOADS: dict[SageMakerMode, int] = {
    "realtime": 6_000_000,
    "async": 1_000_000_000,
    "serverless": 4_000_000,
}
DEFAULT_MAX_BODY_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True)
class SageMakerLimits:
    """What SageMaker allows one /invocations in the container's mode: body size and time."""

    mode: SageMakerMode
    max_payload_bytes: int
    timeout_s: float


class Settings(BaseSettings):
    """Everything an operator can tune; the defaults suit a local CPU run."""

    model_config = SettingsConfigDict(
        env_prefix="GAN_SERVE_", extra="ignore", validate_default=True, frozen=True
    )

    models_dir: Path = Field(default=Path("models"), description="model repository directory")
    host: str = Field(default="127.0.0.1", description="listen address; the container sets 0.0.0.0")
    port: int = Field(default=8000, ge=1, le=65535, description="listen port")

    device: Device = Field(default="auto", description="execution provider: auto, cuda or cpu")
    cuda_device_id: int = Field(default=0, ge=0, description="CUDA device ordinal")
    gpu_mem_limit: int | None = Field(
        default=None, ge=1 << 20, description="CUDA arena limit in bytes (unset: no limit)"
    )
    arena_extend_strategy: ArenaExtendStrategy = Field(
        default="kSameAsRequested",
        description="how the CUDA arena grows; kSameAsRequested avoids doubling past what tiles need",
    )
    cudnn_conv_algo_search_generator: ConvAlgoSearch = Field(
        default="HEURISTIC",
        description="cuDNN algorithm search for generators: every new batch size is a new shape",
    )
    cudnn_conv_algo_search_upscaler: ConvAlgoSearch = Field(
        default="HEURISTIC",
        description="cuDNN algorithm search for upscalers: input sizes vary per request",
    )
    cuda_prefer_nhwc: bool = Field(
        default=True, description="CUDA EP prefer_nhwc: measured 2x faster convolutions on an H100"
    )
    intra_op_threads: int = Field(
        default=0,
        ge=0,
        le=256,
        description="onnxruntime threads per session run (0: the cores divided by the streams, at least 1)",
    )
    concurrent_batches: int = Field(
        default=0,
        ge=0,
        le=64,
        description="batches of one model running at once, its streams (0: one per core on CPU, 1 on CUDA)",
    )
    lone_runs_all_cores: bool = Field(
        default=True,
        description="on CPU, a request that finds its model idle runs on a second session with a thread "
        "per core (when the streams have fewer); off: one session per model, less memory",
    )
    solo_inline_max_ms: float = Field(
        default=10.0,
        ge=0,
        le=1000,
        description="on CPU, a request from the server's only open connection that finds its model idle "
        "runs in the event loop's own thread, on a third session whose threads spin during the run, "
        "while such runs of the model take at most this many ms (0: off, no third session)",
    )
    cpu_mem_arena_generator: bool = Field(
        default=True,
        description="generators keep onnxruntime's CPU memory arena between runs (off: less memory, slower)",
    )
    wide_convs: bool = Field(
        default=True,
        description="on the CPU, run convolutions with few output channels (an image model's last "
        "layer) widened to fill onnxruntime's vector lanes (service/wide_convs.py); kept per model only "
        "when its outputs are bit-identical on probe inputs and a probe run is faster",
    )
    cpu_mem_arena_upscaler: bool = Field(
        default=True,
        description="upscalers keep onnxruntime's CPU memory arena between runs: off frees each run's "
        "working memory (about 0.9 GB per 288x288 tile for srgan-x4) at 10-17 % of upscale throughput",
    )
    arena_idle_release_s: float = Field(
        default=2.0,
        ge=0,
        le=3600,
        description="seconds a CPU session sits idle after running before its arena's unused memory "
        "is handed back (0: never; under load a session is never idle that long)",
    )

    max_n: int = Field(default=64, ge=1, le=4096, description="most images one /generate may ask for")
    max_body_bytes: int = Field(
        default=DEFAULT_MAX_BODY_BYTES,
        ge=1024,
        description="largest request body (default: 20 MiB, or the SageMaker mode's payload limit if larger)",
    )
    max_body_bytes_in_flight: int = Field(
        default=256 * 1024 * 1024,
        ge=1024,
        description="request bodies held at once, all connections together (never below max_body_bytes); "
        "past it a request gets 503 bodies_in_flight",
    )
    max_image_pixels: int = Field(
        default=4096 * 4096, ge=1, description="largest input image (width x height) /upscale decodes"
    )
    max_output_pixels: int = Field(
        default=8192 * 8192, ge=1, description="largest output image (width x height) /upscale makes"
    )
    tile_size: int = Field(default=256, ge=0, description="upscale tile edge in input pixels (0: no tiling)")
    tile_overlap: int = Field(default=16, ge=0, description="context pixels around each tile")
    upscale_min_tile: int = Field(
        default=64,
        ge=16,
        description="smallest tile edge a request may ask for: below it per-run overhead and the overlap "
        "dominate the work",
    )
    upscale_max_tile: int = Field(
        default=512,
        ge=16,
        le=4096,
        description="largest tile edge a request may ask for: one run's activations grow with its area "
        "(~8 KB per input pixel for SRGAN x4 fp32)",
    )
    upscale_max_overlap_ratio: float = Field(
        default=0.25,
        gt=0,
        le=1,
        description="most overlap a request may ask for, as a fraction of its tile edge (0.25: each run "
        "does at most 2.25x its tile's work)",
    )
    upscale_untiled_max_pixels: int = Field(
        default=512 * 512,
        ge=1,
        description="largest image (width x height) a request may upscale untiled (tile=0): one run, "
        "no bigger than the largest tile",
    )
    upscale_max_work_pixels: int = Field(
        default=32 * 1024 * 1024,
        ge=1,
        description="most input pixels one upscale may run through the model, tile overlaps included "
        "(413 upscale_too_costly above)",
    )
    request_timeout_s: float | None = Field(
        default=None,
        gt=0,
        le=3600,
        description="seconds a request may take before 503 deadline_exceeded (default: the SageMaker "
        "mode's time limit less 10 s: 50 s real-time)",
    )

    io_binding: bool | None = Field(
        default=None,
        description="run sessions through onnxruntime I/O binding (default: on CUDA only, where it pays)",
    )

    batching: bool = Field(
        default=True, description="merge concurrent requests for one model into one session run"
    )
    max_batch_size: int | None = Field(
        default=None,
        ge=1,
        le=4096,
        description="most generator images in one batched session run (default: 256 on CUDA, 64 on CPU)",
    )
    max_tile_batch: int = Field(
        default=4, ge=1, le=256, description="most same-size upscale tiles in one batched session run"
    )
    max_queue_delay_ms: float = Field(
        default=0.0,
        ge=0,
        le=10_000,
        description="longest a request waits for others to fill its batch (0: only while the model is busy)",
    )
    min_batch_while_busy: int = Field(
        default=1,
        ge=1,
        le=4096,
        description="while another batch of a generator runs, a batch with fewer images waits for more, "
        "for that batch to end, or about one batch's time (1: never waits; 4 pays at 64 clients, "
        "costs at 2-8)",
    )
    max_queue_size: int = Field(
        default=256,
        ge=1,
        description="requests in progress (queued or running) per model before 503 with Retry-After",
    )
    ready_images: int = Field(
        default=16,
        ge=0,
        le=1024,
        description="single images of fresh seeds each generator makes ahead of demand, for requests "
        "with no seed, latents, truncation or label (0: none); at most 16 MiB of output per model",
    )
    pad_batches: bool | None = Field(
        default=None,
        description="pad batches to power-of-two sizes, all warmed up at startup (default: on CUDA only)",
    )

    inference_workers: int = Field(
        default=0,
        ge=0,
        le=256,
        description="threads running sessions, all models together (0: as many as the models' streams use)",
    )
    encode_workers: int = Field(
        default=0, ge=0, le=256, description="threads decoding and encoding images (0: one per core)"
    )
    png_compress_level: int = Field(
        default=1,
        ge=0,
        le=9,
        description="PNG compression level: 1-3 the service's ISA-L writer, 0 and 4-9 Pillow's zlib",
    )
    jpeg_quality: int = Field(default=90, ge=1, le=100, description="JPEG and WebP quality")
    warmup_batch_sizes: list[int] = Field(
        default=[1, 8], description="generator batch sizes run once at startup"
    )

    log_format: LogFormat = Field(default="text", description="json (one object per line) or text")
    log_level: LogLevel = Field(default="INFO")
    opentelemetry: bool = Field(
        default=False,
        description="FastAPI's own OpenTelemetry spans, metrics and logs for each request (off: its "
        "per-request check for a configured provider costs even when there is none)",
    )
    fast_lane: bool = Field(
        default=True,
        description="answer the common POST /generate (valid JSON body, ready service) past FastAPI's "
        "routing and dependency solving, with the route's own code; off: every request goes through "
        "FastAPI (the answers are the same)",
    )
    shutdown_timeout: int = Field(
        default=20,
        ge=0,
        le=25,
        description="seconds to drain in-flight requests after SIGTERM (SageMaker kills at 30 s)",
    )

    max_header_bytes: int = Field(
        default=16 * 1024, ge=1024, description="request line + headers, bytes (431 above)"
    )
    max_header_count: int = Field(default=100, ge=10, description="header fields per request (431 above)")
    header_timeout_s: float = Field(
        default=10.0, gt=0, description="seconds for a request's headers to arrive (408 after)"
    )
    body_timeout_s: float = Field(
        default=60.0, gt=0, description="seconds for a request's whole body to arrive once its headers have"
    )
    max_connections: int = Field(
        default=512, ge=1, description="open connections + running requests before new requests get 503"
    )
    keep_alive_timeout_s: float = Field(
        default=5.0, gt=0, description="idle keep-alive connections close after"
    )

    api_keys: SecretStr | None = Field(
        default=None, description="comma-separated API keys; when set (or a keys file), requests need one"
    )
    api_keys_file: Path | None = Field(default=None, description="file of API keys, one per line")
    auth_health: bool = Field(default=False, description="require a key on health routes too")
    auth_metrics: bool = Field(default=True, description="require a key on /metrics when keys are set")
    sagemaker_iam: bool = Field(
        default=True, description="leave /ping, /invocations, /execution-parameters to SageMaker's IAM"
    )
    sagemaker_mode: SageMakerMode = Field(
        default="realtime",
        description="how SageMaker runs the container (realtime, async, batch, serverless): sets the "
        "/invocations payload and time limits",
    )
    batch_max_payload_mb: int = Field(
        default=6, ge=1, le=100, description="batch: MaxPayloadInMB offered by /execution-parameters"
    )
    batch_max_concurrent_transforms: int = Field(
        default=4, ge=1, le=256, description="batch: MaxConcurrentTransforms offered by /execution-parameters"
    )
    invocation_timeout_s: float | None = Field(
        default=None,
        gt=0,
        le=3600,
        description="seconds one /invocations may run (default: the mode's: 60, async 3600, batch 600)",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="browser origins allowed to call the API (comma-separated); off when empty",
    )

    default_generator: str | None = Field(
        default=None, description="model /generate uses when the request names none"
    )
    default_upscaler: str | None = Field(
        default=None, description="model /upscale uses when the request names none"
    )

    @model_validator(mode="before")
    @classmethod
    def _sagemaker_port(cls, data: Any) -> Any:
        # SAGEMAKER_BIND_TO_PORT stands in for GAN_SERVE_PORT; an explicit port always wins.
        if isinstance(data, dict) and "port" not in data and "GAN_SERVE_PORT" not in os.environ:
            sagemaker_port = os.environ.get(SAGEMAKER_PORT_VARIABLE)
            if sagemaker_port:
                return {**data, "port": sagemaker_port}
        return data

    @model_validator(mode="before")
    @classmethod
    def _sagemaker_body_limit(cls, data: Any) -> Any:
        # Unless set, the body limit grows to what the SageMaker mode lets through (async: 1 GB).
        if not isinstance(data, dict) or "max_body_bytes" in data:
            return data
        mode = data.get("sagemaker_mode", "realtime")
        payload = (
            int(data.get("batch_max_payload_mb", 6)) * 1_000_000
            if mode == "batch"
            else SAGEMAKER_PAYLOADS.get(mode, 0)
        )
        return {**data, "max_body_bytes": max(DEFAULT_MAX_BODY_BYTES, payload)}

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @property
    def sagemaker_limits(self) -> SageMakerLimits:
        """The payload and time limits of /invocations in this SageMaker mode."""
        mode = self.sagemaker_mode
        payload = self.batch_max_payload_mb * 1_000_000 if mode == "batch" else SAGEMAKER_PAYLOADS[mode]
        return SageMakerLimits(mode, payload, self.invocation_timeout_s or SAGEMAKER_TIMEOUTS[mode])

    @property
    def request_deadline_s(self) -> float:
        """Seconds a request may take: `request_timeout_s`, else the mode's time limit less 10 s."""
        limit = self.sagemaker_limits.timeout_s
        if self.request_timeout_s is not None:
            return min(self.request_timeout_s, limit)
        # 10 s to answer and be logged before SageMaker stops waiting; limits of 10 s or less keep it all.
        return max(limit - 10, min(limit, 10))

    def streams(self, on_cuda: bool) -> int:
        """Batches of one model in flight at once: `concurrent_batches`, or 1 on CUDA, a core each on CPU."""
        return self.concurrent_batches or (1 if on_cuda else cpu_cores())

    def session_threads(self, on_cuda: bool) -> int:
        """onnxruntime intra-op threads per run: `intra_op_threads`, or the cores shared by the streams."""
        return self.intra_op_threads or max(1, cpu_cores() // self.streams(on_cuda))

    def lone_threads(self, on_cuda: bool) -> int:
        """Threads of the session for lone requests: every core, or 0 where there is none to gain.

        A lone request on one of several one-thread streams would leave the other cores idle: on
        this project's 2-core host it ran a 64x64 upscale 1.8x and a 64x64 face 1.6x slower than on
        two threads (docs/performance.md, "Concurrency"). Not on CUDA, whose one stream has them all.
        """
        if on_cuda or not self.lone_runs_all_cores or self.session_threads(on_cuda) >= cpu_cores():
            return 0
        return cpu_cores()

    def solo_threads(self, on_cuda: bool) -> int:
        """Threads of the session for a lone client's requests (`solo_inline_max_ms`); 0: none."""
        return self.lone_threads(on_cuda) if self.solo_inline_max_ms > 0 else 0

    @property
    def inference_threads(self) -> int:
        """Inference pool size: `inference_workers`, or no bound of its own when it is 0."""
        # Each model's streams bound its runs; the pool only starts threads as runs need them.
        return self.inference_workers or 256

    @property
    def encode_threads(self) -> int:
        """Encode pool size: `encode_workers`, or one thread per core when it is 0."""
        return self.encode_workers or os.cpu_count() or 1

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.tile_size and self.tile_size < 16:
            raise ValueError("tile_size must be 0 (no tiling) or at least 16")
        if self.upscale_min_tile > self.upscale_max_tile:
            raise ValueError(
                f"upscale_min_tile ({self.upscale_min_tile}) is above upscale_max_tile "
                f"({self.upscale_max_tile})"
            )
        limits = self.sagemaker_limits
        if self.request_timeout_s is not None and self.request_timeout_s > limits.timeout_s:
            raise ValueError(
                f"request_timeout_s ({self.request_timeout_s:g}) must not exceed the {limits.mode} mode's "
                f"time limit of {limits.timeout_s:g} s; off SageMaker, raise invocation_timeout_s with it"
            )
        if any(not 1 <= b <= 4096 for b in self.warmup_batch_sizes):
            raise ValueError("warmup_batch_sizes must each be between 1 and 4096")
        return self
