"""A lone client's requests (the solo path: run in the event loop's thread) against the real server.

What a user sees is that nothing changes but speed: the images a single keep-alive client gets are
byte for byte the ones concurrent clients get, and the ones the service gives with the path off.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.service.conftest import RGB_GENERATOR
from tests.service.live_server import serving

pytestmark = pytest.mark.xdist_group("service-solo")

SEEDS = range(8)


def _png(client: httpx.Client, seed: int) -> bytes:
    response = client.post("/generate", json={"model": RGB_GENERATOR, "seed": seed})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return response.content


def _alone(url: str) -> list[bytes]:
    """Every seed from one client on one keep-alive connection, one request at a time."""
    with httpx.Client(base_url=url) as client:
        return [_png(client, seed) for seed in SEEDS]


def _crowd(url: str) -> list[bytes]:
    """Every seed from four clients at once, each on its own connection."""

    def one(seed: int) -> bytes:
        with httpx.Client(base_url=url) as client:
            return _png(client, seed)

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, SEEDS))


def test_a_lone_client_gets_the_images_concurrent_clients_get_and_those_with_the_path_off(repo: Path) -> None:
    with serving(repo) as (host, port):
        url = f"http://{host}:{port}"
        alone, crowd, alone_again = _alone(url), _crowd(url), _alone(url)
    with serving(repo, GAN_SERVE_SOLO_INLINE_MAX_MS="0") as (host, port):
        off = _alone(f"http://{host}:{port}")
    assert len(set(alone)) == len(SEEDS)  # one image per seed
    assert alone == crowd == alone_again == off
