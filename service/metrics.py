"""Prometheus metrics, one registry per app so several apps in one process never clash.

The registry also carries the standard process and platform collectors (`process_*` CPU, memory and
file descriptors; `python_info`), as `prometheus_client`'s default registry would.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

# `*_created` timestamps double the exposition and no dashboard here uses them.
disable_created_metrics()

#: Latency buckets in seconds: a 64x64 image takes ~1 ms, a large tiled upscale tens of seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Batch sizes: powers of two up to the largest max_batch_size worth having.
BATCH_SIZE_BUCKETS = tuple(float(1 << i) for i in range(13))
#: Session runs in seconds: a batch of small images takes well under a millisecond on a GPU.
INFERENCE_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
#: Queue waits in seconds: the default max delay is 2 ms; seconds mean the model is saturated.
QUEUE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ServiceMetrics:
    """The service's counters, histograms and gauges, registered in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.requests = Counter(
            "gan_serve_requests",
            "HTTP requests served, by route, model and status",
            ["route", "model", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "gan_serve_request_duration_seconds",
            "Time from request to complete response, by route and model",
            ["route", "model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.images_generated = Counter(
            "gan_serve_images_generated", "Images produced by /generate", ["model"], registry=self.registry
        )
        self.pixels_upscaled = Counter(
            "gan_serve_pixels_upscaled",
            "Output pixels produced by /upscale",
            ["model"],
            registry=self.registry,
        )
        self.errors = Counter(
            "gan_serve_errors", "Error responses, by error code", ["code"], registry=self.registry
        )
        self.in_flight = Gauge(
            "gan_serve_requests_in_flight", "Requests being handled now", ["route"], registry=self.registry
        )
        self.model_runs_in_flight = Gauge(
            "gan_serve_model_runs_in_flight",
            "Model runs queued or running in the inference pool",
            ["model"],
            registry=self.registry,
        )
        self.model_info = Gauge(
            "gan_serve_model_info",
            "Loaded models (value 1), with their kind and execution provider",
            ["model", "kind", "provider"],
            registry=self.registry,
        )
        self.warmup_seconds = Gauge(
            "gan_serve_model_warmup_seconds", "Warm-up time per model", ["model"], registry=self.registry
        )
        self.model_memory_bytes = Gauge(
            "gan_serve_model_memory_bytes",
            "Resident memory the process kept for each model after loading and warming it up",
            ["model"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "gan_serve_batch_size",
            "Rows (images or tiles) per batched session run, by model",
            ["model"],
            buckets=BATCH_SIZE_BUCKETS,
            registry=self.registry,
        )
        self.queue_wait_seconds = Histogram(
            "gan_serve_queue_wait_seconds",
            "Time a request waited in its model's batch queue before its first rows ran, by model",
            ["model"],
            buckets=QUEUE_BUCKETS,
            registry=self.registry,
        )
        self.queued_requests = Gauge(
            "gan_serve_queued_requests",
            "Requests waiting in the model's batch queue now (not yet wholly inside a running batch)",
            ["model"],
            registry=self.registry,
        )
        self.inference_seconds = Histogram(
            "gan_serve_inference_seconds",
            "Time onnxruntime spent on one session run (one batch of images or tiles), by model",
            ["model"],
            buckets=INFERENCE_BUCKETS,
            registry=self.registry,
        )
        self.tiles_upscaled = Counter(
            "gan_serve_tiles_upscaled",
            "Upscale tiles run through the model, by model (a cancelled request stops adding to it)",
            ["model"],
            registry=self.registry,
        )
        self.cancelled_requests = Counter(
            "gan_serve_cancelled_requests",
            "Requests whose queued work was dropped, by model and reason (deadline: past "
            "request_timeout_s; cancelled: the client left or an outer time limit ended it)",
            ["model", "reason"],
            registry=self.registry,
        )
        self.queued_work_seconds = Gauge(
            "gan_serve_queued_work_seconds",
            "Estimated seconds of admitted work not yet done, by model (what admission compares with "
            "each request's deadline)",
            ["model"],
            registry=self.registry,
        )
        self.ready_images = Gauge(
            "gan_serve_ready_images",
            "Images of fresh seeds each generator holds made ahead of demand, now (GAN_SERVE_READY_IMAGES)",
            ["model"],
            registry=self.registry,
        )
        self.ready_images_served = Counter(
            "gan_serve_ready_images_served",
            "Requests answered with an image made ahead of demand, by model",
            ["model"],
            registry=self.registry,
        )
        self.ready = Gauge("gan_serve_ready", "1 once every model is loaded and warm", registry=self.registry)

    def render(self) -> bytes:
        """The registry in Prometheus text exposition format."""
        return generate_latest(self.registry)
