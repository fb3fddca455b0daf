"""The /generate fast lane: the same answers as FastAPI's route, for every kind of request.

Two apps from the same settings, one with the fast lane (the default) and one without, get the same
requests; every answer must match byte for byte (status, body, the headers a client reads). Then the
lane itself, with a recording app behind it: which requests it answers and which it hands on, with
their bodies intact.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.types import Message, Receive, Scope, Send

from service.app import _service_error, create_app
from service.fast_lane import GenerateFastLane
from service.settings import Settings
from tests.service.conftest import GRAY_GENERATOR, RGB_GENERATOR

#: (body or raw bytes, headers): valid requests of every shape, then refusals of every kind.
REQUESTS: list[tuple[Any, dict[str, str]]] = [
    ({"model": RGB_GENERATOR, "seed": 3}, {}),
    ({"model": RGB_GENERATOR, "n": 3, "seed": 4}, {}),
    ({"model": GRAY_GENERATOR, "n": 4, "seed": 5, "layout": "grid", "format": "jpeg"}, {}),
    ({"model": RGB_GENERATOR, "n": 2, "seed": 6}, {"accept": "application/json"}),
    ({"model": RGB_GENERATOR, "seed": 7, "format": "npy"}, {}),
    ({"model": RGB_GENERATOR, "seed": 8}, {"content-type": "application/vnd.api+json"}),
    ({"model": RGB_GENERATOR, "seed": 9}, {"accept": "image/webp"}),
    ({"model": RGB_GENERATOR, "interpolate": {"from": 1, "to": 2, "steps": 3}, "layout": "animation"}, {}),
    # Refusals: by the body's validation, by JSON parsing, by Content-Type, by the model, by Accept.
    ({"model": RGB_GENERATOR, "n": 0}, {}),
    ({"model": RGB_GENERATOR, "seed": 1, "latents": [[0.0] * 16]}, {}),
    ({"model": RGB_GENERATOR, "colour": "red"}, {}),
    ([1, 2, 3], {}),
    (None, {}),
    (b'{"model": ', {"content-type": "application/json"}),
    (b"[" * 100_000, {"content-type": "application/json"}),
    (b"\xff\xfe", {"content-type": "application/json"}),
    (b"model=rgb-gen", {"content-type": "application/x-www-form-urlencoded"}),
    ({"model": "no-such-model", "seed": 1}, {}),
    ({"model": RGB_GENERATOR, "n": 999}, {}),
    ({"model": RGB_GENERATOR, "seed": 1}, {"accept": "text/html"}),
]

#: Response headers that differ between any two requests whatever serves them.
VARYING = {"date", "x-request-id"}


@pytest.fixture(scope="module")
def both(settings: Settings) -> Iterator[tuple[TestClient, TestClient]]:
    with (
        TestClient(create_app(settings)) as fast,
        TestClient(create_app(settings.model_copy(update={"fast_lane": False}))) as slow,
    ):
        yield fast, slow


def _send(client: TestClient, body: Any, headers: dict[str, str]) -> Any:
    if isinstance(body, bytes):
        return client.post("/generate", content=body, headers=headers)
    if body is None:
        return client.post("/generate", headers=headers)
    return client.post(
        "/generate", content=json.dumps(body), headers={"content-type": "application/json", **headers}
    )


@pytest.mark.parametrize(("body", "headers"), REQUESTS, ids=lambda value: repr(value)[:40])
def test_the_fast_lane_answers_as_fastapi_does(
    both: tuple[TestClient, TestClient], body: Any, headers: dict[str, str]
) -> None:
    fast, slow = both
    if body is None:  # no body: a random seed; both must say which, and the seed decides the bytes
        first = _send(fast, None, headers)
        seed = int(first.headers["x-seed"])
        assert _send(slow, {"seed": seed}, headers).content == first.content
        return
    answers = [_send(client, body, headers) for client in both]
    assert answers[0].status_code == answers[1].status_code
    assert answers[0].content == answers[1].content
    shown = [{k: v for k, v in answer.headers.items() if k not in VARYING} for answer in answers]
    assert shown[0] == shown[1]


def test_the_fast_lane_keeps_the_request_context(
    both: tuple[TestClient, TestClient], caplog: pytest.LogCaptureFixture
) -> None:
    fast, _ = both
    with caplog.at_level(logging.INFO, logger="service.access"):
        r = fast.post(
            "/generate", json={"model": RGB_GENERATOR, "seed": 1}, headers={"X-Request-ID": "lane-1"}
        )
    assert r.status_code == 200
    assert r.headers["x-request-id"] == "lane-1"
    lines = [record for record in caplog.records if record.name == "service.access"]
    assert [(line.getMessage().split()[:3], getattr(line, "model", None)) for line in lines] == [
        (["POST", "/generate", "200"], RGB_GENERATOR)
    ]
    metrics = fast.get("/metrics").text
    assert f'gan_serve_requests_total{{model="{RGB_GENERATOR}",route="/generate",status="200"}}' in metrics


class Recorder:
    """The app behind the lane: records what reaches it and answers 299."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        self.bodies.append(b"".join(chunks))
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture(scope="module")
def lane(both: tuple[TestClient, TestClient]) -> Lane:
    recorder = Recorder()
    return Lane(GenerateFastLane(recorder, on_error=_service_error), recorder, both[0])


class Lane:
    """The fast lane in front of a `Recorder`, on the running fast app's event loop."""

    def __init__(self, middleware: GenerateFastLane, recorder: Recorder, client: TestClient) -> None:
        self.middleware, self.recorder, self.client = middleware, recorder, client

    def status(self, method: str, path: str, chunks: list[bytes]) -> int:
        """The status the lane (or the recorder behind it) answers a request sent in `chunks`."""
        assert self.client.portal is not None
        return self.client.portal.call(self._through, method, path, chunks)

    async def _through(self, method: str, path: str, chunks: list[bytes]) -> int:
        messages: list[Message] = [
            {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
            for i, chunk in enumerate(chunks)
        ]
        sent: list[Message] = []

        async def receive() -> Message:
            if messages:
                return messages.pop(0)
            await asyncio.Event().wait()  # the client stays until the answer is sent
            raise AssertionError("unreachable")

        async def send(message: Message) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": method,
            "path": path,
            "headers": [(b"content-type", b"application/json")],
            "query_string": b"",
            "app": self.client.app,
            "state": {},
        }
        await self.middleware(scope, receive, send)
        return int(next(m["status"] for m in sent if m["type"] == "http.response.start"))


def test_the_lane_answers_valid_bodies_and_hands_on_the_rest_intact(lane: Lane) -> None:
    valid = json.dumps({"model": RGB_GENERATOR, "seed": 2}).encode()
    assert lane.status("POST", "/generate", [valid[:10], valid[10:]]) == 200
    assert lane.recorder.bodies == []
    invalid = json.dumps({"model": RGB_GENERATOR, "n": -1}).encode()
    assert lane.status("POST", "/generate", [invalid[:5], invalid[5:]]) == 299
    assert lane.status("POST", "/upscale", [b"abc"]) == 299
    assert lane.status("GET", "/generate", [b""]) == 299
    assert lane.recorder.bodies == [invalid, b"abc", b""]
