"""`POST /generate` past FastAPI's routing and dependency solving, when the request needs neither.

FastAPI resolves the route's dependencies (the state, the facts, the Content-Type check, the Accept
header, the body) on the event loop for every request: about 0.4 ms of the loop's time per
/generate under a profiler, as much as the rest of the request's Python together. The fast lane
sits inside the request middleware (request id, access log, metrics, drain and the API keys all
apply as before) and answers a request itself only when FastAPI's answer is known to be the
route's: a ready service, no dependency overrides, a JSON (or absent) Content-Type and a body that
parses and validates as a `GenerateRequest`. Then it calls the route's own code
(`answer_generate`) and maps a `ServiceError` through the app's own handler. Every other request —
an invalid body included — goes to FastAPI untouched, with what was read of it replayed, so every
refusal is FastAPI's own, word for word.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.deps import get_facts
from service.errors import ServiceError
from service.routes.generate import GenerateRequest, answer_generate, is_json_or_absent
from service.state import ServiceState

PATH = "/generate"


class GenerateFastLane:
    """ASGI middleware: the common /generate request without FastAPI's per-request machinery."""

    def __init__(self, app: ASGIApp, on_error: Callable[[Request, Exception], Awaitable[Response]]) -> None:
        self.app = app
        self.on_error = on_error  # the app's handler of `ServiceError`

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        service: FastAPI = scope["app"]
        state: ServiceState | None = getattr(service.state, "service", None)
        # Its `receive` is the connection's: once the body is read, it only says http.disconnect.
        request = Request(scope, receive)
        if (
            state is None
            or not getattr(service.state, "ready", False)
            or service.dependency_overrides
            or not is_json_or_absent(request.headers.get("content-type"))
        ):
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        body = await _read_body(receive, messages)
        parsed = None if body is None else _parse(body)
        if parsed is None:  # FastAPI answers it, from the same bytes
            await self.app(scope, _replay(messages, receive), send)
            return
        facts = await get_facts(request)
        try:
            # No dependency overrides: the state's settings are the app's, as `get_state` would give.
            response = await answer_generate(request, state, facts, parsed, request.headers.get("accept"))
        except ServiceError as exc:
            response = await self.on_error(request, exc)
        await response(scope, receive, send)


async def _read_body(receive: Receive, messages: list[Message]) -> bytes | None:
    """The whole body, keeping every message in `messages`; None if anything but body arrives."""
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return None
        if not message.get("more_body", False):
            return b"".join(m.get("body", b"") for m in messages)


def _parse(body: bytes) -> GenerateRequest | None:
    """The body as FastAPI reads it (empty: the route's default request), or None if it is refused."""
    if not body:
        return GenerateRequest()
    try:
        return GenerateRequest.model_validate(json.loads(body))
    except Exception:  # bad JSON (nested too deep included), an invalid body: FastAPI words the answer
        return None


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A receive channel that hands out `messages` first, then what `receive` brings."""
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay
