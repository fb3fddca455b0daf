"""Admission by queued work: each model knows the work it has admitted and how fast it runs.

A request brings work: model input elements (latent values, tile pixels times channels) and, at
most, one session run per piece (a /generate's latents, each /upscale tile). `Throughput` prices
work in seconds, fitted to the model's recent session runs as overhead per run plus cost per
element. `ModelAdmission` holds what the admitted requests have still to do, and admits a new
request only if it can end before its deadline:

* its own work alone would take longer than any request may (the request deadline), with no
  other request in progress to blame: 413 (`TooCostly`, or the subclass the caller names), since
  waiting would not help;
* the queued work plus its own would not fit: 503 `queue_full` at once, with `Retry-After` for
  when enough of the queue should have drained;
* `max_requests` requests already in progress (queued or running): 503 `queue_full`.

Estimates err on the side of refusing: every piece is priced as a run of its own although batches
share runs, and runs measured while others ran concurrently look slower. A model with several
streams (concurrent batches) drains its queue that many runs at a time. Until the model has been
measured (the first run of a session pays one-time setup and is not counted), requests are admitted
on the count alone; the request deadline still bounds how long they can take.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from types import TracebackType

from service.errors import QueueFull, TooCostly


@dataclass(frozen=True)
class Work:
    """What a request asks of a model: input elements through it, in at most `runs` session runs."""

    elements: int
    runs: int


class Throughput:
    """Seconds per session run as `overhead + per_element x elements`, fitted to recent runs.

    The fit forgets old runs exponentially (`DECAY` per run), so it follows a model that got
    slower under load or faster once its shapes are warm. `observe` may be called from any thread.
    """

    DECAY = 0.9

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen = 0
        # Exponentially weighted sums of 1, x, y, x², xy (x: elements, y: seconds).
        self._w = self._x = self._y = self._xx = self._xy = 0.0

    def observe(self, elements: int, seconds: float) -> None:
        """Count one session run of `elements` input elements that took `seconds`."""
        with self._lock:
            self._seen += 1
            if self._seen == 1:
                # A session's first run sets up kernels and memory arenas: it says nothing about the rest.
                return
            d, x = self.DECAY, float(elements)
            self._w = self._w * d + 1.0
            self._x = self._x * d + x
            self._y = self._y * d + seconds
            self._xx = self._xx * d + x * x
            self._xy = self._xy * d + x * seconds

    def fit(self) -> tuple[float, float] | None:
        """(seconds per run, seconds per element), or None before any run was measured."""
        with self._lock:
            w, x, y, xx, xy = self._w, self._x, self._y, self._xx, self._xy
        if w == 0.0 or x <= 0.0:
            return None
        mean_x, mean_y = x / w, y / w
        variance = xx / w - mean_x * mean_x
        if variance > 1e-6 * mean_x * mean_x:
            per_element = (xy / w - mean_x * mean_y) / variance
            overhead = mean_y - per_element * mean_x
            if per_element > 0.0 and overhead >= 0.0:
                return overhead, per_element
            if per_element > 0.0:
                return 0.0, xy / xx
        # Runs of one size only (or a fit that makes no sense): the mean cost per element, overhead included.
        return 0.0, mean_y / mean_x

    def seconds(self, work: Work) -> float | None:
        """The estimated seconds `work` takes on its own, or None before any run was measured."""
        fitted = self.fit()
        if fitted is None:
            return None
        overhead, per_element = fitted
        return overhead * work.runs + per_element * work.elements


class ModelAdmission:
    """One model's admitted work not yet done, and the rule that admits or refuses a new request."""

    def __init__(self, name: str, max_requests: int | None = None, streams: int = 1) -> None:
        self.name = name
        self.max_requests = max_requests
        self.streams = streams
        self.throughput = Throughput()
        #: Requests admitted and not finished.
        self.requests = 0
        self._elements = 0.0
        self._runs = 0.0

    def queued_seconds(self) -> float:
        """Estimated seconds of admitted work not yet done (0 before the model was measured)."""
        work = self.throughput.seconds(Work(math.ceil(self._elements), math.ceil(self._runs))) or 0.0
        # Runs are timed while they share the cores with the model's other streams: `streams` of
        # them drain together.
        return work / self.streams

    def admit(
        self,
        work: Work,
        left_s: float,
        limit_s: float,
        *,
        what: str,
        advice: str,
        too_costly: type[TooCostly] = TooCostly,
    ) -> Ticket:
        """Reserve `work` if it can end within the `left_s` seconds its request has left; else refuse.

        `limit_s` is the most any request may take (the 413 compares with it, the 503 with `left_s`);
        `what` names the request in messages ("this 1024x1024 upscale (16 tiles)"); `advice` says
        how to ask for less. See the module doc for the rule.
        """
        wait = self.queued_seconds()
        if self.max_requests is not None and self.requests >= self.max_requests:
            raise QueueFull(
                f"model {self.name}: {self.requests} requests already in progress (max_queue_size "
                f"{self.max_requests}); retry later",
                retry_after=max(1, math.ceil(wait / self.requests)),
            )
        own = self.throughput.seconds(work)
        if own is None:
            return Ticket(self, work)
        if own > limit_s and self.requests == 0:
            raise too_costly(
                f"{what} would take about {own:.1f} s on model {self.name} (measured on its recent runs), "
                f"more than the {limit_s:g} s a request may take here; {advice}"
            )
        if wait + own > left_s:
            retry_after = max(1, math.ceil(wait + own - left_s))
            raise QueueFull(
                f"model {self.name} has about {wait:.1f} s of work queued and {what} needs about "
                f"{own:.1f} s: more than the {left_s:.1f} s this request has left; retry after "
                f"{retry_after} s",
                retry_after=retry_after,
            )
        return Ticket(self, work)

    def _add(self, elements: float, runs: float, requests: int) -> None:
        self._elements = max(0.0, self._elements + elements)
        self._runs = max(0.0, self._runs + runs)
        self.requests += requests


class Ticket:
    """An admitted request's reservation: `done` as its pieces finish, `close` when it ends however."""

    def __init__(self, admission: ModelAdmission, work: Work) -> None:
        self._admission = admission
        self._elements = float(work.elements)
        self._runs = float(work.runs)
        self._open = True
        admission._add(self._elements, self._runs, 1)

    def done(self, elements: int, runs: int = 1) -> None:
        """A piece of `elements` in `runs` runs has finished: the queue no longer holds it."""
        if not self._open:
            return
        elements_done, runs_done = min(self._elements, elements), min(self._runs, runs)
        self._elements -= elements_done
        self._runs -= runs_done
        self._admission._add(-elements_done, -runs_done, 0)

    def close(self) -> None:
        """Release what the request has not done (it finished, failed or was cancelled)."""
        if self._open:
            self._open = False
            self._admission._add(-self._elements, -self._runs, -1)

    def __enter__(self) -> Ticket:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()
