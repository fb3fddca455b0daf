"""A closed-loop HTTP load generator: C clients, each sending its next request when the last returns.

Bounded both ways (a request count and a wall-clock limit), loopback only, httpx async over
keep-alive connections. Reports throughput (requests/s, images/s, megapixels/s) and p50/p95/p99
latency. The generator shares the machine's cores with the server it measures: on a small host
its own cost is part of every figure, which the report says.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

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
    check: Callable[[httpx.Response], None] | None = None


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


async def _run(
    call: Call, concurrency: int, max_requests: int, max_seconds: float, warmup: int
) -> LoadResult:
    _loopback_only(call.url)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    timeout = httpx.Timeout(120.0)
    latencies: list[float] = []
    errors = 0
    error_sample = ""
    issued = 0

    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:

        async def one() -> None:
            nonlocal errors, error_sample
            started = time.perf_counter()
            try:
                response = await client.request(
                    call.method,
                    call.url,
                    params=call.params,
                    json=call.json,
                    content=call.content,
                    headers=call.headers,
                )
                if response.status_code != 200:
                    raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
                if call.check is not None:
                    call.check(response)
            except Exception as exc:
                errors += 1
                error_sample = error_sample or repr(exc)[:300]
                return
            latencies.append(time.perf_counter() - started)

        # Warm-up: open the connections and let the server reach its steady state.
        await asyncio.gather(*(one() for _ in range(max(warmup, concurrency))))
        latencies.clear()
        errors = 0
        error_sample = ""

        deadline = time.perf_counter() + max_seconds
        begun = time.perf_counter()

        async def client_loop() -> None:
            nonlocal issued
            while issued < max_requests and time.perf_counter() < deadline:
                issued += 1
                await one()

        await asyncio.gather(*(client_loop() for _ in range(concurrency)))
        seconds = time.perf_counter() - begun

    done = len(latencies)
    ms = np.array(latencies) * 1000.0 if latencies else np.array([np.nan])
    return LoadResult(
        label="",
        concurrency=concurrency,
        requests=done,
        errors=errors,
        seconds=round(seconds, 3),
        requests_per_s=done / seconds,
        images_per_s=done * call.images / seconds,
        megapixels_per_s=done * call.images * call.pixels_per_image / seconds / 1e6,
        p50_ms=float(np.percentile(ms, 50)),
        p95_ms=float(np.percentile(ms, 95)),
        p99_ms=float(np.percentile(ms, 99)),
        error_sample=error_sample,
    )


def run_load(
    label: str, call: Call, *, concurrency: int, max_requests: int, max_seconds: float, warmup: int = 0
) -> LoadResult:
    """Drive `call` with `concurrency` closed-loop clients until `max_requests` or `max_seconds`."""
    result = asyncio.run(_run(call, concurrency, max_requests, max_seconds, warmup))
    result.label = label
    return result
