"""DynamicBatcher: what callers see when their requests share batches. Behaviour only, no timings."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient
from onnx import TensorProto, helper
from PIL import Image

from service.app import create_app
from service.batching import BatchingRunner, DynamicBatcher, batch_buckets, open_connections
from service.card import read_card
from service.errors import (
    BatcherClosed,
    BatchOutputMismatch,
    InferenceError,
    QueueFull,
    ServiceError,
)
from service.runner import SessionRunner
from service.settings import Settings, cpu_cores
from tests.service.conftest import RGB_GENERATOR, UPSCALER
from tests.service.sample_images import png_bytes, random_pixels

pytestmark = pytest.mark.anyio

# Generous bound so a broken batcher fails the test instead of hanging it; never a timing assert.
HANG = 30.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Recorder:
    """A real numpy batch function (y = 2x + 1 per row) that records each batch it sees."""

    def __init__(self, fail_on_nan: bool = False) -> None:
        self.batches: list[np.ndarray] = []
        self.fail_on_nan = fail_on_nan
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.batches.append(batch.copy())
        self.entered.set()
        self.gate.wait(HANG)
        if self.fail_on_nan and np.isnan(batch).any():
            raise ValueError("model input holds NaN")
        return batch * 2.0 + 1.0

    @property
    def sizes(self) -> list[int]:
        return [len(b) for b in self.batches]


def rows(n: int, start: float = 0.0, width: int = 3) -> np.ndarray:
    return (np.arange(n * width, dtype=np.float32).reshape(n, width) + start).astype(np.float32)


async def wait_until(condition: Callable[[], bool]) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.001)

    await asyncio.wait_for(poll(), HANG)


async def hold_first_batch(batcher: DynamicBatcher, fn: Recorder) -> asyncio.Task[np.ndarray]:
    """Start a one-row request and keep its batch running until `fn.gate` is set."""
    fn.gate.clear()
    fn.entered.clear()
    first = asyncio.create_task(batcher.submit(rows(1, start=-100)))
    await wait_until(fn.entered.is_set)
    return first


async def test_a_stream_runs_the_batches_queued_behind_it_while_the_event_loop_is_busy() -> None:
    # One stream, batches of 2: three queued requests are three batches. The second one blocks
    # until the event loop itself stops to wait for the rest: they must run without it.
    calls: list[int] = []
    blocked, release = threading.Event(), threading.Event()

    def function(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        if len(calls) == 2:
            blocked.set()
            release.wait(HANG)
        return batch * 2.0 + 1.0

    fn = Recorder()
    batcher = DynamicBatcher(lambda batch: function(fn(batch)), max_batch_size=2, max_concurrent_batches=1)
    first = await hold_first_batch(batcher, fn)
    inputs = [rows(2, start=100 * i) for i in range(3)]
    tasks = [asyncio.create_task(batcher.submit(x)) for x in inputs]
    await wait_until(lambda: batcher.queued_requests == 3)
    fn.gate.set()
    await wait_until(blocked.is_set)
    release.set()
    deadline = time.monotonic() + HANG
    while len(calls) < 4 and time.monotonic() < deadline:
        time.sleep(0.001)  # the event loop's thread, busy: nothing it schedules runs meanwhile
    assert calls == [1, 2, 2, 2]
    results = await asyncio.wait_for(asyncio.gather(first, *tasks), HANG)
    for x, y in zip(inputs, results[1:], strict=True):
        np.testing.assert_array_equal(y, (x * 2.0 + 1.0) * 2.0 + 1.0)
    await batcher.close()


async def test_concurrent_requests_share_a_batch_and_each_gets_its_own_rows() -> None:
    fn = Recorder()
    batcher = DynamicBatcher(fn, max_batch_size=64, max_queue_delay_ms=0)
    first = await hold_first_batch(batcher, fn)
    inputs = [rows(k, start=100 * i) for i, k in enumerate([1, 2, 3, 1, 4, 1, 2, 2])]
    tasks = [asyncio.create_task(batcher.submit(x)) for x in inputs]
    await wait_until(lambda: batcher.queued_requests == len(inputs))
    fn.gate.set()
    results = await asyncio.wait_for(asyncio.gather(first, *tasks), HANG)

    assert fn.sizes == [1, sum(len(x) for x in inputs)]
    for x, y in zip(inputs, results[1:], strict=True):
        np.testing.assert_array_equal(y, x * 2.0 + 1.0)
    await batcher.close()


async def test_a_full_batch_is_sent_without_waiting_for_the_delay() -> None:
    fn = Recorder()
    # A delay far beyond the test's bound: the batch can only go out because it is full.
    batcher = DynamicBatcher(fn, max_batch_size=8, max_queue_delay_ms=10 * HANG * 1000)
    inputs = [rows(1, start=i) for i in range(8)]
    results = await asyncio.wait_for(asyncio.gather(*(batcher.submit(x) for x in inputs)), HANG)
    assert fn.sizes == [8]
    for x, y in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(y, x * 2.0 + 1.0)
    await batcher.close()


async def test_a_lone_request_is_flushed_after_the_max_delay() -> None:
    fn = Recorder()
    batcher = DynamicBatcher(fn, max_batch_size=64, max_queue_delay_ms=5)
    x = rows(1)
    y = await asyncio.wait_for(batcher.submit(x), HANG)
    np.testing.assert_array_equal(y, x * 2.0 + 1.0)
    assert fn.sizes == [1]
    await batcher.close()


async def test_a_request_larger_than_a_batch_is_split_and_reassembled_in_order() -> None:
    fn = Recorder()
    batcher = DynamicBatcher(fn, max_batch_size=4, max_queue_delay_ms=0)
    x = rows(10)
    y = await asyncio.wait_for(batcher.submit(x), HANG)
    np.testing.assert_array_equal(y, x * 2.0 + 1.0)
    assert fn.sizes == [4, 4, 2]
    await batcher.close()


async def test_batches_are_filled_exactly_across_request_boundaries() -> None:
    fn = Recorder()
    batcher = DynamicBatcher(fn, max_batch_size=4, max_queue_delay_ms=0)
    first = await hold_first_batch(batcher, fn)
    inputs = [rows(3, start=10 * i) for i in range(4)]
    tasks = [asyncio.create_task(batcher.submit(x)) for x in inputs]
    await wait_until(lambda: batcher.queued_requests == len(inputs))
    fn.gate.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks), HANG)
    await first
    assert fn.sizes == [1, 4, 4, 4]
    for x, y in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(y, x * 2.0 + 1.0)
    await batcher.close()


async def test_a_bad_request_fails_alone_and_the_batcher_keeps_working() -> None:
    fn = Recorder(fail_on_nan=True)
    batcher = DynamicBatcher(fn, max_batch_size=64, max_queue_delay_ms=0)
    first = await hold_first_batch(batcher, fn)
    good = [rows(2, start=i) for i in range(3)]
    bad = rows(2)
    bad[1, 0] = np.nan
    tasks = [asyncio.create_task(batcher.submit(x)) for x in [good[0], bad, good[1], good[2]]]
    await wait_until(lambda: batcher.queued_requests == 4)
    fn.gate.set()
    outcomes = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), HANG)
    await first

    assert isinstance(outcomes[1], ValueError)
    assert "NaN" in str(outcomes[1])
    for x, y in zip(good, [outcomes[0], outcomes[2], outcomes[3]], strict=True):
        assert isinstance(y, np.ndarray)
        np.testing.assert_array_equal(y, x * 2.0 + 1.0)

    later = await asyncio.wait_for(batcher.submit(rows(1)), HANG)
    np.testing.assert_array_equal(later, rows(1) * 2.0 + 1.0)
    await batcher.close()


async def test_a_failing_batch_of_one_request_reports_the_model_error() -> None:
    def broken(batch: np.ndarray) -> np.ndarray:
        raise RuntimeError("session run failed")

    batcher = DynamicBatcher(broken, max_batch_size=8, max_queue_delay_ms=0)
    with pytest.raises(RuntimeError, match="session run failed"):
        await asyncio.wait_for(batcher.submit(rows(3)), HANG)
    await batcher.close()


async def test_an_output_with_the_wrong_row_count_fails_every_member_clearly() -> None:
    fn = Recorder()

    def drops_a_row(batch: np.ndarray) -> np.ndarray:
        return fn(batch)[1:]

    batcher = DynamicBatcher(drops_a_row, max_batch_size=64, max_queue_delay_ms=0)
    first = await hold_first_batch(batcher, fn)
    tasks = [asyncio.create_task(batcher.submit(rows(2, start=i))) for i in range(3)]
    await wait_until(lambda: batcher.queued_requests == 3)
    fn.gate.set()
    outcomes = await asyncio.wait_for(asyncio.gather(first, *tasks, return_exceptions=True), HANG)
    for outcome in outcomes:
        assert isinstance(outcome, BatchOutputMismatch)
        assert isinstance(outcome, InferenceError)
    assert "returned shape (5, 3) for a batch of 6 rows" in str(outcomes[1])
    await batcher.close()


async def test_a_full_queue_refuses_with_a_retry_after() -> None:
    fn = Recorder()
    batcher = DynamicBatcher(fn, max_batch_size=64, max_queue_delay_ms=0, max_queue_size=2)
    first = await hold_first_batch(batcher, fn)
    queued = [asyncio.create_task(batcher.submit(rows(1, start=i))) for i in range(2)]
    await wait_until(lambda: batcher.queued_requests == 2)

    with pytest.raises(QueueFull) as refused:
        await batcher.submit(rows(1))
    assert refused.value.status_code == 503
    assert isinstance(refused.value, ServiceError)
    assert refused.value.retry_after >= 1
    assert "max_queue_size 2" in str(refused.value)

    fn.gate.set()
    await asyncio.wait_for(asyncio.gather(first, *queued), HANG)
    # Room again once the queue has drained.
    await asyncio.wait_for(batcher.submit(rows(1)), HANG)
    await batcher.close()


async def test_only_rows_of_the_same_shape_share_a_batch() -> None:
    fn = Recorder()
    batcher = DynamicBatcher(fn, max_batch_size=64, max_queue_delay_ms=0)
    first = await hold_first_batch(batcher, fn)
    rng = np.random.default_rng(0)
    small = [rng.random((4, 8, 8, 3), dtype=np.float32) for _ in range(2)]  # tiles of two images
    large = [rng.random((2, 16, 16, 3), dtype=np.float32) for _ in range(2)]
    inputs = [small[0], large[0], small[1], large[1]]
    tasks = [asyncio.create_task(batcher.submit(x)) for x in inputs]
    await wait_until(lambda: batcher.queued_requests == 4)
    fn.gate.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks), HANG)
    await first

    shapes = sorted(b.shape for b in fn.batches[1:])
    assert shapes == [(4, 16, 16, 3), (8, 8, 8, 3)]
    for x, y in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(y, x * 2.0 + 1.0)
    await batcher.close()


async def test_a_cancelled_request_never_reaches_the_model() -> None:
    fn = Recorder()
    batcher = DynamicBatcher(fn, max_batch_size=64, max_queue_delay_ms=0)
    first = await hold_first_batch(batcher, fn)
    kept = asyncio.create_task(batcher.submit(rows(1, start=1)))
    dropped = asyncio.create_task(batcher.submit(rows(5, start=2)))
    await wait_until(lambda: batcher.queued_requests == 2)
    dropped.cancel()
    await wait_until(lambda: batcher.queued_requests == 1)
    fn.gate.set()
    await asyncio.wait_for(asyncio.gather(first, kept), HANG)
    assert fn.sizes == [1, 1]
    await batcher.close()


async def test_a_cancelled_request_split_across_batches_drops_the_rows_not_yet_running() -> None:
    fn = Recorder()
    fn.gate.clear()
    batcher = DynamicBatcher(fn, max_batch_size=4, max_queue_delay_ms=0)
    # Six rows: the first four run (held at the gate), the last two wait for the next batch.
    split = asyncio.create_task(batcher.submit(rows(6)))
    await wait_until(fn.entered.is_set)
    assert batcher.queued_requests == 1
    split.cancel()
    await wait_until(lambda: batcher.queued_requests == 0)
    fn.gate.set()
    later = await asyncio.wait_for(batcher.submit(rows(1, start=9)), HANG)
    np.testing.assert_array_equal(later, rows(1, start=9) * 2.0 + 1.0)
    assert fn.sizes == [4, 1]
    await batcher.close()


async def test_close_drains_queued_requests_then_refuses_new_ones() -> None:
    fn = Recorder()
    batcher = DynamicBatcher(fn, max_batch_size=64, max_queue_delay_ms=0)
    first = await hold_first_batch(batcher, fn)
    queued = asyncio.create_task(batcher.submit(rows(2)))
    await wait_until(lambda: batcher.queued_requests == 1)
    closing = asyncio.create_task(batcher.close())
    await asyncio.sleep(0)  # close() stops intake before its first await
    with pytest.raises(BatcherClosed):
        await batcher.submit(rows(1))
    fn.gate.set()
    await asyncio.wait_for(closing, HANG)
    np.testing.assert_array_equal(await queued, rows(2) * 2.0 + 1.0)
    await first


async def test_metrics_see_every_batch_size_and_queue_time() -> None:
    class Collect:
        def __init__(self) -> None:
            self.values: list[float] = []

        def observe(self, amount: float) -> None:
            self.values.append(amount)

    sizes, waits = Collect(), Collect()
    fn = Recorder()
    batcher = DynamicBatcher(
        fn, max_batch_size=4, max_queue_delay_ms=0, batch_size_observer=sizes, queue_time_observer=waits
    )
    await asyncio.wait_for(batcher.submit(rows(6)), HANG)
    await asyncio.wait_for(batcher.submit(rows(1)), HANG)
    assert sizes.values == [4, 2, 1]
    assert len(waits.values) == 2  # one per request, however many batches it spans
    assert all(w >= 0 for w in waits.values)
    await batcher.close()


# -- streams: several batches of one model in flight, and the fast path ---------------------------


async def test_with_two_streams_a_second_batch_runs_while_the_first_is_still_running() -> None:
    fn = Recorder()
    batcher = DynamicBatcher(fn, max_batch_size=64, max_queue_delay_ms=0, max_concurrent_batches=2)
    first = await hold_first_batch(batcher, fn)
    second = asyncio.create_task(batcher.submit(rows(2, start=10)))
    await wait_until(lambda: len(fn.batches) == 2)  # entered the model with the first still held
    assert batcher.queued_requests == 0
    fn.gate.set()
    np.testing.assert_array_equal(await asyncio.wait_for(second, HANG), rows(2, start=10) * 2.0 + 1.0)
    await first
    await batcher.close()


async def test_requests_queue_when_every_stream_is_busy_and_batch_up_behind_them() -> None:
    fn = Recorder()
    batcher = DynamicBatcher(fn, max_batch_size=64, max_queue_delay_ms=0, max_concurrent_batches=2)
    held = [await hold_first_batch(batcher, fn)]
    held.append(asyncio.create_task(batcher.submit(rows(1, start=-200))))
    await wait_until(lambda: len(fn.batches) == 2)
    inputs = [rows(k, start=100 * i) for i, k in enumerate([1, 3, 2])]
    tasks = [asyncio.create_task(batcher.submit(x)) for x in inputs]
    await wait_until(lambda: batcher.queued_requests == 3)
    assert len(fn.batches) == 2  # no third batch while both streams run
    fn.gate.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks), HANG)
    await asyncio.wait_for(asyncio.gather(*held), HANG)
    assert fn.sizes == [1, 1, 6]
    for x, y in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(y, x * 2.0 + 1.0)
    await batcher.close()


async def test_while_another_batch_runs_a_small_batch_waits_for_company() -> None:
    fn = Recorder()
    batcher = DynamicBatcher(
        fn, max_batch_size=64, max_concurrent_batches=2, min_batch_while_busy=3, busy_wait_s=HANG
    )
    first = await hold_first_batch(batcher, fn)  # the model is busy, one stream is free
    inputs = [rows(1, start=100 * i) for i in range(3)]
    tasks = [asyncio.create_task(batcher.submit(x)) for x in inputs[:2]]
    await wait_until(lambda: batcher.queued_requests == 2)
    await asyncio.sleep(0.05)
    assert len(fn.batches) == 1  # two rows wait for a third instead of taking the free stream
    tasks.append(asyncio.create_task(batcher.submit(inputs[2])))
    await wait_until(lambda: len(fn.batches) == 2)  # three: they go, the first batch still running
    assert fn.sizes == [1, 3]
    fn.gate.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks), HANG)
    for x, y in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(y, x * 2.0 + 1.0)
    await first
    await batcher.close()


async def test_a_small_batch_held_back_starts_as_soon_as_the_running_batch_ends() -> None:
    fn = Recorder()
    batcher = DynamicBatcher(
        fn, max_batch_size=64, max_concurrent_batches=2, min_batch_while_busy=4, busy_wait_s=HANG
    )
    first = await hold_first_batch(batcher, fn)
    second = asyncio.create_task(batcher.submit(rows(1, start=7)))
    await wait_until(lambda: batcher.queued_requests == 1)
    fn.gate.set()  # only the first batch's end can start it: its own wait is the test's bound
    np.testing.assert_array_equal(await asyncio.wait_for(second, HANG), rows(1, start=7) * 2.0 + 1.0)
    await first
    assert fn.sizes == [1, 1]
    # An idle model runs a request at once, however few its rows.
    np.testing.assert_array_equal(await asyncio.wait_for(batcher.submit(rows(1)), HANG), rows(1) * 2.0 + 1.0)
    await batcher.close()


async def test_a_small_batch_waits_about_one_batch_time_at_most_while_another_runs() -> None:
    gate = threading.Event()

    def model(batch: np.ndarray) -> np.ndarray:
        if (batch == -1.0).all():  # the held batch: runs until the test lets it go
            gate.wait(HANG)
        return batch * 2.0 + 1.0

    batcher = DynamicBatcher(model, max_batch_size=64, max_concurrent_batches=2, min_batch_while_busy=8)
    await batcher.submit(rows(1))  # a batch time to go by
    held = asyncio.create_task(batcher.submit(np.full((1, 3), -1.0, np.float32)))
    await asyncio.sleep(0.01)
    x = rows(1, start=3)
    # Never 8 rows, and the running batch never ends: the wait runs out and it takes the free stream.
    np.testing.assert_array_equal(await asyncio.wait_for(batcher.submit(x), HANG), x * 2.0 + 1.0)
    assert not held.done()
    gate.set()
    await held
    await batcher.close()


async def test_a_lone_request_runs_at_once_whatever_the_batch_size() -> None:
    fn = Recorder()
    batcher = DynamicBatcher(fn, max_batch_size=64, max_queue_delay_ms=0)
    for start in (0.0, 5.0):  # nothing else queued: each runs as its own batch, never waiting for company
        x = rows(3, start=start)
        np.testing.assert_array_equal(await asyncio.wait_for(batcher.submit(x), HANG), x * 2.0 + 1.0)
    assert fn.sizes == [3, 3]
    await batcher.close()


async def test_a_lone_request_is_spread_over_the_free_streams_and_reassembled_in_order() -> None:
    fn = Recorder()
    fn.gate.clear()
    batcher = DynamicBatcher(fn, max_batch_size=64, max_queue_delay_ms=0, max_concurrent_batches=3)
    x = rows(7)
    lone = asyncio.create_task(batcher.submit(x))
    await wait_until(lambda: len(fn.batches) == 3)  # three concurrent batches, all in the model at once
    fn.gate.set()
    np.testing.assert_array_equal(await asyncio.wait_for(lone, HANG), x * 2.0 + 1.0)
    assert sorted(fn.sizes) == [2, 2, 3]
    # One stream busy: the next lone request is spread over the two still free.
    first = await hold_first_batch(batcher, fn)
    y = rows(4, start=50)
    second = asyncio.create_task(batcher.submit(y))
    await wait_until(lambda: len(fn.batches) == 6)
    fn.gate.set()
    np.testing.assert_array_equal(await asyncio.wait_for(second, HANG), y * 2.0 + 1.0)
    await first
    assert sorted(fn.sizes[3:]) == [1, 2, 2]
    await batcher.close()


async def test_a_request_finding_the_model_idle_with_fewer_rows_than_streams_runs_lone() -> None:
    streams, lone = Recorder(), Recorder()
    lone.gate.clear()
    batcher = DynamicBatcher(
        streams, max_batch_size=64, max_queue_delay_ms=0, max_concurrent_batches=2, lone_function=lone
    )
    x = rows(1)
    first = asyncio.create_task(batcher.submit(x))
    await wait_until(lambda: len(lone.batches) == 1)
    # The lone run takes one stream: the next single row goes to the other, a one-thread stream.
    y = rows(1, start=5)
    np.testing.assert_array_equal(await asyncio.wait_for(batcher.submit(y), HANG), y * 2.0 + 1.0)
    lone.gate.set()
    np.testing.assert_array_equal(await asyncio.wait_for(first, HANG), x * 2.0 + 1.0)
    # Rows enough for every stream are spread over them, not sent lone.
    z = rows(4, start=9)
    np.testing.assert_array_equal(await asyncio.wait_for(batcher.submit(z), HANG), z * 2.0 + 1.0)
    assert lone.sizes == [1]
    assert streams.sizes == [1, 2, 2]
    await batcher.close()


def solo_batcher(
    streams: Recorder, lone: Recorder, solo: Recorder, solo_max_ms: float = 1000.0
) -> DynamicBatcher:
    executor = ThreadPoolExecutor(2, thread_name_prefix="stream")
    return DynamicBatcher(
        streams,
        max_batch_size=64,
        max_queue_delay_ms=0,
        max_concurrent_batches=2,
        lone_function=lone,
        solo_function=solo,
        solo_max_ms=solo_max_ms,
        executor=executor,
    )


async def test_a_lone_clients_request_runs_on_the_solo_function_in_the_event_loops_thread() -> None:
    streams, lone, solo = Recorder(), Recorder(), Recorder()
    batcher = solo_batcher(streams, lone, solo)
    finish = Finisher()
    token = open_connections.set({"the client's connection"})
    try:
        x, y = rows(1), rows(1, start=4)
        # The first lone request runs on the lone function, in a worker: it times such runs.
        assert await asyncio.wait_for(batcher.submit(x, finish), HANG) == (1, float((x * 2 + 1).sum()))
        await wait_until(batcher.idle)
        # From then on the lone client's requests run where they are awaited, finished there too.
        assert await asyncio.wait_for(batcher.submit(y, finish), HANG) == (1, float((y * 2 + 1).sum()))
        np.testing.assert_array_equal(await asyncio.wait_for(batcher.submit(x), HANG), x * 2.0 + 1.0)
    finally:
        open_connections.reset(token)
    assert lone.sizes == [1] and solo.sizes == [1, 1] and streams.sizes == []
    assert finish.threads[0].startswith("stream") and finish.threads[1] == threading.current_thread().name
    assert batcher.idle()
    await batcher.close()


async def test_with_other_connections_open_or_slow_runs_a_lone_request_stays_off_the_event_loop() -> None:
    streams, lone, solo = Recorder(), Recorder(), Recorder()
    batcher = solo_batcher(streams, lone, solo)
    token = open_connections.set({"this client", "another client"})
    try:
        for start in range(3):
            x = rows(1, start=start)
            np.testing.assert_array_equal(await asyncio.wait_for(batcher.submit(x), HANG), x * 2.0 + 1.0)
            await wait_until(batcher.idle)
    finally:
        open_connections.reset(token)
    # A request that did not come over HTTP (no connections known) is no lone client's either.
    np.testing.assert_array_equal(await asyncio.wait_for(batcher.submit(rows(1)), HANG), rows(1) * 2 + 1)
    assert lone.sizes == [1, 1, 1, 1] and solo.sizes == []
    await batcher.close()
    # Runs slower than the bound keep a lone client's requests in the workers too.
    streams, lone, solo = Recorder(), Recorder(), Recorder()
    slow = solo_batcher(streams, lone, solo, solo_max_ms=1e-6)
    token = open_connections.set({"the client's connection"})
    try:
        for start in range(3):
            await asyncio.wait_for(slow.submit(rows(1, start=start)), HANG)
            await wait_until(slow.idle)
    finally:
        open_connections.reset(token)
    assert lone.sizes == [1, 1, 1] and solo.sizes == []
    await slow.close()


async def test_a_lone_client_on_a_busy_model_goes_to_a_stream_and_a_failing_solo_run_fails_alone() -> None:
    streams, lone, solo = Recorder(fail_on_nan=True), Recorder(), Recorder(fail_on_nan=True)
    batcher = solo_batcher(streams, lone, solo)
    token = open_connections.set({"the client's connection"})
    try:
        await asyncio.wait_for(batcher.submit(rows(1)), HANG)  # times the lone runs
        await wait_until(batcher.idle)
        streams.gate.clear()
        busy = asyncio.create_task(batcher.submit(rows(2)))  # one row on each stream
        await wait_until(lambda: len(streams.batches) == 2)
        queued = asyncio.create_task(batcher.submit(rows(1, start=7)))
        await wait_until(lambda: batcher.queued_requests == 1)
        streams.gate.set()
        await asyncio.wait_for(asyncio.gather(busy, queued), HANG)
        await wait_until(batcher.idle)
        with pytest.raises(ValueError, match="NaN"):
            await asyncio.wait_for(batcher.submit(np.full((1, 3), np.nan, np.float32)), HANG)
        x = rows(1, start=3)
        np.testing.assert_array_equal(await asyncio.wait_for(batcher.submit(x), HANG), x * 2.0 + 1.0)
    finally:
        open_connections.reset(token)
    assert streams.sizes == [1, 1, 1] and lone.sizes == [1] and solo.sizes == [1, 1]
    assert batcher.idle()
    await batcher.close()


async def test_a_lone_request_whose_output_has_the_wrong_row_count_fails_clearly() -> None:
    def drops_a_row(batch: np.ndarray) -> np.ndarray:
        return batch[1:] if len(batch) > 2 else batch * 2.0 + 1.0

    batcher = DynamicBatcher(drops_a_row, max_batch_size=8, max_queue_delay_ms=0, max_concurrent_batches=1)
    with pytest.raises(BatchOutputMismatch, match="returned shape \\(2, 3\\) for a batch of 3 rows"):
        await asyncio.wait_for(batcher.submit(rows(3)), HANG)
    # The stream was given back: the next request runs.
    later = await asyncio.wait_for(batcher.submit(rows(1)), HANG)
    np.testing.assert_array_equal(later, rows(1) * 2.0 + 1.0)
    await batcher.close()


async def test_a_caller_that_leaves_mid_run_keeps_its_stream_until_the_run_ends() -> None:
    fn = Recorder()
    batcher = DynamicBatcher(fn, max_batch_size=64, max_queue_delay_ms=0, max_concurrent_batches=1)
    gone = await hold_first_batch(batcher, fn)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    # Its rows still run in the model: the next request must wait for them, not run beside them.
    waiting = asyncio.create_task(batcher.submit(rows(2, start=7)))
    await wait_until(lambda: batcher.queued_requests == 1)
    assert len(fn.batches) == 1
    fn.gate.set()
    np.testing.assert_array_equal(await asyncio.wait_for(waiting, HANG), rows(2, start=7) * 2.0 + 1.0)
    assert fn.sizes == [1, 2]
    await batcher.close()


class Finisher:
    """A `finish` that sums each request's rows and records the thread it ran in."""

    def __init__(self, fail_on_negative: bool = False) -> None:
        self.threads: list[str] = []
        self.fail_on_negative = fail_on_negative

    def __call__(self, out: np.ndarray) -> tuple[int, float]:
        self.threads.append(threading.current_thread().name)
        if self.fail_on_negative and (out < 0).any():
            raise ValueError("cannot render a negative value")
        return len(out), float(out.sum())


async def test_each_request_of_a_shared_batch_is_finished_in_the_worker_that_ran_the_batch() -> None:
    fn = Recorder()
    executor = ThreadPoolExecutor(2, thread_name_prefix="stream")
    batcher = DynamicBatcher(fn, max_batch_size=64, max_queue_delay_ms=0, executor=executor)
    first = await hold_first_batch(batcher, fn)
    finish = Finisher()
    inputs = [rows(k, start=10 * i) for i, k in enumerate([1, 3, 2])]
    tasks = [asyncio.create_task(batcher.submit(x, finish)) for x in inputs]
    await wait_until(lambda: batcher.queued_requests == 3)
    fn.gate.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks), HANG)
    await first
    assert fn.sizes == [1, 6]  # one batch for the three requests, finished one request at a time
    assert results == [(len(x), float((x * 2.0 + 1.0).sum())) for x in inputs]
    assert len(finish.threads) == 3
    assert all(name.startswith("stream") for name in finish.threads)
    await batcher.close()
    executor.shutdown()


async def test_a_lone_request_is_finished_where_it_ran_alone_or_spread_over_streams() -> None:
    streams, lone = Recorder(), Recorder()
    batcher = DynamicBatcher(
        streams, max_batch_size=64, max_queue_delay_ms=0, max_concurrent_batches=2, lone_function=lone
    )
    finish = Finisher()
    x, y = rows(1), rows(5, start=3)
    assert await asyncio.wait_for(batcher.submit(x, finish), HANG) == (1, float((x * 2.0 + 1.0).sum()))
    assert await asyncio.wait_for(batcher.submit(y, finish), HANG) == (5, float((y * 2.0 + 1.0).sum()))
    assert lone.sizes == [1]
    assert sorted(streams.sizes) == [2, 3]  # spread over both streams, finished whole afterwards
    assert len(finish.threads) == 2
    await batcher.close()


async def test_a_request_split_across_batches_is_finished_once_whole() -> None:
    fn = Recorder()
    batcher = DynamicBatcher(fn, max_batch_size=4, max_queue_delay_ms=0)
    first = await hold_first_batch(batcher, fn)
    finish = Finisher()
    x = rows(10)
    task = asyncio.create_task(batcher.submit(x, finish))
    await wait_until(lambda: batcher.queued_requests == 1)
    fn.gate.set()
    assert await asyncio.wait_for(task, HANG) == (10, float((x * 2.0 + 1.0).sum()))
    await first
    assert fn.sizes == [1, 4, 4, 2]
    assert len(finish.threads) == 1
    await batcher.close()


async def test_a_request_whose_finish_fails_fails_alone_and_its_batch_is_not_rerun() -> None:
    fn = Recorder()
    batcher = DynamicBatcher(fn, max_batch_size=64, max_queue_delay_ms=0)
    first = await hold_first_batch(batcher, fn)
    finish = Finisher(fail_on_negative=True)
    good, bad = rows(2), rows(1, start=-50)
    tasks = [asyncio.create_task(batcher.submit(x, finish)) for x in (good, bad)]
    await wait_until(lambda: batcher.queued_requests == 2)
    fn.gate.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), HANG)
    await first
    assert results[0] == (2, float((good * 2.0 + 1.0).sum()))
    assert isinstance(results[1], ValueError)
    assert "negative" in str(results[1])
    assert fn.sizes == [1, 3]  # the model ran once for both: a rendering error is no model error
    later = await asyncio.wait_for(batcher.submit(rows(1, start=1), finish), HANG)
    assert later[0] == 1
    await batcher.close()


async def test_close_waits_for_a_lone_request_already_running() -> None:
    fn = Recorder()
    batcher = DynamicBatcher(fn, max_batch_size=64, max_queue_delay_ms=0)
    running = await hold_first_batch(batcher, fn)
    closing = asyncio.create_task(batcher.close())
    for _ in range(20):  # far more loop turns than stopping an idle dispatcher takes
        await asyncio.sleep(0)
    assert not closing.done()
    fn.gate.set()
    await asyncio.wait_for(closing, HANG)
    assert running.done()
    np.testing.assert_array_equal(running.result(), rows(1, start=-100) * 2.0 + 1.0)


def test_the_streams_default_to_one_per_core_on_cpu_and_lone_requests_get_every_core() -> None:
    cores = cpu_cores()
    auto = Settings()
    assert auto.streams(on_cuda=False) == cores
    assert auto.session_threads(on_cuda=False) == 1
    assert auto.lone_threads(on_cuda=False) == (cores if cores > 1 else 0)
    assert auto.streams(on_cuda=True) == 1  # CUDA keeps one batch at a time, with every thread
    assert auto.session_threads(on_cuda=True) == cores
    assert auto.lone_threads(on_cuda=True) == 0
    one_stream = Settings(concurrent_batches=1)
    assert one_stream.session_threads(on_cuda=False) == cores
    assert one_stream.lone_threads(on_cuda=False) == 0  # its stream has every core already
    assert Settings(concurrent_batches=2, intra_op_threads=3).session_threads(on_cuda=False) == 3
    assert Settings(lone_runs_all_cores=False).lone_threads(on_cuda=False) == 0
    assert auto.solo_threads(on_cuda=False) == auto.lone_threads(on_cuda=False)
    assert auto.solo_threads(on_cuda=True) == 0
    assert Settings(solo_inline_max_ms=0).solo_threads(on_cuda=False) == 0


@pytest.fixture(scope="module")
def tiny_onnx_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real ONNX graph, y = tanh(x @ W), with a dynamic batch axis."""
    weights = np.linspace(-1, 1, 8 * 5, dtype=np.float32).reshape(8, 5)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Tanh", ["h"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
        initializer=[helper.make_tensor("W", TensorProto.FLOAT, [8, 5], weights.ravel())],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    path = tmp_path_factory.mktemp("tiny") / "model.onnx"
    onnx.save(model, path)
    return path


async def test_batched_onnxruntime_results_match_one_request_at_a_time(tiny_onnx_model: Path) -> None:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(tiny_onnx_model), options, providers=["CPUExecutionProvider"])
    sizes: list[int] = []

    def run(batch: np.ndarray) -> Any:
        sizes.append(len(batch))
        return session.run(["y"], {"x": batch})[0]

    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal((k, 8), dtype=np.float32) for k in [1, 3, 2, 1, 5, 1, 1, 2]]
    expected = [session.run(["y"], {"x": x})[0] for x in inputs]
    with ThreadPoolExecutor(1) as pool:
        batcher = DynamicBatcher(run, max_batch_size=16, max_queue_delay_ms=10 * HANG * 1000, executor=pool)
        results = await asyncio.wait_for(asyncio.gather(*(batcher.submit(x) for x in inputs)), HANG)
        await batcher.close()
    assert sizes == [16]
    for y, want in zip(results, expected, strict=True):
        np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-6)


@pytest.fixture(scope="module")
def rgb_session_runner(repo: Path) -> Iterator[SessionRunner]:
    """The real SessionRunner the service uses, over the test repository's RGB generator."""
    card = read_card(repo / RGB_GENERATOR)
    session = ort.InferenceSession(str(repo / RGB_GENERATOR / card.file), providers=["CPUExecutionProvider"])
    with ThreadPoolExecutor(1) as pool:
        yield SessionRunner(session, card, pool)


@pytest.mark.parametrize(("pad", "streams"), [(False, 1), (True, 1), (False, 2)])
async def test_batching_runner_gives_each_caller_what_the_session_gives_it_alone(
    rgb_session_runner: SessionRunner, pad: bool, streams: int
) -> None:
    inner = rgb_session_runner
    latent_size = inner.card.latent_size
    assert latent_size is not None
    rng = np.random.default_rng(2)
    inputs = [
        rng.standard_normal((k, latent_size), dtype=np.float32) for k in [1, 2, 3, 1, 5, 4]
    ]  # two full batches: with two streams, two concurrent runs of the one session
    expected = [inner.run_sync(x) for x in inputs]
    with ThreadPoolExecutor(streams) as pool:
        runner = BatchingRunner(
            inner,
            pool,
            max_batch_size=8,
            max_queue_delay_ms=10 * HANG * 1000,
            max_queue_size=16,
            concurrent_batches=streams,
            pad_to_buckets=pad,
        )
        results = await asyncio.wait_for(asyncio.gather(*(runner.run(x) for x in inputs)), HANG)
        await runner.close()
    for y, want in zip(results, expected, strict=True):
        assert y.shape == want.shape
        np.testing.assert_allclose(y, want, atol=1e-5)


def test_padded_runner_only_ever_runs_the_bucket_shapes(rgb_session_runner: SessionRunner) -> None:
    assert batch_buckets(1) == (1,)
    assert batch_buckets(64) == (1, 2, 4, 8, 16, 32, 64)
    assert batch_buckets(48) == (1, 2, 4, 8, 16, 32, 48)
    with ThreadPoolExecutor(1) as pool:
        runner = BatchingRunner(
            rgb_session_runner,
            pool,
            max_batch_size=6,
            max_queue_delay_ms=0,
            max_queue_size=4,
            pad_to_buckets=True,
        )
        out = runner.run_sync(np.zeros((3, 16), np.float32))
    assert out.shape == (3, 16, 16, 3)


# -- through the service: what an HTTP client and an operator see ----------------------------------


def _metric(client: TestClient, name: str, model: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f'{name}{{model="{model}"}}'):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} for {model} not in /metrics")


def _generate(client: TestClient, seed: int) -> np.ndarray:
    r = client.post("/generate", json={"model": RGB_GENERATOR, "n": 1, "seed": seed, "format": "npy"})
    assert r.status_code == 200, r.text
    return np.load(io.BytesIO(r.content)).astype(int)


def _serves_the_same_images(changed: Settings, client: TestClient, *, requests: int, edge: int) -> None:
    """Under `changed`, `requests` concurrent seeded images match `client`'s, and an upscale answers."""
    with TestClient(create_app(changed)) as serving, ThreadPoolExecutor(min(requests, 6)) as pool:
        images = list(pool.map(lambda seed: _generate(serving, seed), range(requests)))
        r = serving.post(
            "/upscale", content=png_bytes(random_pixels(edge, edge, 3)), headers={"content-type": "image/png"}
        )
        assert r.status_code == 200, r.text
    for seed, image in enumerate(images):
        assert np.abs(image - _generate(client, seed)).max() <= 1


def test_concurrent_http_requests_share_one_batch_and_get_their_own_images(
    settings: Settings, client: TestClient
) -> None:
    # A delay far beyond the test's bound: the four requests can only finish as one full batch
    # (and no images made ahead of demand add batches of their own).
    merged = settings.model_copy(
        update={"max_batch_size": 4, "max_queue_delay_ms": 10_000, "ready_images": 0}
    )
    with TestClient(create_app(merged)) as batched, ThreadPoolExecutor(4) as pool:
        images = list(pool.map(lambda seed: _generate(batched, seed), range(4)))
        assert _metric(batched, "gan_serve_batch_size_count", RGB_GENERATOR) == 1
        assert _metric(batched, "gan_serve_batch_size_sum", RGB_GENERATOR) == 4
        assert _metric(batched, "gan_serve_queue_wait_seconds_count", RGB_GENERATOR) == 4
    for seed, image in enumerate(images):
        assert np.abs(image - _generate(client, seed)).max() <= 1


def test_with_company_while_busy_concurrent_requests_get_the_images_they_get_alone(
    settings: Settings, client: TestClient
) -> None:
    waiting = settings.model_copy(update={"min_batch_while_busy": 4, "ready_images": 0})
    _serves_the_same_images(waiting, client, requests=12, edge=32)


def test_a_full_queue_answers_503_with_retry_after_and_queued_work_still_finishes(settings: Settings) -> None:
    tight = settings.model_copy(update={"max_queue_size": 1, "max_queue_delay_ms": 10_000})
    app = create_app(tight)
    with TestClient(app) as busy, ThreadPoolExecutor(1) as pool:
        repository = app.state.service.repository
        queued = pool.submit(busy.post, "/generate", json={"model": RGB_GENERATOR, "n": 1})
        deadline = time.monotonic() + HANG
        # What an operator watches: the model's queue gauge shows the request waiting.
        while _metric(busy, "gan_serve_queued_requests", RGB_GENERATOR) < 1 and time.monotonic() < deadline:
            time.sleep(0.001)
        refused = busy.post("/generate", json={"model": RGB_GENERATOR, "n": 1})
        assert refused.status_code == 503
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["error"]["code"] == "queue_full"
        # What shutdown does: the queued batch is sent at once instead of waiting out its delay.
        assert busy.portal is not None
        busy.portal.call(repository.close)
        assert queued.result(HANG).status_code == 200


def test_tiles_of_one_image_are_batched_together(settings: Settings) -> None:
    tiled = settings.model_copy(update={"max_queue_delay_ms": 50})
    with TestClient(create_app(tiled)) as upscaling:
        r = upscaling.post(
            "/upscale",
            content=png_bytes(random_pixels(192, 192, 3)),
            headers={"content-type": "image/png"},
            params={"tile": 64, "overlap": 16},
        )
        assert r.status_code == 200, r.text
        assert r.headers["x-tiles"] == "9"
        assert _metric(upscaling, "gan_serve_batch_size_sum", UPSCALER) == 9
        assert _metric(upscaling, "gan_serve_batch_size_count", UPSCALER) < 9


def test_batching_off_serves_the_same_images(settings: Settings, client: TestClient) -> None:
    with TestClient(create_app(settings.model_copy(update={"batching": False}))) as unbatched:
        for seed in (0, 1):
            assert np.abs(_generate(unbatched, seed) - _generate(client, seed)).max() <= 1
        assert "gan_serve_batch_size_count" not in unbatched.get("/metrics").text.split("# TYPE")[0]


def test_io_binding_runs_give_the_same_images(settings: Settings, client: TestClient) -> None:
    with TestClient(create_app(settings.model_copy(update={"io_binding": True}))) as bound:
        assert np.abs(_generate(bound, 3) - _generate(client, 3)).max() <= 1


def test_padded_batches_serve_the_same_images(settings: Settings, client: TestClient) -> None:
    padded = settings.model_copy(update={"pad_batches": True, "max_batch_size": 8})
    _serves_the_same_images(padded, client, requests=3, edge=40)


def test_lone_requests_on_a_session_of_their_own_give_the_same_images(settings: Settings) -> None:
    # Two one-thread streams: a lone request runs on the model's second session (where the machine
    # has more than one core), the same images as with that session turned off.
    # No images made ahead of demand: their batches would be counted too.
    streams = settings.model_copy(update={"concurrent_batches": 2, "intra_op_threads": 1, "ready_images": 0})
    image = png_bytes(random_pixels(40, 40, 3))
    answers = []
    for lone in (True, False):
        with TestClient(create_app(streams.model_copy(update={"lone_runs_all_cores": lone}))) as serving:
            generated = [_generate(serving, seed) for seed in (0, 1)]
            r = serving.post("/upscale", content=image, headers={"content-type": "image/png"})
            assert r.status_code == 200, r.text
            assert _metric(serving, "gan_serve_inference_seconds_count", RGB_GENERATOR) == 2
            answers.append((generated, np.asarray(Image.open(io.BytesIO(r.content))).astype(int)))
    (lone_images, lone_upscaled), (stream_images, stream_upscaled) = answers
    for a, b in zip(lone_images, stream_images, strict=True):
        assert np.abs(a - b).max() <= 1
    assert np.abs(lone_upscaled - stream_upscaled).max() <= 1
