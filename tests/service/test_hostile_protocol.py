"""Hostile HTTP against the real server (`gan-serve` over a socket): limits below the application.

Each case sends raw bytes the way an attacker or a broken client would and asserts the status and
the JSON error code, then the server keeps answering. Limits are set low through the environment so
the cases run in seconds: headers 8 KiB / 50 fields, header timeout 1 s, body timeout 2 s, body
256 KiB.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.service.conftest import RGB_GENERATOR
from tests.service.live_server import serving

pytestmark = pytest.mark.xdist_group("service-hostile-protocol")

MAX_BODY = 256 * 1024
#: Every route that takes a body, with a media type it accepts.
ROUTES = [
    ("/generate", b"application/json"),
    ("/upscale", b"image/png"),
    ("/invocations", b"application/json"),
    ("/invocations", b"image/png"),
    (f"/v2/models/{RGB_GENERATOR}/infer", b"application/json"),
]


@pytest.fixture(scope="module")
def address(repo: Path) -> Iterator[tuple[str, int]]:
    with serving(
        repo,
        GAN_SERVE_MAX_HEADER_BYTES=str(8 * 1024),
        GAN_SERVE_MAX_HEADER_COUNT="50",
        GAN_SERVE_HEADER_TIMEOUT_S="1",
        GAN_SERVE_BODY_TIMEOUT_S="2",
        GAN_SERVE_MAX_BODY_BYTES=str(MAX_BODY),
    ) as served:
        yield served


def exchange(address: tuple[str, int], *parts: bytes, pause: float = 0.0, timeout: float = 10.0) -> bytes:
    """Send `parts` (pausing between them), then read until the server closes or `timeout`."""
    with socket.create_connection(address, timeout=timeout) as conn:
        for part in parts:
            try:
                conn.sendall(part)
            except (BrokenPipeError, ConnectionResetError):
                break  # the server answered and closed: read what it said
            time.sleep(pause)
        received = b""
        try:
            while chunk := conn.recv(65536):
                received += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return received


def status_and_code(response: bytes) -> tuple[int, str]:
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)["error"]["code"]


def still_serving(address: tuple[str, int]) -> None:
    response = httpx.post(
        f"http://{address[0]}:{address[1]}/generate", json={"model": RGB_GENERATOR, "seed": 1}
    )
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"


def request(
    path: str = "/health/live", method: str = "GET", headers: bytes = b"", body: bytes = b""
) -> bytes:
    return b"%s %s HTTP/1.1\r\nHost: t\r\n%s\r\n%s" % (method.encode(), path.encode(), headers, body)


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [
        (
            "64 KiB of headers",
            request(headers=b"X-Big: " + b"a" * 65536 + b"\r\n"),
            (431, "headers_too_large"),
        ),
        (
            "one 9 KiB header",
            request(headers=b"Cookie: " + b"c" * 9000 + b"\r\n"),
            (431, "headers_too_large"),
        ),
        (
            "51 headers",
            request(headers=b"".join(b"X-%d: 1\r\n" % i for i in range(51))),
            (431, "too_many_headers"),
        ),
        (
            "10,000 headers",
            request(headers=b"".join(b"X-%d: 1\r\n" % i for i in range(10_000))),
            (431, "too_many_headers"),
        ),
        ("9 KiB URL", request(path="/health/live?" + "q" * 9000), (414, "url_too_long")),
        ("garbage request line", b"HELLO THERE\r\n\r\n", (400, "bad_request")),
        (
            "bad Content-Length",
            request("/generate", "POST", b"Content-Length: ten\r\n"),
            (400, "bad_request"),
        ),
        (
            "two Content-Lengths",
            request("/generate", "POST", b"Content-Length: 2\r\nContent-Length: 3\r\n", b"{}"),
            (400, "bad_request"),
        ),
        ("NUL in a header", request(headers=b"X-A: a\x00b\r\n"), (400, "bad_request")),
        (
            "bare LF header folding",
            b"GET / HTTP/1.1\r\nHost: t\r\n X-Folded: yes\r\n\r\n",
            (400, "bad_request"),
        ),
    ],
)
def test_malformed_or_oversized_head(
    address: tuple[str, int], name: str, raw: bytes, expected: tuple[int, str]
) -> None:
    assert status_and_code(exchange(address, raw)) == expected, name
    still_serving(address)


@pytest.mark.parametrize(("route", "media"), [*ROUTES, ("/nowhere", b"application/json")])
def test_declared_body_over_the_limit_is_refused_before_reading(
    address: tuple[str, int], route: str, media: bytes
) -> None:
    head = request(route, "POST", b"Content-Type: %s\r\nContent-Length: %d\r\n" % (media, MAX_BODY + 1))
    assert status_and_code(exchange(address, head)) == (413, "payload_too_large")


@pytest.mark.parametrize(("route", "media"), ROUTES)
def test_chunked_body_over_the_limit_is_refused_while_streaming(
    address: tuple[str, int], route: str, media: bytes
) -> None:
    head = request(route, "POST", b"Content-Type: %s\r\nTransfer-Encoding: chunked\r\n" % media)
    chunk = b"%x\r\n%s\r\n" % (64 * 1024, b" " * 64 * 1024)
    started = time.monotonic()
    response = exchange(address, head, *[chunk] * 8)
    assert status_and_code(response) == (413, "payload_too_large")
    assert time.monotonic() - started < 5


def test_chunked_body_within_the_limit_is_served(address: tuple[str, int]) -> None:
    body = json.dumps({"model": RGB_GENERATOR, "seed": 3}).encode()
    head = request(
        "/generate",
        "POST",
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n",
    )
    response = exchange(address, head, b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
    assert response.startswith(b"HTTP/1.1 200") and b"image/png" in response


def test_slowloris_headers_time_out(address: tuple[str, int]) -> None:
    started = time.monotonic()
    response = exchange(address, b"GET /health/live HTTP/1.1\r\n", b"X-A: 1\r\n", b"X-B: 2\r\n", pause=0.6)
    assert status_and_code(response) == (408, "header_timeout")
    assert time.monotonic() - started < 4


def test_silent_connection_is_closed(address: tuple[str, int]) -> None:
    started = time.monotonic()
    response = exchange(address)
    assert status_and_code(response) == (408, "header_timeout")
    assert time.monotonic() - started < 3


def test_trickled_body_times_out(address: tuple[str, int]) -> None:
    """One byte every 0.5 s of a 40-byte body: refused when the body clock (2 s) runs out."""
    head = request("/generate", "POST", b"Content-Type: application/json\r\nContent-Length: 40\r\n")
    started = time.monotonic()
    response = exchange(address, head, *[b" "] * 40, pause=0.5)
    assert status_and_code(response) == (408, "body_timeout")
    assert time.monotonic() - started < 6
    still_serving(address)


def test_many_idle_connections_are_shed(address: tuple[str, int]) -> None:
    """200 half-open connections: each is closed by the header timeout; the service answers throughout."""
    conns = [socket.create_connection(address, timeout=5) for _ in range(200)]
    try:
        still_serving(address)
        time.sleep(1.6)
        closed = 0
        for conn in conns:
            try:
                data = conn.recv(4096)
                closed += data.startswith(b"HTTP/1.1 408")
            except OSError:
                closed += 1
        assert closed == len(conns)
    finally:
        for conn in conns:
            conn.close()
    still_serving(address)


def test_keep_alive_connection_serves_several_requests(address: tuple[str, int]) -> None:
    one = request("/health/live")
    last = request("/health/live", headers=b"Connection: close\r\n")
    response = exchange(address, one, one, last)
    assert response.count(b"HTTP/1.1 200") == 3


def test_past_the_connection_limit_a_request_gets_a_json_503_and_the_server_recovers(repo: Path) -> None:
    with serving(repo, GAN_SERVE_MAX_CONNECTIONS="3") as address:
        idle = [socket.create_connection(address, timeout=10) for _ in range(2)]
        try:
            time.sleep(0.2)  # the server has taken both connections
            response = exchange(address, request())
            assert status_and_code(response) == (503, "too_many_connections")
            head = response.partition(b"\r\n\r\n")[0].lower()
            assert b"retry-after: 1" in head and b"content-type: application/json" in head
        finally:
            for conn in idle:
                conn.close()
        time.sleep(0.2)
        still_serving(address)


def test_bodies_held_at_once_are_bounded_and_small_requests_still_pass(repo: Path) -> None:
    body_limit = 256 * 1024
    with serving(
        repo, GAN_SERVE_MAX_BODY_BYTES=str(body_limit), GAN_SERVE_MAX_BODY_BYTES_IN_FLIGHT="600000"
    ) as address:
        upload = request(
            "/upscale",
            "POST",
            b"Content-Type: image/png\r\nContent-Length: %d\r\n" % body_limit,
        )
        # Two uploads of the largest body, each still arriving: 512 KiB of the 600,000 bytes held.
        slow = [socket.create_connection(address, timeout=10) for _ in range(2)]
        try:
            for conn in slow:
                conn.sendall(upload + b"\x89PNG" + bytes(996))
            time.sleep(0.2)
            refused = exchange(address, upload)
            assert status_and_code(refused) == (503, "bodies_in_flight")
            assert b"retry-after: 1" in refused.partition(b"\r\n\r\n")[0].lower()
            chunked = request(
                "/upscale", "POST", b"Content-Type: image/png\r\nTransfer-Encoding: chunked\r\n"
            )
            streamed = exchange(address, chunked, b"%x\r\n" % 100_000 + bytes(100_000) + b"\r\n")
            assert status_and_code(streamed) == (503, "bodies_in_flight")
            still_serving(address)  # a small body fits beside them
        finally:
            for conn in slow:
                conn.close()
        time.sleep(0.2)
        # Their bytes are free again: the largest body is read (and refused as no image, not as busy).
        answered = exchange(address, upload + bytes(body_limit))
        assert status_and_code(answered)[0] != 503
        still_serving(address)
