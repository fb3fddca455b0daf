"""Limits below the application: uvicorn's httptools protocol with the guards a public host needs.

Uvicorn's default HTTP/1.1 protocol (httptools) accepts headers of any size and count, waits
forever for headers and for a slowly trickled body, and checks no body size while it streams. This
subclass adds, per connection, with a JSON error and `Connection: close` (the body the service
answers every error with):

- request line + headers: at most `max_header_bytes` bytes and `max_header_count` fields → 431;
  URL at most `max_url_bytes` → 414; headers complete within `header_timeout_s` of the request's
  first byte (a slowloris never gets a request in) → 408;
- body: at most `max_body_bytes`, refused from `Content-Length` before a byte of it is read and
  counted while it streams (chunked too) → 413; complete within `body_timeout_s` of the headers
  → 408 (the application sees a disconnect);
- malformed HTTP → 400 with the JSON error shape instead of uvicorn's text/plain;
- more connections or requests than uvicorn's `limit_concurrency` → 503 `too_many_connections`
  with the JSON error shape and `Retry-After: 1`, instead of uvicorn's text/plain 503;
- request bodies held at once, all connections together: at most `max_body_bytes_in_flight`
  (never below `max_body_bytes`), from a request's headers until its response is complete, so
  many large uploads at once cannot exhaust memory between them; a request whose body would pass
  it → 503 `bodies_in_flight` with `Retry-After: 1`, from `Content-Length` before a byte of it is
  read (a chunked body is counted as it streams).

Connection count and idle keep-alive are uvicorn's own settings (`limit_concurrency`,
`timeout_keep_alive`), set from the same `Settings` in `service.cli`.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass
from functools import partial
from typing import Any

import httptools
from uvicorn._types import ASGI3Application, ASGIReceiveCallable, ASGISendCallable, Scope
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from service.batching import open_connections

_REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    413: b"Content Too Large",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


@dataclass(frozen=True)
class ConnectionLimits:
    """What one connection may send before the application sees a request."""

    max_header_bytes: int = 16 * 1024
    max_header_count: int = 100
    max_url_bytes: int = 8 * 1024
    header_timeout_s: float = 10.0
    max_body_bytes: int = 20 * 1024 * 1024
    body_timeout_s: float = 60.0
    #: Bodies of all connections' requests in progress together (raised to `max_body_bytes`).
    max_body_bytes_in_flight: int = 256 * 1024 * 1024


class BodyBudget:
    """Bytes of request bodies the server holds at once, all connections together (event loop only)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, amount: int) -> bool:
        """Hold `amount` more bytes if that stays within the limit; whether it did."""
        if self.held + amount > self.limit:
            return False
        self.held += amount
        return True

    def give(self, amount: int) -> None:
        self.held -= amount


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing: the request breaks a limit."""

    def __init__(self, status: int, code: str, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.retry_after = retry_after


def _error_body(code: str, message: str) -> bytes:
    """The service's JSON error shape."""
    return json.dumps({"error": {"code": code, "message": message}}).encode()


def error_bytes(status: int, code: str, message: str, retry_after: int | None = None) -> bytes:
    """A complete HTTP/1.1 error response in the service's JSON shape, closing the connection."""
    body = _error_body(code, message)
    head = [
        b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Error")),
        b"content-type: application/json\r\n",
        b"content-length: %d\r\n" % len(body),
        b"" if retry_after is None else b"retry-after: %d\r\n" % retry_after,
        b"connection: close\r\n\r\n",
    ]
    return b"".join(head) + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` with header, URL, body and timing limits (see the module docstring)."""

    limits = ConnectionLimits()
    #: Shared by every connection of one server (`protocol_with` gives each server its own).
    bodies = BodyBudget(ConnectionLimits.max_body_bytes_in_flight)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_bytes = 0
        self._header_count = 0
        self._body_bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        # Body bytes held for each request of this connection whose response is not complete yet
        # (oldest first; more than one only when requests are pipelined), and whether the newest
        # one's body is counted as it streams (no Content-Length).
        self._held: deque[int] = deque()
        self._counting_stream = False

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        # uvicorn answers past `limit_concurrency` with its own text/plain 503 app: ours instead.
        if app is service_unavailable:
            app = partial(_too_many_connections, self.limit_concurrency)
        # The request's task sees the server's connections (copied into its context): the
        # batcher runs a lone client's request on the event loop's own thread.
        open_connections.set(self.connections)
        super()._start_asgi_task(cycle, app)

    # Timers --------------------------------------------------------------------------------------

    def _arm(self, seconds: float, status: int, code: str, message: str) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._expire, status, code, message)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self, status: int, code: str, message: str) -> None:
        self._timer = None
        self._refuse(_Refused(status, code, message))

    def _refuse(self, refusal: _Refused) -> None:
        """Answer the refusal unless a response has started, tell the app, and close."""
        self._disarm()
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True
            cycle.message_event.set()
        if cycle is None or not cycle.response_started:  # the app has not answered: answer for it
            self.transport.write(
                error_bytes(refusal.status, refusal.code, refusal.message, refusal.retry_after)
            )
        self.transport.close()

    # Protocol and parser callbacks ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_clock()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.bodies.give(sum(self._held))
        self._held.clear()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        if self._held:
            self.bodies.give(self._held.popleft())
        super().on_response_complete()

    def _hold(self, amount: int) -> None:
        """Count `amount` more body bytes for the newest request, or refuse it (503)."""
        bodies = self.bodies
        if not bodies.take(amount):
            raise _Refused(
                503,
                "bodies_in_flight",
                f"requests in progress hold {bodies.held} bytes of body, and this one's would pass "
                f"the {bodies.limit} this server holds at once; retry in a moment",
                retry_after=1,
            )
        self._held[-1] += amount

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except _Refused as refusal:
            self._refuse(refusal)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserError as exc:
            cause = exc.__cause__ or exc.__context__
            self._refuse(
                cause if isinstance(cause, _Refused) else _Refused(400, "bad_request", "invalid HTTP request")
            )

    def _header_clock(self) -> None:
        limits = self.limits
        self._arm(
            limits.header_timeout_s,
            408,
            "header_timeout",
            f"the request headers did not arrive within {limits.header_timeout_s:g} s",
        )

    def send_400_response(self, msg: str) -> None:
        self._refuse(_Refused(400, "bad_request", msg))

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = self._header_count = self._body_bytes = 0
        self._held.append(0)
        self._counting_stream = False
        if self._timer is None:  # a new request on a kept-alive connection: its headers' clock starts
            self._header_clock()

    def on_url(self, url: bytes) -> None:
        if len(self.url) + len(url) > self.limits.max_url_bytes:
            raise _Refused(414, "url_too_long", f"the URL is longer than {self.limits.max_url_bytes} bytes")
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._header_bytes += len(name) + len(value) + 4
        limits = self.limits
        if self._header_count > limits.max_header_count:
            raise _Refused(
                431, "too_many_headers", f"the request has more than {limits.max_header_count} header fields"
            )
        if self._header_bytes + len(self.url) > limits.max_header_bytes:
            raise _Refused(
                431,
                "headers_too_large",
                f"the request line and headers exceed {limits.max_header_bytes} bytes",
            )
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm()
        limits = self.limits
        declared = _content_length(self.headers)
        if declared is not None and declared > limits.max_body_bytes:
            raise _Refused(
                413,
                "payload_too_large",
                f"the body is {declared} bytes; this server accepts at most {limits.max_body_bytes}",
            )
        if declared:
            self._hold(declared)
        self._counting_stream = declared is None
        super().on_headers_complete()
        if declared or _chunked(self.headers):
            self._arm(
                limits.body_timeout_s,
                408,
                "body_timeout",
                f"the request body did not arrive within {limits.body_timeout_s:g} s",
            )

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > self.limits.max_body_bytes:
            raise _Refused(
                413,
                "payload_too_large",
                f"the body exceeds {self.limits.max_body_bytes} bytes, the most this server accepts",
            )
        if self._counting_stream:
            self._hold(len(body))
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                raise _Refused(400, "bad_request", "Content-Length is not a number") from None
    return None


def _chunked(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(name == b"transfer-encoding" and b"chunked" in value.lower() for name, value in headers)


def protocol_with(limits: ConnectionLimits) -> type[GuardedHttpToolsProtocol]:
    """A protocol class carrying `limits`, for `uvicorn.Config(http=...)`."""
    bodies = BodyBudget(max(limits.max_body_bytes_in_flight, limits.max_body_bytes))
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"limits": limits, "bodies": bodies})


async def _too_many_connections(
    limit: int | None, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
) -> None:
    """The 503 for a request past `limit_concurrency`, in the service's JSON error shape."""
    body = _error_body(
        "too_many_connections",
        f"this server is holding its limit of {limit} connections and requests; retry in a moment",
    )
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
        (b"retry-after", b"1"),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
