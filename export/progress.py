"""Progress reporting for the slow export steps: silent by default, rich on the CLI."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Protocol


class ProgressReporter(Protocol):
    """Receives the start of each slow step and one-line results worth printing."""

    def step(self, description: str) -> contextlib.AbstractContextManager[None]: ...

    def note(self, message: str) -> None: ...


class SilentReporter:
    """The library default: callers of the API see no output."""

    @contextlib.contextmanager
    def step(self, description: str) -> Iterator[None]:
        yield

    def note(self, message: str) -> None:
        pass


_SILENT = SilentReporter()
_current: ContextVar[ProgressReporter | None] = ContextVar("export_progress", default=None)


def reporter() -> ProgressReporter:
    return _current.get() or _SILENT


@contextlib.contextmanager
def reporting_to(progress: ProgressReporter) -> Iterator[None]:
    """Send progress of exports run inside this block to `progress`."""
    token = _current.set(progress)
    try:
        yield
    finally:
        _current.reset(token)
