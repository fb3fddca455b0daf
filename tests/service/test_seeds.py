"""Random seeds: each request that gives none gets its own, JavaScript-safe, never repeated by a fork."""

from __future__ import annotations

import multiprocessing

from fastapi.testclient import TestClient

from service.latents import RANDOM_SEED_BOUND, random_seed
from tests.service.conftest import RGB_GENERATOR


def test_random_seeds_differ_and_fit_a_javascript_number(client: TestClient) -> None:
    seeds = {
        int(client.post("/generate", json={"model": RGB_GENERATOR}).headers["x-seed"]) for _ in range(40)
    }
    assert len(seeds) == 40
    assert all(0 <= seed < RANDOM_SEED_BOUND for seed in seeds)


def _draw(pipe: multiprocessing.connection.Connection) -> None:
    pipe.send([random_seed() for _ in range(5)])


def test_a_forked_process_does_not_repeat_the_parents_seeds() -> None:
    random_seed()  # the parent has random bytes buffered when it forks
    parent_end, child_end = multiprocessing.Pipe()
    child = multiprocessing.get_context("fork").Process(target=_draw, args=(child_end,))
    child.start()
    from_child = parent_end.recv()
    child.join(10)
    assert not set(from_child) & {random_seed() for _ in range(5)}
