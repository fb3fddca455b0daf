"""Hooks for the whole run; loaded on the pytest-xdist controller too, unlike the per-folder conftests."""

from __future__ import annotations

from typing import Any

from tests.web.artifacts import artifacts_dir


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say where the browser tests' screenshots are, when any browser test ran."""
    reports = [r for reports in terminalreporter.stats.values() for r in reports if hasattr(r, "nodeid")]
    if any(r.nodeid.startswith("tests/web/") and getattr(r, "when", None) == "call" for r in reports):
        terminalreporter.write_line(f"web page screenshots: {artifacts_dir()}")
