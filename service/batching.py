"""Dynamic batching: merge concurrent requests into one model call, hand each its own rows back.

Modelled on Ray Serve's ``batching.py`` (a queue that groups calls, checks the output count
matches, hands every waiter its own result or the shared error) and Triton's dynamic batcher
(``max_batch_size``, ``max_queue_delay``, ``max_queue_size``). Knows nothing about HTTP or
onnxruntime: it batches numpy arrays for any ``(stacked rows) -> (stacked rows)`` function.

Behaviour, in the words a caller needs:

* ``await batcher.submit(rows)`` takes an array of ``k >= 1`` rows (axis 0) and returns the ``k``
  output rows for them, in order.
* Rows are the unit of batching. A batch is sent as soon as it holds ``max_batch_size`` rows, or
  when its oldest row has waited ``max_queue_delay_ms``, whichever comes first; while the model is
  busy (``max_concurrent_batches`` calls already running: its streams) rows keep queuing, so load
  itself makes batches bigger. A stream whose batch ends takes the next due batch from the queue
  itself, in its worker thread, and hands each batch's results to the event loop as it ends: a
  busy event loop never leaves a stream idle with requests queued. With the default delay of 0
  (Triton's default too) a request never waits for company, only for a busy model. Batches are
  filled exactly: a request may be split across consecutive batches (its rows stay in order and it
  completes when its last row does), so a request larger than ``max_batch_size`` is fine.
* The fast path: with a delay of 0, a request that finds nothing queued and a stream free is run at
  once by its own task, without the dispatcher's hand-offs (a lone client's latency is the
  model's); its rows are spread over every free stream (16 rows, two free streams: two concurrent
  batches of 8), so a lone request uses the cores the streams stand for. A request with fewer rows
  than streams that finds every stream free goes to ``lone_function`` instead, when there is one
  (`BatchingRunner`: a session with a thread per core), taking one stream. A delay above 0 is an
  operator's request to wait for company, and is honoured.
* A lone client: when such a request's connection is the server's only open one
  (`open_connections`, which the HTTP protocol sets for each request), no other request can arrive
  on it while this one runs, so with ``solo_function`` (`BatchingRunner`: a session whose threads
  spin while it runs) the request runs in the event loop's own thread, rendering included: no
  hand-off to a worker and back. Only while such runs of the model (smoothed, rendering included)
  take at most ``solo_max_ms``, which bounds how long the loop stays blocked for a newcomer.
* Company while busy: with ``min_batch_while_busy`` above 1, a batch with fewer rows than that
  does not start while another batch of the model runs; it waits for more rows, for that batch
  to end, or for about one batch's time (the smoothed seconds per batch, or ``busy_wait_s``),
  whichever comes first. On a CPU whose per-row cost falls with the batch (faces64: 3.3 ms a row
  alone, 2.6 ms in eights), a free stream otherwise takes each request as it comes, one row at a
  time, while the other stream runs a large batch. An idle model still runs a request at once.
  The held stream's core idles meanwhile, so the service leaves it off by default
  (`GAN_SERVE_MIN_BATCH_WHILE_BUSY`: it pays at 64 clients, costs at 2-8).
* Only rows with the same trailing shape and dtype are merged (the tiles of one image, same-size
  tiles of concurrent images, latent vectors of one generator).
* A failed batch holding several requests is re-run one request at a time, so a request that
  breaks the model fails alone and the others still get their rows. An output whose row count
  does not match its input fails every member with `BatchOutputMismatch`. The batcher keeps
  working after any error.
* At most ``max_queue_size`` requests wait (those not yet wholly inside a running batch); the next
  one gets `QueueFull`, which carries a ``retry_after`` estimate in whole seconds (HTTP 503 +
  ``Retry-After``). None: no limit (`BatchingRunner` admits requests in front instead).
* A caller that stops waiting (its task cancelled: a deadline, a client that left) takes its rows
  out of the queue at once; only rows already inside a running batch are still computed, and
  their stream stays taken until they are.
* ``close()`` stops intake and lets what is queued finish; ``submit`` then raises `BatcherClosed`.

`BatchingRunner` puts a `DynamicBatcher` behind the service's `ModelRunner` interface (one per
model), optionally padding batches to a few warmable shapes; its `ModelAdmission` bounds the
requests in progress and their work (`service.admission`), so the batcher itself is unbounded.

Its errors (`QueueFull`, `BatcherClosed`, `BatchOutputMismatch`) live in the service's one tree,
`service.errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sized
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from service.admission import ModelAdmission
from service.card import ModelCard
from service.errors import BatcherClosed, BatchOutputMismatch, QueueFull

Array = npt.NDArray[Any]
T = TypeVar("T")
BatchFunction = Callable[[Array], Array]
#: What a request does with its output rows in the worker thread that computed them (`submit`).
Finish = Callable[[Array], Any]

#: The open connections of the server the current request came in on, set per request by the HTTP
#: protocol (`service.http_protocol`): one means the request's client is alone (the solo path).
open_connections: contextvars.ContextVar[Sized | None] = contextvars.ContextVar(
    "open_connections", default=None
)


class Observer(Protocol):
    """Anything with ``observe(value)``, e.g. a `prometheus_client.Histogram` (or one of its labels)."""

    def observe(self, amount: float) -> None: ...


@dataclass(eq=False)
class _Request:
    """One `submit` call: its rows, its future, and the output parts received so far."""

    rows: Array
    #: The output rows, or with `finish` what it returned.
    future: asyncio.Future[Any]
    enqueued_at: float
    key: tuple[tuple[int, ...], str]
    finish: Finish | None = None
    queued: bool = True
    started: bool = False
    taken: int = 0
    done_rows: int = 0
    parts: dict[int, Array] = field(default_factory=dict)

    def deliver(self, start: int, out: Array) -> None:
        if self.future.done():
            return
        self.parts[start] = out
        self.done_rows += len(out)
        if self.done_rows == len(self.rows):
            if len(self.parts) == 1:
                result = out
            else:
                result = np.concatenate([self.parts[s] for s in sorted(self.parts)])
            self.parts.clear()
            self.future.set_result(result)

    def fail(self, exc: BaseException) -> None:
        self.parts.clear()
        if not self.future.done():
            self.future.set_exception(exc)

    def finished(self, value: object) -> None:
        """The request's whole output, already through its `finish` in the batch's worker."""
        self.parts.clear()
        self.finish = None
        if not self.future.done():
            self.future.set_result(value)


@dataclass(eq=False)
class _Piece:
    """Rows ``start:stop`` of a request, as placed into one batch."""

    request: _Request
    start: int
    stop: int

    @property
    def rows(self) -> Array:
        return self.request.rows[self.start : self.stop]

    @property
    def finish(self) -> Finish | None:
        """The request's `finish`, when this piece is all of it (a split request finishes apart)."""
        whole = self.start == 0 and self.stop == len(self.request.rows)
        return self.request.finish if whole else None


class _Failed:
    """A `finish` that raised, carried out of the worker to the one request it belongs to."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


@dataclass(eq=False)
class _Group:
    """Queued requests whose rows can share a batch (same trailing shape and dtype)."""

    requests: deque[_Request] = field(default_factory=deque)
    rows: int = 0


class DynamicBatcher:
    """Merges concurrent `submit` calls into batches for one batch function; see the module doc."""

    def __init__(
        self,
        batch_function: BatchFunction,
        *,
        max_batch_size: int = 64,
        max_queue_delay_ms: float = 0.0,
        max_queue_size: int | None = 1024,
        max_concurrent_batches: int = 1,
        min_batch_while_busy: int = 1,
        busy_wait_s: float | None = None,
        lone_function: BatchFunction | None = None,
        solo_function: BatchFunction | None = None,
        solo_max_ms: float = 0.0,
        executor: Executor | None = None,
        name: str = "batcher",
        batch_size_observer: Observer | None = None,
        queue_time_observer: Observer | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_queue_delay_ms < 0:
            raise ValueError(f"max_queue_delay_ms must be >= 0, got {max_queue_delay_ms}")
        if max_queue_size is not None and max_queue_size < 1:
            raise ValueError(f"max_queue_size must be >= 1, got {max_queue_size}")
        if max_concurrent_batches < 1:
            raise ValueError(f"max_concurrent_batches must be >= 1, got {max_concurrent_batches}")
        self._batch_function = batch_function
        self._lone_function = lone_function
        self._solo_function = solo_function
        self.solo_max_s = solo_max_ms / 1000.0
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_ms / 1000.0
        self.max_queue_size = max_queue_size
        self.max_concurrent_batches = max_concurrent_batches
        self.min_batch_while_busy = max(1, min_batch_while_busy)
        # Longest such a batch waits; None: the smoothed seconds per batch.
        self.busy_wait_s = busy_wait_s
        self.name = name
        self._executor = executor
        self._batch_size_observer = batch_size_observer
        self._queue_time_observer = queue_time_observer

        self._groups: dict[tuple[tuple[int, ...], str], _Group] = {}
        self._waiting = 0
        # Guards the queue (`_groups`, `_waiting`, each request's taken rows): the event loop adds
        # and drops requests, and a stream's worker takes its next batch there (`_stream`).
        self._lock = threading.RLock()
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        # Set on every arrival, freed stream and close: the dispatcher re-reads the queue then.
        self._arrival: asyncio.Event | None = None
        #: Batches running now (dispatched or fast-path), at most `max_concurrent_batches`.
        self._busy = 0
        self._dispatcher: asyncio.Task[None] | None = None
        self._running: set[asyncio.Future[Any]] = set()
        # Smoothed seconds per batch, for the Retry-After estimate.
        self._batch_seconds = 0.0
        # Smoothed seconds of a lone or solo request's run and rendering (0: none yet).
        self._lone_seconds = 0.0

    @property
    def queued_requests(self) -> int:
        """Requests waiting for a batch (not yet wholly inside a running one)."""
        return self._waiting

    def idle(self) -> bool:
        """Whether no batch runs and no request waits for one."""
        return self._busy == 0 and not self._groups

    async def submit(self, rows: Array, finish: Finish | None = None) -> Any:
        """Run `rows` (k >= 1 rows along axis 0) through the batch function; return its k output rows.

        With `finish`, return `finish(output rows)` instead, called in the worker thread that ran
        the batch, right after the run (one hop per batch: converting and encoding happen where
        the rows were computed); a request split across batches or streams finishes in one more
        hop once its last rows are in. An exception from `finish` fails this request alone.
        """
        if self._closing:
            raise BatcherClosed(f"{self.name}: shutting down, not accepting requests")
        if rows.ndim < 1 or rows.shape[0] < 1:
            raise ValueError(f"{self.name}: submit needs at least one row, got shape {rows.shape}")
        if self.max_queue_size is not None and self._waiting >= self.max_queue_size:
            raise QueueFull(
                f"{self.name}: {self._waiting} requests already queued (max_queue_size "
                f"{self.max_queue_size}); retry later",
                retry_after=self._retry_after(),
            )
        loop = self._ensure_started()
        free = self.max_concurrent_batches - self._busy
        if (
            not self._groups
            and free > 0
            and self.max_queue_delay_s == 0.0
            and len(rows) <= free * self.max_batch_size
            and (self._busy == 0 or len(rows) >= self.min_batch_while_busy)
        ):
            if self._queue_time_observer is not None:
                self._queue_time_observer.observe(0.0)
            if self._lone_function is not None and self._busy == 0 and len(rows) < free:
                if self._solo_now():
                    return self._run_solo(rows, finish)
                return await self._run_lone(loop, rows, finish)
            return await self._run_now(loop, rows, free, finish)
        key = (tuple(rows.shape[1:]), rows.dtype.str)
        request = _Request(
            rows=rows, future=loop.create_future(), enqueued_at=time.monotonic(), key=key, finish=finish
        )
        with self._lock:
            group = self._groups.setdefault(key, _Group())
            group.requests.append(request)
            group.rows += len(rows)
            self._waiting += 1
        request.future.add_done_callback(lambda _: self._forget(request))
        assert self._arrival is not None
        self._arrival.set()
        result = await request.future
        if request.finish is None:
            return result
        # Split across batches: its rows came back raw, piece by piece; finish them in one hop.
        return await loop.run_in_executor(self._executor, request.finish, result)

    async def close(self) -> None:
        """Stop intake, let every queued request get its batch, then return."""
        self._closing = True
        if self._arrival is not None:
            self._arrival.set()
        if self._dispatcher is not None:
            await asyncio.gather(self._dispatcher, return_exceptions=True)
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    async def _run_now(
        self, loop: asyncio.AbstractEventLoop, rows: Array, free: int, finish: Finish | None
    ) -> Any:
        """The fast path: run a lone request at once in the caller's task, spread over `free` streams."""
        if len(rows) == 1 or free == 1:
            return await self._run_whole(loop, self._batch_function, rows, finish)
        parts = np.array_split(rows, min(free, len(rows)))
        runs = [self._start(loop, self._batch_function, part, None) for part in parts]
        # Shielded: a caller that leaves mid-run must not free the streams while its rows still run.
        outputs: list[Array] = list(await asyncio.gather(*(asyncio.shield(run) for run in runs)))
        output = np.concatenate(outputs)
        if finish is None:
            return output
        return await loop.run_in_executor(self._executor, finish, output)

    async def _run_lone(self, loop: asyncio.AbstractEventLoop, rows: Array, finish: Finish | None) -> Any:
        """The fast path on an idle model: the whole request through `lone_function`, on one stream."""
        assert self._lone_function is not None
        return await self._run_whole(loop, self._lone_function, rows, finish, timed=True)

    def _solo_now(self) -> bool:
        """Whether a request on an idle model runs in the loop's thread (see the module doc)."""
        if self._solo_function is None or not 0.0 < self._lone_seconds <= self.solo_max_s:
            return False
        connections = open_connections.get()
        return connections is not None and len(connections) <= 1

    def _run_solo(self, rows: Array, finish: Finish | None) -> Any:
        """A lone client's request on an idle model: run and finished here, in the event loop's thread."""
        assert self._solo_function is not None
        self._busy += 1
        if self._batch_size_observer is not None:
            self._batch_size_observer.observe(len(rows))
        try:
            return self._timed_whole(self._solo_function, rows, finish)
        finally:
            self._busy -= 1
            assert self._arrival is not None
            self._arrival.set()

    async def _run_whole(
        self,
        loop: asyncio.AbstractEventLoop,
        function: BatchFunction,
        rows: Array,
        finish: Finish | None,
        *,
        timed: bool = False,
    ) -> Any:
        """One request as one batch on one stream, finished in the same worker."""
        run = self._start(loop, function, rows, finish, timed=timed)
        # Shielded: a caller that leaves mid-run must not free the stream while its rows still run.
        return await asyncio.shield(run)

    def _start(
        self,
        loop: asyncio.AbstractEventLoop,
        function: BatchFunction,
        batch: Array,
        finish: Finish | None,
        *,
        timed: bool = False,
    ) -> asyncio.Future[Any]:
        """Start one batch on a free stream, in the executor; the stream is freed when it ends.

        The run's output is checked in the worker (`BatchOutputMismatch`) and, with `finish`,
        finished there too. `timed`: a lone request's, whose seconds the solo path goes by.
        """
        self._busy += 1
        if self._batch_size_observer is not None:
            self._batch_size_observer.observe(len(batch))
        whole = self._timed_whole if timed else self._whole
        run = loop.run_in_executor(self._executor, whole, function, batch, finish)
        self._running.add(run)
        run.add_done_callback(self._batch_finished)
        return run

    def _ensure_started(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            # Created lazily: asyncio primitives belong to the loop that first uses them.
            self._loop = loop
            self._arrival = asyncio.Event()
            self._dispatcher = loop.create_task(self._dispatch_forever(), name=f"{self.name}-dispatch")
        elif self._loop is not loop:
            raise RuntimeError(f"{self.name}: used from a second event loop")
        return loop

    def _forget(self, request: _Request) -> None:
        """Drop a finished (e.g. cancelled) request from the queue if it is still there."""
        with self._lock:
            if not request.queued:
                return
            request.queued = False
            self._waiting -= 1
            group = self._groups.get(request.key)
            if group is not None:
                with contextlib.suppress(ValueError):
                    group.requests.remove(request)
                    group.rows -= len(request.rows) - request.taken
                if not group.requests:
                    del self._groups[request.key]

    def _retry_after(self) -> int:
        """Whole seconds until the queue has likely drained: queued batches times recent batch time."""
        per_batch = self._batch_seconds or 0.05
        with self._lock:
            queued_rows = sum(group.rows for group in self._groups.values())
        rounds = math.ceil(queued_rows / self.max_batch_size / self.max_concurrent_batches) + 1
        return max(1, math.ceil(per_batch * rounds))

    async def _dispatch_forever(self) -> None:
        try:
            await self._dispatch_loop()
        except BaseException as exc:
            # Never leave callers waiting on a dead dispatcher.
            self._closing = True
            error = BatcherClosed(f"{self.name}: dispatcher stopped: {exc!r}")
            with self._lock:
                queued = [request for group in self._groups.values() for request in group.requests]
            for request in queued:
                request.fail(error)
                self._forget(request)
            raise

    async def _dispatch_loop(self) -> None:
        while True:
            key = await self._next_ready_group()
            if key is None:
                return
            pieces = self._take(key)
            if not pieces:
                continue
            self._busy += 1
            task = asyncio.get_running_loop().create_task(self._run(pieces))
            self._running.add(task)
            task.add_done_callback(self._batch_finished)

    def _batch_finished(self, run: asyncio.Future[Any]) -> None:
        """A batch (dispatched or fast-path) is over: free its stream, wake the dispatcher."""
        self._running.discard(run)
        self._busy -= 1
        assert self._arrival is not None
        self._arrival.set()

    def _whole(self, function: BatchFunction, batch: Array, finish: Finish | None) -> Any:
        """In a worker: run one request's rows as one batch, check the output, finish it."""
        started = time.monotonic()
        output = self._split(function(batch), len(batch), [batch])[0]
        self._count_batch(time.monotonic() - started)
        return output if finish is None else finish(output)

    def _timed_whole(self, function: BatchFunction, batch: Array, finish: Finish | None) -> Any:
        """`_whole`, its seconds (run and rendering) smoothed into the lone requests' (any thread)."""
        started = time.monotonic()
        try:
            return self._whole(function, batch, finish)
        finally:
            seconds = time.monotonic() - started
            previous = self._lone_seconds or seconds
            self._lone_seconds = 0.8 * previous + 0.2 * seconds

    def _count_batch(self, seconds: float) -> None:
        """Smooth the seconds per batch (Retry-After's estimate); any thread."""
        previous = self._batch_seconds or seconds
        self._batch_seconds = 0.8 * previous + 0.2 * seconds

    async def _next_ready_group(self) -> tuple[tuple[int, ...], str] | None:
        """Wait until a stream is free and some group should be sent now; None once closing and empty."""
        assert self._arrival is not None
        while True:
            self._arrival.clear()
            if self._closing and not self._groups:
                return None
            if self._busy >= self.max_concurrent_batches or not self._groups:
                await self._arrival.wait()
                continue
            ready, earliest = self._due(others_running=self._busy)
            if ready is None:
                if self._closing:
                    return None
                await self._arrival.wait()
                continue
            timeout = earliest - time.monotonic()
            if timeout <= 0:
                return ready
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrival.wait(), timeout)

    def _due(self, others_running: int) -> tuple[tuple[tuple[int, ...], str] | None, float]:
        """The group whose batch is due first and when (monotonic; 0: now); (None, inf) if none waits.

        `others_running`: batches of this model running besides the one the batch would start
        (`min_batch_while_busy` holds a small batch back while there are any).
        """
        ready: tuple[tuple[int, ...], str] | None = None
        earliest = math.inf
        with self._lock:
            for key, group in self._groups.items():
                if not group.requests:
                    continue
                if group.rows >= self.max_batch_size or self._closing:
                    return key, 0.0
                delay = self.max_queue_delay_s
                if others_running and group.rows < self.min_batch_while_busy:
                    wait = self._batch_seconds if self.busy_wait_s is None else self.busy_wait_s
                    delay = max(delay, wait)
                deadline = group.requests[0].enqueued_at + delay
                if deadline < earliest:
                    ready, earliest = key, deadline
        return ready, earliest

    def _take(self, key: tuple[tuple[int, ...], str]) -> list[_Piece]:
        """Pop up to `max_batch_size` rows from one group, oldest first, splitting the last request."""
        with self._lock:
            group = self._groups.get(key)
            if group is None:  # a stream's worker took the last of it first
                return []
            pieces: list[_Piece] = []
            room = self.max_batch_size
            now = time.monotonic()
            while room and group.requests:
                request = group.requests[0]
                if request.future.done():
                    self._forget(request)
                    continue
                start = request.taken
                stop = min(len(request.rows), start + room)
                pieces.append(_Piece(request, start, stop))
                request.taken = stop
                group.rows -= stop - start
                room -= stop - start
                if not request.started:
                    request.started = True
                    if self._queue_time_observer is not None:
                        self._queue_time_observer.observe(now - request.enqueued_at)
                if stop == len(request.rows):
                    group.requests.popleft()
                    request.queued = False
                    self._waiting -= 1
            if not group.requests:
                self._groups.pop(key, None)
            return pieces

    async def _run(self, pieces: list[_Piece]) -> None:
        """Run a stream from one batch (`_stream`), its rows handed out as each batch ends; on a
        failed batch, isolate the culprit request by request."""
        # A caller may have gone between the batch being taken and it starting: skip its rows.
        pieces = [piece for piece in pieces if not piece.request.future.done()]
        if not pieces:
            return
        loop = asyncio.get_running_loop()
        failed = await loop.run_in_executor(self._executor, self._stream, pieces)
        if failed is None:
            return
        pieces, exc = failed
        if isinstance(exc, BatchOutputMismatch):
            for piece in pieces:
                piece.request.fail(exc)
            return
        if len({id(p.request) for p in pieces}) == 1:
            for piece in pieces:
                piece.request.fail(exc)
            return
        # One bad request must not sink its neighbours: re-run each on its own.
        for piece in pieces:
            if piece.request.future.done():
                continue
            try:
                (alone,) = await self._call([piece])
            except Exception as piece_exc:
                piece.request.fail(piece_exc)
            else:
                self._hand_out(piece, alone)

    def _stream(self, pieces: list[_Piece]) -> tuple[list[_Piece], Exception] | None:
        """In a worker, holding one stream: run `pieces`' batch, hand its results to the event loop,
        and while a batch is due the moment one ends, take it from the queue and run it too.

        The stream goes from batch to batch without waiting for the event loop (on a busy loop,
        that wait left a stream idle for milliseconds per batch with requests queued). Returns the
        batch that failed, with its error, for the loop to sort out; None once no batch is due.
        """
        assert self._loop is not None
        while pieces:
            try:
                outputs = self._run_pieces(pieces)
            except Exception as exc:
                return pieces, exc
            self._loop.call_soon_threadsafe(self._deliver, pieces, outputs)
            key, due = self._due(others_running=self._busy - 1)
            pieces = self._take(key) if key is not None and due <= time.monotonic() else []
        return None

    def _deliver(self, pieces: list[_Piece], outputs: list[object]) -> None:
        for piece, out in zip(pieces, outputs, strict=True):
            self._hand_out(piece, out)

    @staticmethod
    def _hand_out(piece: _Piece, out: object) -> None:
        """Give a piece's output (its rows, or its request's finished result or error) to its request."""
        if isinstance(out, _Failed):
            piece.request.fail(out.error)
        elif piece.finish is not None:
            piece.request.finished(out)
        else:
            assert isinstance(out, np.ndarray)
            piece.request.deliver(piece.start, out)

    async def _call(self, pieces: list[_Piece]) -> list[object]:
        """In one worker hop: stack the pieces, call the batch function once, check the row count,
        split the output, and finish each piece that is a whole request."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run_pieces, pieces)

    def _run_pieces(self, pieces: list[_Piece]) -> list[object]:
        """In a worker: `_batch_and_finish` on the pieces stacked into one batch."""
        return self._batch_and_finish(*self._stack(pieces))

    def _stack(self, pieces: list[_Piece]) -> tuple[Array, list[Array], list[Finish | None]]:
        """The pieces' rows as one batch (counted), each piece's part of it, and its finish."""
        parts = [piece.rows for piece in pieces]
        batch = parts[0] if len(parts) == 1 else np.concatenate(parts)
        if self._batch_size_observer is not None:
            self._batch_size_observer.observe(len(batch))
        return batch, parts, [piece.finish for piece in pieces]

    def _batch_and_finish(
        self, batch: Array, parts: list[Array], finishes: list[Finish | None]
    ) -> list[object]:
        """In a worker: the batch function on `batch`, cut into `parts`, each finished if it can be."""
        started = time.monotonic()
        outputs: list[Any] = list(self._split(self._batch_function(batch), len(batch), parts))
        self._count_batch(time.monotonic() - started)
        for index, finish in enumerate(finishes):
            if finish is None:
                continue
            try:
                outputs[index] = finish(outputs[index])
            except Exception as exc:
                # One request's rendering failing (too large, say) is that request's error alone.
                outputs[index] = _Failed(exc)
        return outputs

    def _split(self, result: object, rows: int, parts: list[Array]) -> list[Array]:
        """The batch function's output for `rows` rows, checked and cut into one slice per part."""
        if not isinstance(result, np.ndarray) or result.ndim < 1 or result.shape[0] != rows:
            got = f"shape {result.shape}" if isinstance(result, np.ndarray) else type(result).__name__
            raise BatchOutputMismatch(
                f"{self.name}: batch function returned {got} for a batch of {rows} rows"
            )
        if len(parts) == 1:
            return [result]
        outputs: list[Array] = []
        offset = 0
        for part in parts:
            outputs.append(result[offset : offset + len(part)])
            offset += len(part)
        return outputs


class SyncModelRunner(Protocol):
    """A model that runs a batch in the calling thread (`service.runner.SessionRunner`)."""

    @property
    def card(self) -> ModelCard: ...

    def run_sync(self, inputs: Array) -> Array: ...


def batch_buckets(max_batch_size: int) -> tuple[int, ...]:
    """Powers of two up to `max_batch_size` (and it): the batch shapes a padded runner ever runs."""
    sizes = [1 << i for i in range(max_batch_size.bit_length()) if 1 << i < max_batch_size]
    return (*sizes, max_batch_size)


class BatchingRunner:
    """A `service.runner.ModelRunner` whose concurrent `run` calls share session runs.

    With `pad_to_buckets`, every batch is padded with zero rows up to the next size in
    `batch_buckets(max_batch_size)`, so the session only ever sees those few shapes: on CUDA they
    can all be warmed up (cuDNN picks algorithms per shape) and the first real request is not slow.
    The padding rows are computed and thrown away, which is nearly free on a GPU and is why
    padding is off on CPU.

    `max_queue_size` bounds the requests in progress through `admission` (the core admits each
    request once, whatever number of pieces it submits), not the batcher's queue of pieces: the
    tiles of one image are many submits but one request.

    `concurrent_batches` is the model's streams: batches of this model running at once, each a
    concurrent session run (onnxruntime's `run` is thread-safe and releases the GIL). `lone`, when
    given, runs what the batcher's fast path sends it (a request with fewer rows than streams that
    finds the model idle): on CPU, a second session with a thread per core. `solo`, when given,
    runs such a request from a lone client in the event loop's thread while the model's lone runs
    take at most `solo_max_ms` (the batcher's solo path): on CPU, a third session that spins.
    """

    def __init__(
        self,
        inner: SyncModelRunner,
        executor: Executor,
        *,
        max_batch_size: int,
        max_queue_delay_ms: float,
        max_queue_size: int,
        concurrent_batches: int = 1,
        min_batch_while_busy: int = 1,
        lone: SyncModelRunner | None = None,
        solo: SyncModelRunner | None = None,
        solo_max_ms: float = 0.0,
        pad_to_buckets: bool = False,
        batch_size_observer: Observer | None = None,
        queue_time_observer: Observer | None = None,
    ) -> None:
        self.card = inner.card
        self.inner = inner
        self.lone = lone
        self.solo = solo
        self.buckets = batch_buckets(max_batch_size) if pad_to_buckets else ()
        #: Prices requests by this runner's measured batches (padding included, as it is computed).
        self.admission = ModelAdmission(
            inner.card.name, max_requests=max_queue_size, streams=concurrent_batches
        )
        self._batcher = DynamicBatcher(
            self._run_batch,
            max_batch_size=max_batch_size,
            max_queue_delay_ms=max_queue_delay_ms,
            max_queue_size=None,
            max_concurrent_batches=concurrent_batches,
            min_batch_while_busy=min_batch_while_busy,
            lone_function=self._run_lone if lone is not None else None,
            solo_function=self._run_solo if solo is not None else None,
            solo_max_ms=solo_max_ms,
            executor=executor,
            name=f"model {inner.card.name}",
            batch_size_observer=batch_size_observer,
            queue_time_observer=queue_time_observer,
        )

    async def run(self, inputs: Array) -> Array:
        """Queue `inputs` (k rows) for the next batch and return their k output rows."""
        output: Array = await self._batcher.submit(inputs)
        return output

    async def run_finished(self, inputs: Array, finish: Callable[[Array], T]) -> T:
        """Like `run`, then `finish(output rows)` in the worker that ran the batch (one hop)."""
        result: T = await self._batcher.submit(inputs, finish)
        return result

    def run_sync(self, inputs: Array) -> Array:
        """Run one batch now in the calling thread, padded like a batched run (warm-up uses this)."""
        return self._run_batch(inputs)

    async def close(self) -> None:
        """Stop taking requests; finish the queued ones."""
        await self._batcher.close()

    @property
    def queued_requests(self) -> int:
        """Requests waiting for a batch (the `gan_serve_queued_requests` gauge)."""
        return self._batcher.queued_requests

    def idle(self) -> bool:
        """Whether no batch runs and no request waits for one."""
        return self._batcher.idle()

    def _run_lone(self, batch: Array) -> Array:
        assert self.lone is not None
        # Not priced into admission: lone runs happen only on an idle model, faster than a stream's.
        return self.lone.run_sync(batch)

    def _run_solo(self, batch: Array) -> Array:
        assert self.solo is not None
        return self.solo.run_sync(batch)

    def _run_batch(self, batch: Array) -> Array:
        rows = len(batch)
        size = next((b for b in self.buckets if b >= rows), rows)
        if size != rows:
            padded = np.zeros((size, *batch.shape[1:]), batch.dtype)
            padded[:rows] = batch
            batch = padded
        started = time.perf_counter()
        output = self.inner.run_sync(batch)
        self.admission.throughput.observe(batch.size, time.perf_counter() - started)
        return output[:rows]
