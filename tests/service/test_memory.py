"""Memory a user can see: each model's resident memory in /models and /metrics, the warm-up's
working memory handed back, and the per-kind CPU arena settings serving the same pixels.
"""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.service.conftest import FLAT_GENERATOR, GRAY_GENERATOR, RGB_GENERATOR, UPSCALER
from tests.service.sample_images import png_bytes, random_pixels

MODELS = (FLAT_GENERATOR, GRAY_GENERATOR, RGB_GENERATOR, UPSCALER)


def test_models_and_metrics_show_each_models_memory(client: TestClient) -> None:
    listed = {m["name"]: m["memory_mib"] for m in client.get("/models").json()["models"]}
    assert sorted(listed) == sorted(MODELS)
    assert all(isinstance(mib, float) and mib >= 0 for mib in listed.values()), listed
    assert client.get(f"/models/{UPSCALER}").json()["memory_mib"] == listed[UPSCALER]
    metrics = client.get("/metrics").text
    for name, mib in listed.items():
        found = re.search(rf'^gan_serve_model_memory_bytes{{model="{name}"}} (\S+)$', metrics, re.M)
        assert found is not None, name
        assert round(float(found.group(1)) / 2**20, 1) == mib


def test_upscaler_warm_up_memory_is_handed_back(repo: Path) -> None:
    # A 512 + 2 x 16 = 544-pixel warm-up tile: the test upscaler's 48-channel activations at 544²
    # in float32 are 57 MiB each, and a run holds several at once (about 200 MiB). Kept in
    # onnxruntime's arena, all of it would stay resident while the service idles.
    settings = Settings(models_dir=repo, tile_size=512, tile_overlap=16, warmup_batch_sizes=[1])
    with TestClient(create_app(settings)) as client:
        assert client.get("/health/ready").status_code == 200
        memory = {m["name"]: m["memory_mib"] for m in client.get("/models").json()["models"]}
    assert memory[UPSCALER] < 40, memory


def test_upscale_without_the_cpu_arena_gives_the_same_pixels(client: TestClient, repo: Path) -> None:
    data = png_bytes(random_pixels(40, 50, 3, seed=9))
    settings = Settings(
        models_dir=repo,
        tile_size=32,
        tile_overlap=12,
        warmup_batch_sizes=[1],
        cpu_mem_arena_upscaler=False,
        cpu_mem_arena_generator=False,
    )

    def npy(test_client: TestClient) -> np.ndarray:
        response = test_client.post(
            "/upscale", content=data, headers={"content-type": "image/png"}, params={"format": "npy"}
        )
        assert response.status_code == 200, response.text
        return np.load(io.BytesIO(response.content))

    def generated(test_client: TestClient) -> bytes:
        response = test_client.post("/generate", json={"model": RGB_GENERATOR, "seed": 3, "n": 4})
        assert response.status_code == 200, response.text
        return response.content

    with TestClient(create_app(settings)) as without_arena:
        np.testing.assert_array_equal(npy(without_arena), npy(client))
        assert generated(without_arena) == generated(client)


def _rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def test_an_idle_upscaler_hands_its_working_memory_back(repo: Path) -> None:
    """After a large upscale the arena holds its working set; idle a moment, the service gives it back."""
    settings = Settings(
        models_dir=repo, tile_size=512, tile_overlap=16, warmup_batch_sizes=[1], arena_idle_release_s=0.3
    )
    image = png_bytes(random_pixels(512, 512, 3, seed=4))
    with TestClient(create_app(settings)) as client:
        before = _rss_mib()
        response = client.post("/upscale", content=image, headers={"content-type": "image/png"})
        assert response.status_code == 200, response.text
        grown = _rss_mib()
        released = grown
        for _ in range(150):  # up to 15 s: a loaded CI host may hold the release thread back
            time.sleep(0.1)
            released = _rss_mib()
            if released < grown - (grown - before) / 3:
                break
    assert grown - before > 100, (before, grown)  # the upscale's working set really was kept
    # At least a third of it handed back (glibc may keep some of what onnxruntime frees).
    assert released < grown - (grown - before) / 3, (before, grown, released)
