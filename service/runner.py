"""Model execution behind one small interface: float32 arrays in, float32 arrays out.

Routes only ever call `await runner.run(inputs)`, or `await runner.run_finished(inputs, finish)` to
have the output converted and encoded in the worker that computed it (one hop for both).
`SessionRunner` runs one onnxruntime session in a thread pool, at most `concurrent_runs` runs at
once (onnxruntime's `run` is thread-safe and releases the GIL, so runs overlap and the event loop
stays free for health checks).
`service.batching.BatchingRunner` wraps a `SessionRunner` in the same `ModelRunner` protocol and
merges concurrent calls into one session run (dynamic batching), so the routes never change.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Protocol, TypeVar

import numpy as np

from service.admission import ModelAdmission
from service.batching import Observer
from service.card import ModelCard
from service.errors import InferenceError

if TYPE_CHECKING:
    import onnxruntime as ort

log = logging.getLogger(__name__)
T = TypeVar("T")


class ModelRunner(Protocol):
    """Runs one model on a batch: `inputs` in the card's input layout, output in its output layout."""

    card: ModelCard
    #: The model's admitted work and measured throughput (`service.admission`).
    admission: ModelAdmission

    async def run(self, inputs: np.ndarray) -> np.ndarray: ...

    def idle(self) -> bool:
        """Whether no run is going and no request waits for one."""
        ...

    async def run_finished(self, inputs: np.ndarray, finish: Callable[[np.ndarray], T]) -> T:
        """`finish(await run(inputs))`, with `finish` called in the worker thread that ran the model."""
        ...


class SessionRunner:
    """A `ModelRunner` over one onnxruntime session, executed in a shared thread pool."""

    def __init__(
        self,
        session: ort.InferenceSession,
        card: ModelCard,
        executor: Executor,
        *,
        io_binding: bool = False,
        device: str = "cpu",
        device_id: int = 0,
        concurrent_runs: int = 1,
    ) -> None:
        self.card = card
        self._session = session
        self._executor = executor
        self.concurrent_runs = concurrent_runs
        # Created on first use: asyncio primitives belong to the loop that first uses them.
        self._streams: asyncio.Semaphore | None = None
        self.io_binding = io_binding
        self._device = device
        self._device_id = device_id
        #: Sees the seconds of each session run (`gan_serve_inference_seconds`), once warm.
        self.run_observer: Observer | None = None
        #: Prices requests by this session's measured runs (warm-up included, its first run not).
        self.admission = ModelAdmission(card.name, streams=concurrent_runs)
        #: Hands the session's unused CPU arena memory back (`sessions.release_warmup_memory`);
        #: `IdleMemoryRelease` calls it once the session has been idle a while after running.
        self.release_memory: Callable[[], None] | None = None
        #: The model's session for requests that find it idle (`sessions.lone_session`), and the
        #: one for a lone client's requests (spinning), whose memory is handed back with this one's.
        self.lone: SessionRunner | None = None
        self.solo: SessionRunner | None = None
        self._activity = threading.Lock()
        self._in_flight = 0
        self._last_finished = 0.0
        self._ran_since_release = False

    async def run(self, inputs: np.ndarray) -> np.ndarray:
        """Check `inputs` against the card, then run the session off the event loop (one stream)."""
        return await self._in_stream(self.run_sync, inputs)

    async def run_finished(self, inputs: np.ndarray, finish: Callable[[np.ndarray], T]) -> T:
        """`run`, then `finish(output)` in the same worker thread: one hop off the event loop."""
        return await self._in_stream(lambda rows: finish(self.run_sync(rows)), inputs)

    async def _in_stream(self, function: Callable[[np.ndarray], T], inputs: np.ndarray) -> T:
        """`function(inputs)` in the executor once one of the `concurrent_runs` streams is free."""
        if self._streams is None:
            self._streams = asyncio.Semaphore(self.concurrent_runs)
        streams = self._streams
        await streams.acquire()
        run = asyncio.get_running_loop().run_in_executor(self._executor, function, inputs)
        run.add_done_callback(lambda _: streams.release())
        # Shielded: a caller that leaves mid-run must not free the stream while the run goes on.
        return await asyncio.shield(run)

    def idle(self) -> bool:
        """Whether no run is going and no request waits for one."""
        with self._activity:
            return self._in_flight == 0 and (self._streams is None or not self._streams.locked())

    def run_sync(self, inputs: np.ndarray) -> np.ndarray:
        """Run the session in the calling thread (warm-up and benchmarks use this)."""
        self._check(inputs, self.card.input_shape, "input")
        with self._activity:
            self._in_flight += 1
        started = time.perf_counter()
        try:
            output = self._run_session(inputs)
        except Exception as exc:
            log.exception("model %s failed on input shape %s", self.card.name, inputs.shape)
            raise InferenceError(
                f"model {self.card.name} failed on input shape {list(inputs.shape)}"
            ) from exc
        finally:
            with self._activity:
                self._in_flight -= 1
                self._last_finished = time.monotonic()
                self._ran_since_release = True
        elapsed = time.perf_counter() - started
        self.admission.throughput.observe(inputs.size, elapsed)
        if self.run_observer is not None:
            self.run_observer.observe(elapsed)
        self._check(output, self.card.output_shape, "output")
        if output.shape[0] != inputs.shape[0]:
            raise InferenceError(
                f"model {self.card.name} returned {output.shape[0]} results for {inputs.shape[0]} inputs"
            )
        return output

    def release_if_idle(self, idle_s: float) -> bool:
        """Hand the arena's unused memory back if the session ran, then sat idle `idle_s`; say if it did.

        The lone and solo sessions, if any, are checked on their own: they idle while the streams run.
        """
        released = False
        for other in (self.lone, self.solo):
            if other is not None and other.release_if_idle(idle_s):
                released = True
        if self.release_memory is None:
            return released
        with self._activity:
            idle = self._in_flight == 0 and time.monotonic() - self._last_finished >= idle_s
            if not (idle and self._ran_since_release):
                return released
            self._ran_since_release = False
        self.release_memory()
        return True

    def _run_session(self, inputs: np.ndarray) -> np.ndarray:
        if not self.io_binding:
            return np.asarray(self._session.run([self.card.output_name], {self.card.input_name: inputs})[0])
        # On CUDA the brief measured 126k → 254k images/s (face DCGAN, batch 256) with I/O binding
        # over run(); not re-measured here. The output is allocated on `device` and copied back once.
        binding = self._session.io_binding()
        binding.bind_cpu_input(self.card.input_name, np.ascontiguousarray(inputs))
        binding.bind_output(self.card.output_name, self._device, self._device_id)
        self._session.run_with_iobinding(binding)
        return np.asarray(binding.copy_outputs_to_cpu()[0])

    def _check(self, array: np.ndarray, shape: list[int | None], what: str) -> None:
        if array.dtype != np.float32:
            raise InferenceError(f"model {self.card.name}: {what} dtype {array.dtype}, card says float32")
        fits = array.ndim == len(shape) and all(
            d is None or d == a for d, a in zip(shape, array.shape, strict=False)
        )
        if not fits:
            raise InferenceError(
                f"model {self.card.name}: {what} shape {list(array.shape)} does not fit the card's {shape}"
            )


class IdleMemoryRelease:
    """One thread that gives idle CPU sessions' arena memory back to the system.

    onnxruntime's CPU arena keeps the peak working set of the largest run it has seen (about 1 GB
    for a 1024x1024 upscale in 256-pixel tiles, more with several tile batches in flight) and never
    shrinks by itself. Once a session has been idle `idle_s` after running, one tiny shrinking run
    hands the unused part back; under load a session is never idle that long, so requests never
    pay for it, and the first request after a quiet spell grows the arena again once.
    """

    def __init__(self, runners: Sequence[SessionRunner], idle_s: float) -> None:
        self.runners = [runner for runner in runners if runner.release_memory is not None]
        self.idle_s = idle_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="idle-memory-release", daemon=True)

    def start(self) -> None:
        if self.runners and self.idle_s > 0:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _watch(self) -> None:
        while not self._stop.wait(max(self.idle_s / 2, 0.05)):
            for runner in self.runners:
                try:
                    runner.release_if_idle(self.idle_s)
                except Exception:  # Only memory is at stake: the model serves as well with it kept.
                    log.warning(
                        "model %s: could not release idle arena memory", runner.card.name, exc_info=True
                    )


async def run_in_chunks(runner: ModelRunner, inputs: np.ndarray) -> np.ndarray:
    """Run `inputs` whole, or in slices of the graph's batch size when the card fixes one."""
    chunk = _chunk_size(runner, inputs)
    if chunk is None:
        return await runner.run(inputs)
    return np.concatenate([await runner.run(inputs[i : i + chunk]) for i in range(0, len(inputs), chunk)])


async def run_in_chunks_finished(
    runner: ModelRunner, inputs: np.ndarray, finish: Callable[[np.ndarray], T]
) -> T:
    """`finish(await run_in_chunks(runner, inputs))`, finished in the worker that ran the last chunk."""
    chunk = _chunk_size(runner, inputs)
    if chunk is None:
        return await runner.run_finished(inputs, finish)
    parts = [await runner.run(inputs[i : i + chunk]) for i in range(0, len(inputs) - chunk, chunk)]
    last = inputs[len(inputs) - chunk :]
    return await runner.run_finished(last, lambda output: finish(np.concatenate([*parts, output])))


def _chunk_size(runner: ModelRunner, inputs: np.ndarray) -> int | None:
    """The graph's fixed batch size when `inputs` must be cut into runs of it; None: one run."""
    fixed_batch = runner.card.input_shape[0]
    if fixed_batch is None or fixed_batch == inputs.shape[0]:
        return None
    if inputs.shape[0] % fixed_batch:
        raise InferenceError(
            f"model {runner.card.name} takes batches of exactly {fixed_batch}, not {inputs.shape[0]}"
        )
    return fixed_batch
