"""API keys and CORS: who may call the service, and from which browser origins.

Keys come from `GAN_SERVE_API_KEYS` (comma-separated) and/or `GAN_SERVE_API_KEYS_FILE` (one per
line, `#` comments). With no key configured, nothing is required. With keys, every request needs
`Authorization: Bearer <key>` or `X-API-Key: <key>`, compared in constant time against every key,
except:

- the web page and its assets (`/`, `/static/…`): the page asks the user for a key and sends it;
- health routes (`/health/*`, `/v2/health/*`, `/ping`) unless `GAN_SERVE_AUTH_HEALTH=true`;
- `/metrics` when `GAN_SERVE_AUTH_METRICS=false`;
- SageMaker's `/ping`, `/invocations` and `/execution-parameters` while `GAN_SERVE_SAGEMAKER_IAM`
  is true (the default): SageMaker authenticates callers with IAM and passes no Authorization
  header to the container.

A refused request gets 401 with the service's JSON error and `WWW-Authenticate: Bearer`. Keys are
held as secrets and never logged. CORS is off unless `GAN_SERVE_CORS_ORIGINS` lists origins; then
Starlette's `CORSMiddleware` answers preflights (before any key check) and exposes the service's
`X-*` response headers to the page's script.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable
from pathlib import Path

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import StartupError
from service.settings import Settings

#: Response headers a browser script may read when CORS is on.
EXPOSED_HEADERS = ["X-Seed", "X-Model", "X-Images", "X-Labels", "X-Request-Id", "X-Tiles", "Retry-After"]
_PAGE_PATHS = ("/", "/index.html", "/favicon.ico")
_PAGE_PREFIXES = ("/static/",)
_HEALTH_PATHS = ("/ping", "/health/live", "/health/ready", "/v2/health/live", "/v2/health/ready")
_SAGEMAKER_PATHS = ("/ping", "/invocations", "/execution-parameters")


def load_keys(settings: Settings) -> list[bytes]:
    """Every configured key as bytes; a keys file that cannot be read stops startup."""
    keys: list[str] = []
    if settings.api_keys is not None:
        keys += [k.strip() for k in settings.api_keys.get_secret_value().split(",")]
    if settings.api_keys_file is not None:
        path: Path = settings.api_keys_file
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise StartupError(f"GAN_SERVE_API_KEYS_FILE {path}: cannot be read ({exc.strerror})") from None
        keys += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    keys = [k for k in keys if k]
    short = [k for k in keys if len(k) < 16]
    if short:
        raise StartupError(f"{len(short)} API key(s) shorter than 16 characters: use long random keys")
    return [k.encode() for k in keys]


def is_open(path: str, settings: Settings) -> bool:
    """True for paths that need no key under these settings."""
    if path in _PAGE_PATHS or path.startswith(_PAGE_PREFIXES):
        return True
    if settings.sagemaker_iam and path in _SAGEMAKER_PATHS:
        return True
    if path in _HEALTH_PATHS:
        return not settings.auth_health
    if path == "/metrics":
        return not settings.auth_metrics
    return False


def presented_key(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The key a request carries: `Authorization: Bearer …` or `X-API-Key: …`."""
    for name, value in headers:
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            return value[7:].strip()
        if name == b"x-api-key":
            return value.strip()
    return None


def key_matches(candidate: bytes, keys: list[bytes]) -> bool:
    """Constant-time comparison against every key (no early exit on a match)."""
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(candidate, key)
    return matched


class ApiKeyMiddleware:
    """Refuses requests without a valid key (401) on every protected path."""

    def __init__(self, app: ASGIApp, *, keys: list[bytes], settings: Settings) -> None:
        self.app = app
        self.keys = keys
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_open(scope["path"], self.settings):
            await self.app(scope, receive, send)
            return
        candidate = presented_key(scope["headers"])
        if candidate is not None and key_matches(candidate, self.keys):
            await self.app(scope, receive, send)
            return
        message = (
            "this server requires an API key: send Authorization: Bearer <key> or X-API-Key: <key>"
            if candidate is None
            else "the API key is not valid"
        )
        body = json.dumps({"error": {"code": "unauthorized", "message": message}}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b'Bearer realm="gan-serve"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def install_security(app: FastAPI, settings: Settings) -> None:
    """Add the key check, then CORS outside it (so preflights and 401s carry CORS headers)."""
    keys = load_keys(settings)
    app.state.auth_required = bool(keys)
    if keys:
        app.add_middleware(ApiKeyMiddleware, keys=keys, settings=settings)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "Accept"],
            expose_headers=EXPOSED_HEADERS,
            max_age=600,
        )
