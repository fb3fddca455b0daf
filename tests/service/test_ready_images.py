"""Random samples made ahead of demand (`GAN_SERVE_READY_IMAGES`): what a client gets from them.

A request for one image with nothing else asked (no seed, latents, truncation, label, labels or
interpolation) may be answered with an image the generator made while idle. The answer must be the
very answer a request with its seed (`X-Seed`) gets, byte for byte; each such image goes to one
request; anything more specific never comes from there; and with the setting at 0 nothing is made.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.batching import open_connections
from service.card import ModelCard
from service.ready_images import MAX_BYTES, ReadyImages, ready_capacity
from service.settings import Settings
from tests.service.conftest import FLAT_GENERATOR, RGB_GENERATOR
from tests.service.onnx_models import write_conditional_entry

CAPACITY = 6
HANG = 30.0


def _metric(client: TestClient, name: str, model: str) -> float | None:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f'{name}{{model="{model}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return None


def _served(client: TestClient, model: str) -> float:
    return _metric(client, "gan_serve_ready_images_served_total", model) or 0.0


def _wait_full(client: TestClient, model: str, count: int = CAPACITY) -> None:
    """Until `model` holds `count` images made ahead of demand (they are made in the background)."""
    deadline = time.monotonic() + HANG
    while _metric(client, "gan_serve_ready_images", model) != count:
        assert time.monotonic() < deadline, f"{model} never held {count} images ready"
        time.sleep(0.01)


@pytest.fixture(scope="module")
def ready_client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings.model_copy(update={"ready_images": CAPACITY}))) as client:
        yield client


def test_a_random_sample_is_the_same_answer_as_a_request_for_its_seed(ready_client: TestClient) -> None:
    for model in (RGB_GENERATOR, FLAT_GENERATOR):
        for image_format in ("png", "npy"):
            _wait_full(ready_client, model)
            before = _served(ready_client, model)
            sample = ready_client.post("/generate", json={"model": model, "format": image_format})
            assert sample.status_code == 200, sample.text
            assert _served(ready_client, model) == before + 1
            seed = int(sample.headers["x-seed"])
            body = {"model": model, "format": image_format, "seed": seed}
            again = ready_client.post("/generate", json=body)
            assert again.status_code == 200, again.text
            assert _served(ready_client, model) == before + 1
            assert again.content == sample.content
            assert again.headers["x-seed"] == str(seed)
            assert again.headers["content-type"] == sample.headers["content-type"]


def test_each_image_made_ahead_goes_to_one_request_and_the_supply_refills(ready_client: TestClient) -> None:
    _wait_full(ready_client, RGB_GENERATOR)
    before = _served(ready_client, RGB_GENERATOR)
    answers = [
        ready_client.post("/generate", json={"model": RGB_GENERATOR, "n": 1, "format": "npy"})
        for _ in range(CAPACITY + 4)
    ]
    assert all(r.status_code == 200 for r in answers)
    seeds = [r.headers["x-seed"] for r in answers]
    assert len(set(seeds)) == len(seeds)
    images = [np.load(io.BytesIO(r.content)) for r in answers]
    assert len({image.tobytes() for image in images}) == len(images)
    # At least the ones ready at the start came from the supply, never more than all of them.
    served = _served(ready_client, RGB_GENERATOR) - before
    assert CAPACITY <= served <= len(answers)
    _wait_full(ready_client, RGB_GENERATOR)


def test_a_request_that_asks_for_anything_is_never_answered_ahead(ready_client: TestClient) -> None:
    _wait_full(ready_client, RGB_GENERATOR)
    before = _served(ready_client, RGB_GENERATOR)
    latent = np.random.default_rng(0).normal(size=(1, 16)).tolist()
    for body in (
        {"seed": 5},
        {"n": 2},
        {"truncation": 1.5},
        {"latents": latent},
        {"interpolate": {"from": 1, "to": 2, "steps": 3}},
    ):
        r = ready_client.post("/generate", json={"model": RGB_GENERATOR, **body})
        assert r.status_code == 200, (body, r.text)
    assert _served(ready_client, RGB_GENERATOR) == before


def test_a_conditional_generator_makes_its_default_class_ahead(tmp_path: Path) -> None:
    write_conditional_entry(tmp_path, "cgan", latent=8, edge=8, classes=4, class_names=["a", "b", "c", "d"])
    settings = Settings(models_dir=tmp_path, warmup_batch_sizes=[1], device="cpu", ready_images=CAPACITY)
    with TestClient(create_app(settings)) as client:
        _wait_full(client, "cgan")
        sample = client.post("/generate", json={"model": "cgan"})
        assert sample.status_code == 200, sample.text
        assert _served(client, "cgan") == 1
        seed = sample.headers["x-seed"]
        for body in ({"seed": int(seed)}, {"seed": int(seed), "label": 0}):
            same = client.post("/generate", json={"model": "cgan", **body})
            assert same.content == sample.content
            assert same.headers["x-labels"] == sample.headers["x-labels"] == "0"
        labelled = client.post("/generate", json={"model": "cgan", "label": "b"})
        assert labelled.status_code == 200
        assert _served(client, "cgan") == 1


def test_with_the_setting_at_zero_nothing_is_made_ahead(settings: Settings) -> None:
    with TestClient(create_app(settings.model_copy(update={"ready_images": 0}))) as client:
        r = client.post("/generate", json={"model": RGB_GENERATOR})
        assert r.status_code == 200, r.text
        assert _metric(client, "gan_serve_ready_images", RGB_GENERATOR) is None
        assert _served(client, RGB_GENERATOR) == 0
        # A generator makes nothing unless asked: one image, one session run.
        assert _metric(client, "gan_serve_inference_seconds_count", RGB_GENERATOR) == 1


def test_large_images_are_held_ready_in_fewer_numbers_and_upscalers_never() -> None:
    def card(kind: str, edge: int, batch: int | None = None) -> ModelCard:
        generator = kind == "generator"
        return ModelCard.model_construct(
            name="m",
            kind=kind,
            latent_size=128 if generator else None,
            input_shape=[batch, 128] if generator else [None, None, None, 3],
            height=edge if generator else None,
            width=edge if generator else None,
            channels=3,
        )

    assert ready_capacity(card("generator", 64), 16) == 16
    assert ready_capacity(card("generator", 64), 0) == 0
    big = 1024 * 1024 * 3 * 4
    assert ready_capacity(card("generator", 1024), 16) == MAX_BYTES // big == 1
    assert ready_capacity(card("generator", 4096), 16) == 0
    assert ready_capacity(card("generator", 64, batch=1), 16) == 0
    assert ready_capacity(card("upscaler", 64), 16) == 0


class _ContextSpy:
    """A model runner that notes, at each run, which connections the running task says it came on."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.card = inner.card
        self.seen: list[object] = []

    def idle(self) -> bool:
        return bool(self.inner.idle())

    async def run_finished(self, inputs: np.ndarray, finish: Any) -> Any:
        self.seen.append(open_connections.get())
        return await self.inner.run_finished(inputs, finish)


def test_images_are_made_ahead_outside_the_request_that_woke_the_refill(settings: Settings) -> None:
    # A lone client's request may run on the event loop's thread (the batcher's solo path); a
    # refill it wakes must not, or the client's next request waits for images made for it.
    with TestClient(create_app(settings.model_copy(update={"ready_images": 0}))) as client:
        model = client.app.state.service.repository.models[RGB_GENERATOR]  # type: ignore[attr-defined]
        spy = _ContextSpy(model.runner)
        supply = ReadyImages(dataclasses.replace(model, runner=spy), 2)

        async def woken_by_a_lone_clients_request() -> None:
            token = open_connections.set({"the client's connection"})
            try:
                supply.wake()
            finally:
                open_connections.reset(token)
            deadline = time.monotonic() + HANG
            while len(supply) < 2:
                assert time.monotonic() < deadline, "the refill never made its images"
                await asyncio.sleep(0.01)
            await supply.close()

        assert client.portal is not None
        client.portal.call(woken_by_a_lone_clients_request)
    assert spy.seen and all(seen is None for seen in spy.seen)
