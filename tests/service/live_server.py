"""`gan-serve` as a real process on a socket, for tests that need its HTTP protocol and connections."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(repo: Path, **settings: str) -> Iterator[tuple[str, int]]:
    """`gan-serve` on the test repository with these GAN_SERVE_* settings, until the block ends."""
    port = free_port()
    env = {**os.environ, "GAN_SERVE_WARMUP_BATCH_SIZES": "[1]", **settings}
    script = Path(sys.executable).parent / "gan-serve"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "service.cli"]
    process = subprocess.Popen(
        [*command, "--models", str(repo), "--port", str(port), "--device", "cpu"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/ready").status_code == 200:
                break
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            pytest.fail(f"gan-serve exited: {process.stderr.read() if process.stderr else ''}")
        time.sleep(0.2)
    try:
        yield "127.0.0.1", port
    finally:
        process.terminate()
        process.wait(30)
