"""`gan-serve` as a real process on a socket, for tests that need its HTTP protocol and connections."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gan_serve_command() -> list[str]:
    """The `gan-serve` entry point of the running environment (or the module, where not installed)."""
    script = Path(sys.executable).parent / "gan-serve"
    return [str(script)] if script.exists() else [sys.executable, "-m", "service.cli"]


def wait_ready(
    process: subprocess.Popen[Any], url: str, stderr: Callable[[], str], timeout: float = 60.0
) -> None:
    """Poll `url`/health/ready until 200 or `timeout` s; fail with `stderr()` if the server exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health/ready").status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            pytest.fail(f"gan-serve exited: {stderr()}")
        time.sleep(0.2)


@contextmanager
def serving(repo: Path, **settings: str) -> Iterator[tuple[str, int]]:
    """`gan-serve` on the test repository with these GAN_SERVE_* settings, until the block ends."""
    port = free_port()
    env = {**os.environ, "GAN_SERVE_WARMUP_BATCH_SIZES": "[1]", **settings}
    process = subprocess.Popen(
        [*gan_serve_command(), "--models", str(repo), "--port", str(port), "--device", "cpu"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_ready(process, f"http://127.0.0.1:{port}", lambda: process.stderr.read() if process.stderr else "")
    try:
        yield "127.0.0.1", port
    finally:
        process.terminate()
        process.wait(30)
