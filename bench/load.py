"""A closed-loop HTTP load generator: C clients, each sending its next request when the last returns.

Bounded both ways (a request count and a wall-clock limit), loopback only, asyncio over keep-alive
connections: a lean HTTP/1.1 client by default, httpx on request. Reports throughput (requests/s,
images/s, megapixels/s) and p50/p95/p99 latency. The generator shares the machine's cores with the
server it measures: on a small host its own cost is part of every figure, which the report says.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import numpy as np


@dataclass(frozen=True)
class Call:
    """One kind of request: what to send and how many images (of how many pixels) it yields."""

    method: str
    url: str
    images: int
    pixels_per_image: int
    params: dict[str, Any] | None = None
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    check: Callable[[bytes], None] | None = None


@dataclass
class LoadResult:
    """What one load run measured."""

    label: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    requests_per_s: float
    images_per_s: float
    megapixels_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    error_sample: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _loopback_only(url: str) -> None:
    host = urlsplit(url).hostname
    if host not in {"127.0.0.1", "localhost", "::1"}:
        raise ValueError(f"the load generator only talks to loopback, not {host}")


class _Connection:
    """A minimal HTTP/1.1 keep-alive client connection: about a tenth of httpx's CPU per request.

    On a 2-core host the load generator shares the CPU with the server it measures, so its own
    cost matters; this speaks just enough HTTP for these servers (Content-Length bodies).
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, target: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = [
            f"{method} {target} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            f"Content-Length: {len(body)}",
        ]
        head += [f"{k}: {v}" for k, v in headers.items()]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        status_line = await self.reader.readuntil(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        length, close = 0, False
        while (line := await self.reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
            elif name == b"transfer-encoding":
                raise RuntimeError("chunked responses are not supported by the bench client")
        content = await self.reader.readexactly(length)
        if close:
            await self.close()
        return status, content

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
            self.writer = None


def _encode(call: Call) -> tuple[str, bytes, dict[str, str]]:
    """The request target, body and headers `call` describes."""
    parts = urlsplit(call.url)
    target = parts.path or "/"
    if call.params:
        target += "?" + urlencode(call.params)
    headers = dict(call.headers)
    body = b""
    if call.json is not None:
        body = json.dumps(call.json).encode()
        headers.setdefault("Content-Type", "application/json")
    elif call.content is not None:
        body = call.content
    return target, body, headers


async def _run(
    call: Call, concurrency: int, max_requests: int, max_seconds: float, warmup: int, client: str
) -> LoadResult:
    _loopback_only(call.url)
    parts = urlsplit(call.url)
    target, body, headers = _encode(call)
    latencies: list[float] = []
    finished: list[float] = []
    errors = 0
    error_sample = ""
    issued = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    http = httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(120.0)) if client == "httpx" else None
    connections = [_Connection(parts.hostname or "127.0.0.1", parts.port or 80) for _ in range(concurrency)]

    async def one(connection: _Connection) -> None:
        nonlocal errors, error_sample
        started = time.perf_counter()
        try:
            if http is not None:
                response = await http.request(call.method, call.url, content=body, headers=headers)
                status, content = response.status_code, response.content
            else:
                status, content = await connection.request(call.method, target, body, headers)
            if status != 200:
                raise RuntimeError(f"HTTP {status}: {content[:200]!r}")
            if call.check is not None:
                call.check(content)
        except Exception as exc:
            errors += 1
            error_sample = error_sample or repr(exc)[:300]
            await connection.close()
            return
        finished.append(time.perf_counter())
        latencies.append(finished[-1] - started)

    try:
        # Warm-up: open the connections and let the server reach its steady state.
        rounds = max(1, -(-warmup // concurrency))
        for _ in range(rounds):
            await asyncio.gather(*(one(c) for c in connections))
        latencies.clear()
        finished.clear()
        errors = 0
        error_sample = ""

        deadline = time.perf_counter() + max_seconds
        begun = time.perf_counter()

        async def client_loop(connection: _Connection) -> None:
            nonlocal issued
            while issued < max_requests and time.perf_counter() < deadline:
                issued += 1
                await one(connection)

        await asyncio.gather(*(client_loop(c) for c in connections))
        seconds = time.perf_counter() - begun
    finally:
        for connection in connections:
            await connection.close()
        if http is not None:
            await http.aclose()

    done = len(latencies)
    ms = np.array(latencies) * 1000.0 if latencies else np.array([np.nan])
    rate = best_window_rate(finished, begun, seconds)
    return LoadResult(
        label="",
        concurrency=concurrency,
        requests=done,
        errors=errors,
        seconds=round(seconds, 3),
        requests_per_s=rate,
        images_per_s=rate * call.images,
        megapixels_per_s=rate * call.images * call.pixels_per_image / 1e6,
        p50_ms=float(np.percentile(ms, 50)),
        p95_ms=float(np.percentile(ms, 95)),
        p99_ms=float(np.percentile(ms, 99)),
        error_sample=error_sample,
        extra={"requests_per_s_whole_run": done / seconds},
    )


def best_window_rate(finished: list[float], begun: float, seconds: float, windows: int = 3) -> float:
    """Completions per second in the best of `windows` equal parts of the run.

    On a shared host other processes only ever slow a window down (the suite's raw loops take the
    best window too); the whole-run rate is kept in the result's `extra`.
    """
    if not finished:
        return 0.0
    width = seconds / windows
    counts = np.bincount(
        np.minimum(((np.array(finished) - begun) / width).astype(int), windows - 1), minlength=windows
    )
    # A window with fewer than a handful of completions says more about chance than throughput.
    if counts.min() < 5:
        return len(finished) / seconds
    return float(counts.max() / width)


def run_load(
    label: str,
    call: Call,
    *,
    concurrency: int,
    max_requests: int,
    max_seconds: float,
    warmup: int = 0,
    client: str = "raw",
) -> LoadResult:
    """Drive `call` with `concurrency` closed-loop clients until `max_requests` or `max_seconds`.

    `client` is "raw" (the lean keep-alive client above) or "httpx".
    """
    result = asyncio.run(_run(call, concurrency, max_requests, max_seconds, warmup, client))
    result.label = label
    return result
