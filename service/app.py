"""The FastAPI app factory: routes, the one place errors become responses, and the model lifespan.

Nothing heavy happens at import or in `create_app`: the lifespan loads and warms the model
repository when the server starts, and releases the sessions and worker pools when it stops.

Stopping (`drain_requests`, which `gan-serve` runs on SIGTERM before uvicorn closes the socket):
readiness goes 503 and every new request gets 503 `shutting_down` (with `Retry-After`) while the
requests in flight finish; those still running at the drain bound get the same JSON 503, never a
bare 500. Then the lifespan releases the models, waiting at most `RELEASE_TIMEOUT_S` for session
runs still going.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from PIL import Image
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import __name__ as package_name
from service import __version__
from service.auth import install_security
from service.errors import ServiceError, ShuttingDown, StartupError
from service.facts import install_facts
from service.fast_lane import GenerateFastLane
from service.logs import request_id
from service.metrics import ServiceMetrics
from service.ready_images import ReadyImages, ready_capacity
from service.repository import ModelRepository
from service.routes import ROUTERS
from service.routes.v2 import is_v2
from service.runner import IdleMemoryRelease
from service.settings import Settings
from service.state import ServiceState
from service.uploads import body_too_large

log = logging.getLogger(package_name)
access_log = logging.getLogger(f"{package_name}.access")

DESCRIPTION = """\
Generate images with GAN generators and upscale images with SRGAN-style upscalers, served from
onnxruntime on CUDA or CPU. Every error is `{"error": {"code": ..., "message": ...}}`.
`GET /models` shows which execution provider each model really runs on.
"""

_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
#: Seconds the lifespan waits for session runs still going when it releases the models.
RELEASE_TIMEOUT_S = 2.0
#: Seconds requests answered 503 at the drain bound get to send that answer.
ABORT_SETTLE_S = 1.0


def error_body(path: str, code: str, message: str, **extra: Any) -> dict[str, Any]:
    """`{"error": {"code", "message", ...}}`; the Open Inference Protocol's `{"error": message}` on /v2."""
    if is_v2(path):
        return {"error": message}
    return {"error": {"code": code, "message": message, **extra}}


def error_response(request: Request, status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    """The JSON error response of `request`'s route family."""
    return JSONResponse(error_body(request.url.path, code, message, **extra), status_code=status)


def _count_error(request: Request, code: str) -> None:
    request.app.state.metrics.errors.labels(code).inc()


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    _count_error(request, exc.code)
    if exc.status_code == 503:
        # Overload and shutdown are expected conditions, not faults.
        log.warning("%s: %s", exc.code, exc.message)
    elif exc.status_code >= 500:
        log.error("%s: %s", exc.code, exc.message)
    else:
        log.info("refused: %s: %s", exc.code, exc.message)
    response = error_response(request, exc.status_code, exc.code, exc.message)
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    fields = [
        {
            "location": ".".join(str(p) for p in error.get("loc", ())),
            "message": str(error.get("msg", "")).removeprefix("Value error, "),
        }
        for error in exc.errors()
    ]
    message = "; ".join(f"{f['location']}: {f['message']}" if f["location"] else f["message"] for f in fields)
    _count_error(request, "invalid_request")
    log.info("refused: invalid_request: %s", message)
    return error_response(request, 422, "invalid_request", message or "invalid request", fields=fields)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    _count_error(request, code)
    response = error_response(request, exc.status_code, code, str(exc.detail))
    # Starlette's 405 carries `Allow` (RFC 9110 requires it); keep every header it set.
    response.headers.update(exc.headers or {})
    return response


class RequestDrain:
    """The requests in flight, and whether the service has stopped taking new ones (SIGTERM)."""

    #: Paths that still answer while draining: the process is alive, and its metrics are worth scraping.
    STILL_SERVED = frozenset({"/health/live", "/v2/health/live", "/metrics"})

    def __init__(self) -> None:
        self.draining = False
        #: Each request's task -> its response state (`started`: the status line has gone out).
        self.requests: dict[asyncio.Task[Any], dict[str, Any]] = {}

    def refuses(self, path: str) -> bool:
        """Whether a new request for `path` gets 503 `shutting_down`."""
        return self.draining and path not in self.STILL_SERVED

    async def until_idle(self, timeout: float, stop_early: Callable[[], bool] = lambda: False) -> bool:
        """Wait up to `timeout` seconds for every request to finish; whether they all did."""
        deadline = time.monotonic() + timeout
        while self.requests and time.monotonic() < deadline and not stop_early():
            await asyncio.sleep(0.05)
        return not self.requests

    def abort(self) -> int:
        """Cancel every request that has not started its response (each then answers 503); how many."""
        unanswered = [task for task, response in self.requests.items() if not response["started"]]
        for task in unanswered:
            task.cancel("the service is shutting down")
        return len(unanswered)


def shutting_down() -> ShuttingDown:
    """The refusal of a request the service will not finish: it got its stop signal."""
    return ShuttingDown("the service is shutting down; send the request again after Retry-After seconds")


async def drain_requests(
    app: FastAPI, timeout: float, stop_early: Callable[[], bool] = lambda: False
) -> None:
    """Refuse new requests, let those in flight finish for up to `timeout` s, answer the rest 503."""
    drain: RequestDrain = app.state.drain
    drain.draining = True
    app.state.ready = False
    app.state.metrics.ready.set(0)
    log.info("stopping: %d requests in flight, waiting up to %g s", len(drain.requests), timeout)
    if await drain.until_idle(timeout, stop_early):
        return
    aborted = drain.abort()
    log.warning("stopping: %d requests still running after %g s answered 503 shutting_down", aborted, timeout)
    await drain.until_idle(ABORT_SETTLE_S)


class RequestContextMiddleware:
    """Request id in and out, body size limit, one access log line, request metrics, the last-resort 500."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: ServiceMetrics,
        routes: frozenset[str],
        max_body_bytes: int,
        drain: RequestDrain,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes
        self.max_body_bytes = max_body_bytes
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        # Not uuid4: its os.urandom releases the GIL, and the loop may wait for a worker to give it back.
        rid = incoming if _REQUEST_ID_RE.fullmatch(incoming) else f"{random.getrandbits(128):032x}"
        token = request_id.set(rid)
        route = scope["path"] if scope["path"] in self.routes else "unmatched"
        facts = install_facts(scope)
        response: dict[str, Any] = {"status": 500, "started": False}
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Request-ID"] = rid
                response.update(status=message["status"], started=True)
            await send(message)

        in_flight = self.metrics.in_flight.labels(route)
        in_flight.inc()
        task = asyncio.current_task()
        assert task is not None
        self.drain.requests[task] = response
        try:
            # Every route reads its body only through FastAPI or Request.stream(): refuse an
            # oversized declared body here once, whatever the route (/upscale also checks while streaming).
            declared = dict(scope["headers"]).get(b"content-length", b"")
            refusal: ServiceError | None = None
            if self.drain.refuses(scope["path"]):
                refusal = shutting_down()
            elif declared.isdigit() and int(declared) > self.max_body_bytes:
                refusal = body_too_large(self.max_body_bytes)
            if refusal is not None:
                self.metrics.errors.labels(refusal.code).inc()
                await _send_error(
                    send_with_id,
                    scope["path"],
                    refusal.status_code,
                    refusal.code,
                    refusal.message,
                    getattr(refusal, "retry_after", None),
                )
            else:
                await self.app(scope, receive, send_with_id)
        except asyncio.CancelledError:
            if not self.drain.draining:
                raise
            # Cancelled by the drain bound (or uvicorn's last one): answer, as every other error, in JSON.
            task.uncancel()
            refusal = shutting_down()
            self.metrics.errors.labels(refusal.code).inc()
            if not response["started"]:
                await _send_error(
                    send_with_id,
                    scope["path"],
                    refusal.status_code,
                    refusal.code,
                    refusal.message,
                    refusal.retry_after,
                )
            response["status"] = refusal.status_code
        except Exception:
            # Anything that gets here is a bug: log it with its traceback, tell the client nothing more.
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            self.metrics.errors.labels("internal_error").inc()
            response["status"] = 500
            if not response["started"]:
                await _send_error(
                    send_with_id, scope["path"], 500, "internal_error", f"internal error (request id {rid})"
                )
        finally:
            self.drain.requests.pop(task, None)
            in_flight.dec()
            route = getattr(scope.get("route"), "path", route)
            elapsed = time.perf_counter() - start
            model = facts.model or "-"
            self.metrics.requests.labels(route, model, str(response["status"])).inc()
            self.metrics.latency.labels(route, model).observe(elapsed)
            access_log.info(
                "%s %s %s %.1f ms",
                scope["method"],
                scope["path"],
                response["status"],
                elapsed * 1000,
                extra={"status": response["status"], "duration_ms": round(elapsed * 1000, 1), "model": model},
            )
            request_id.reset(token)


async def _send_error(
    send: Send, path: str, status: int, code: str, message: str, retry_after: int | None = None
) -> None:
    body = json.dumps(error_body(path, code, message)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if retry_after is not None:
        headers.append((b"retry-after", b"%d" % retry_after))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load and warm every model before serving; release sessions and pools on shutdown."""
    settings: Settings = app.state.settings
    metrics: ServiceMetrics = app.state.metrics
    # Our own pixel check runs first with the configured limit; Pillow's is only a backstop.
    Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, settings.max_image_pixels)
    inference_pool = ThreadPoolExecutor(settings.inference_threads, thread_name_prefix="inference")
    encode_pool = ThreadPoolExecutor(settings.encode_threads, thread_name_prefix="encode")
    try:
        repository = await asyncio.to_thread(ModelRepository.load, settings, inference_pool, metrics)
    except StartupError as exc:
        log.error("cannot start: %s", exc.message)
        app.state.startup_error = exc.message
        inference_pool.shutdown(cancel_futures=True)
        encode_pool.shutdown(cancel_futures=True)
        raise
    for name, model in repository.models.items():
        metrics.model_info.labels(name, model.card.kind, model.provider).set(1)
        metrics.warmup_seconds.labels(name).set(model.warmup_ms / 1000)
    ready = ready_supplies(repository, settings, metrics)
    app.state.service = ServiceState(
        settings=settings,
        repository=repository,
        metrics=metrics,
        inference_pool=inference_pool,
        encode_pool=encode_pool,
        ready=ready,
    )
    idle_release = IdleMemoryRelease(
        [model.session for model in repository.models.values() if model.session is not None],
        settings.arena_idle_release_s,
    )
    idle_release.start()
    app.state.ready = True
    metrics.ready.set(1)
    log.info(
        "ready: %d models from %s",
        len(repository.models),
        settings.models_dir,
        extra={"defaults": repository.defaults},
    )
    try:
        yield
    finally:
        app.state.ready = False
        metrics.ready.set(0)
        app.state.service = None
        idle_release.stop()
        await asyncio.gather(*(supply.close() for supply in ready.values()))
        if await release(repository, [inference_pool, encode_pool], RELEASE_TIMEOUT_S):
            log.info("stopped: models released")
        else:
            log.warning(
                "stopped: session runs still going after %g s; not waiting for them", RELEASE_TIMEOUT_S
            )


def ready_supplies(
    repository: ModelRepository, settings: Settings, metrics: ServiceMetrics
) -> dict[str, ReadyImages]:
    """Each generator's images made ahead of demand (none with `ready_images` 0), refilling from now."""
    supplies: dict[str, ReadyImages] = {}
    for name, model in repository.models.items():
        capacity = ready_capacity(model.card, settings.ready_images)
        if capacity:
            supply = supplies[name] = ReadyImages(model, capacity)
            metrics.ready_images.labels(name).set_function(supply.__len__)
            supply.wake()
    return supplies


async def release(repository: ModelRepository, pools: list[ThreadPoolExecutor], timeout: float) -> bool:
    """Close the batchers, then the pools; whether the work still running finished within `timeout` s."""

    async def finish() -> None:
        await repository.close()
        for pool in pools:
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)

    try:
        await asyncio.wait_for(finish(), timeout)
    except TimeoutError:
        # A session run cannot be interrupted; the process exits without it (`service.cli`'s deadline).
        for pool in pools:
            pool.shutdown(wait=False, cancel_futures=True)
        return False
    return True


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; models load when the server starts it (the lifespan), not here."""
    settings = settings or Settings()
    app = FastAPI(
        title="gan-serve",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # Operation ids are the route functions' names (`generate`, `list_models`, ...): stable, and
        # what generated clients name their methods after.
        generate_unique_id_function=lambda route: route.name,
        telemetry=None if settings.opentelemetry else {"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.metrics = ServiceMetrics()
    app.state.service = None
    app.state.ready = False
    app.state.startup_error = None
    app.state.drain = RequestDrain()
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for router in ROUTERS:
        app.include_router(router)
    # Known paths label the in-flight gauge before routing; unknown paths share one label.
    routes = frozenset(getattr(route, "path", "") for router in ROUTERS for route in router.routes)
    if settings.fast_lane:  # added first, so it runs inside the request context
        app.add_middleware(GenerateFastLane, on_error=_service_error)
    app.add_middleware(
        RequestContextMiddleware,
        metrics=app.state.metrics,
        routes=routes,
        max_body_bytes=settings.max_body_bytes,
        drain=app.state.drain,
    )
    install_security(app, settings)  # outermost: CORS, then keys, then the request context
    return app
