"""`gan-serve [serve] [--models DIR] [--host H] [--port P] [--device auto|cuda|cpu]`.

Flags override `GAN_SERVE_*` environment variables. The optional `serve` word is what SageMaker
passes (`docker run IMAGE serve`). Exit status: 0 after a stop (SIGTERM or Ctrl-C), 2 for bad
arguments or settings, 3 when the model repository cannot be served (missing, empty or broken
entry, a card the model contradicts, CUDA asked for but unavailable). Errors are one message,
never a traceback.

Stopping: SIGTERM starts the drain (`service.app.drain_requests`: new requests and readiness get
503 `shutting_down`, in-flight requests have `shutdown_timeout` seconds, the rest are answered 503),
then uvicorn closes the socket and the lifespan releases the models. SageMaker and docker compose
send SIGKILL 30 s after SIGTERM, so the process leaves by `shutdown_timeout + EXIT_MARGIN_S` (24.5 s
by default) whatever a session run still holds.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError

from service import __version__
from service.app import create_app, drain_requests
from service.entries import scan_repository
from service.errors import StartupError
from service.http_protocol import ConnectionLimits, protocol_with
from service.logs import configure_logging, flush_logs
from service.settings import Settings

EXIT_USAGE = 2
EXIT_STARTUP = 3
#: Seconds after the drain bound for answering the last requests and releasing the models
#: (`service.app`: ABORT_SETTLE_S 1 + uvicorn's FINISH_S 1 + RELEASE_TIMEOUT_S 2, and slack).
EXIT_MARGIN_S = 4.5
#: Seconds uvicorn gives responses already being written once the drain is over.
FINISH_S = 1

log = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gan-serve",
        description="Serve the model repository over HTTP: POST /generate, POST /upscale, docs at /docs.",
        epilog="Every setting can also come from a GAN_SERVE_* environment variable (see docs/service.md).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("command", nargs="?", choices=["serve"], default="serve", help="serve (the default)")
    parser.add_argument("--models", dest="models_dir", help="model repository directory (default ./models)")
    parser.add_argument("--host", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (default 8000, or SAGEMAKER_BIND_TO_PORT)")
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], help="execution provider (default auto)")
    parser.add_argument("--log-format", choices=["json", "text"], help="log lines as JSON or text")
    return parser


def load_settings(overrides: dict[str, Any]) -> Settings:
    """Settings from the environment with `overrides` on top; raises `ValidationError`."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def describe(error: ValidationError) -> str:
    """One line per invalid setting, naming its environment variable."""
    lines = []
    for item in error.errors():
        field = ".".join(str(p) for p in item["loc"])
        variable = f"GAN_SERVE_{field.upper()}" if field else "settings"
        lines.append(f"  {variable}: {str(item['msg']).removeprefix('Value error, ')}")
    return "\n".join(lines)


class _DropTracebacks(logging.Filter):
    """Uvicorn logs a failed lifespan startup as a traceback; the lifespan already logged why."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Traceback")


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, validate settings and the repository, then serve until stopped."""
    args = _parser().parse_args(argv)
    overrides = {
        "models_dir": args.models_dir,
        "host": args.host,
        "port": args.port,
        "device": args.device,
        "log_format": args.log_format,
    }
    try:
        settings = load_settings(overrides)
    except ValidationError as exc:
        print(f"gan-serve: invalid settings:\n{describe(exc)}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(settings.log_format, settings.log_level)
    try:
        # Reading the cards takes milliseconds: fail before binding the port if the repository is broken.
        scan_repository(settings.models_dir)
    except StartupError as exc:
        flush_logs()
        print(f"gan-serve: {exc.message}", file=sys.stderr)
        return EXIT_STARTUP

    try:
        app = create_app(settings)
    except StartupError as exc:
        flush_logs()
        print(f"gan-serve: {exc.message}", file=sys.stderr)
        return EXIT_STARTUP
    logging.getLogger("uvicorn.error").addFilter(_DropTracebacks())
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        server_header=False,
        # The drain already waited for requests (`GanServer.main_loop`); this is for responses still
        # being written to slow readers.
        timeout_graceful_shutdown=FINISH_S,
        http=protocol_with(connection_limits(settings)),
        limit_concurrency=settings.max_connections,
        timeout_keep_alive=int(settings.keep_alive_timeout_s) or 1,
    )
    # Uvicorn drains on SIGTERM/SIGINT, then re-raises the signal to the handler that was there
    # before it started: a no-op one makes that a clean exit 0 instead of death by signal.
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, _ignore)
    server = GanServer(config, app, page_url(settings.host, settings.port), settings.shutdown_timeout)
    try:
        server.run()
    except SystemExit:
        # Uvicorn exits on a failed startup; the last line says why, as every other refusal does.
        if not app.state.startup_error:
            raise
    if app.state.startup_error:
        # Logs are written by their own thread (`service.logs`): this line must come after them.
        flush_logs()
        print(f"gan-serve: {app.state.startup_error}", file=sys.stderr)
        return EXIT_STARTUP
    return 0


class GanServer(uvicorn.Server):
    """Uvicorn's server that drains requests before it stops and says where the web page is."""

    def __init__(self, config: uvicorn.Config, app: FastAPI, page: str, drain_s: float) -> None:
        super().__init__(config)
        self.app = app
        self.page = page
        self.drain_s = drain_s
        self.exit_deadline: threading.Timer | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and not self.should_exit:
            log.info("open %s in a browser for the web page (API docs: %sdocs)", self.page, self.page)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.exit_deadline is None:
            # A session run cannot be interrupted: past this deadline the process leaves without it.
            self.exit_deadline = threading.Timer(self.drain_s + EXIT_MARGIN_S, _exit_now, (self.drain_s,))
            self.exit_deadline.daemon = True
            self.exit_deadline.start()
        super().handle_exit(sig, frame)

    async def main_loop(self) -> None:
        await super().main_loop()
        # Still listening: new requests get 503 shutting_down instead of a refused connection.
        await drain_requests(self.app, self.drain_s, lambda: self.force_exit)


def page_url(host: str, port: int) -> str:
    """The page's address; a wildcard listen address is reached from this machine as 127.0.0.1."""
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/"


def connection_limits(settings: Settings) -> ConnectionLimits:
    """The per-connection limits the HTTP protocol enforces, from the settings."""
    return ConnectionLimits(
        max_header_bytes=settings.max_header_bytes,
        max_header_count=settings.max_header_count,
        header_timeout_s=settings.header_timeout_s,
        max_body_bytes=settings.max_body_bytes,
        body_timeout_s=settings.body_timeout_s,
        max_body_bytes_in_flight=settings.max_body_bytes_in_flight,
    )


def _exit_now(drain_s: float) -> None:
    """Leave the process now: the drain and the release overran their bound."""
    log.error(
        "exiting %g s after the stop signal with work still running (drain bound %g s)",
        drain_s + EXIT_MARGIN_S,
        drain_s,
    )
    flush_logs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(0)


def _ignore(signum: int, frame: FrameType | None) -> None:
    """Stand-in handler: uvicorn has already drained and stopped when this runs."""


if __name__ == "__main__":
    sys.exit(main())
