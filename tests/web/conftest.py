"""Browser tests of the page at `/`: the real `gan-serve` on a free port, driven in Debian's Chromium.

The service runs as a subprocess (`python -m service.cli`, what `gan-serve` runs) over a small
TensorFlow-free repository (`tests.service.conftest.build_repository` plus a conditional
generator). Playwright's Python API drives the system Chromium (`/usr/bin/chromium`); it never
downloads a browser. When Chromium is missing, the session installs Debian's package if it runs as
root, and skips these tests otherwise. Every test leaves a full-page screenshot under
`$GAN_SERVE_WEB_ARTIFACTS` (else `<temp dir>/gan-serve-web-screenshots`), printed at the end of the run
(tests/conftest.py).
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.service.conftest import build_repository
from tests.service.onnx_models import write_conditional_entry
from tests.web.artifacts import artifacts_dir

CHROMIUM = Path("/usr/bin/chromium")
#: The flags Chromium needs headless as root on a machine without outside network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CONDITIONAL = "cgan-test"
CLASS_NAMES = ["cat", "dog", "ship", "frog"]
API_KEY = "web-test-key-0123456789abcdef"
MAX_N = 16
_READY = re.compile(r"open (http://\S+/) in a browser")


def _install_chromium() -> str | None:
    """Install Debian's chromium; None when done, else why it could not be."""
    if not shutil.which("apt-get"):
        return "no apt-get on this machine"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]
    if subprocess.run(install, env=env, capture_output=True, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False)
        result = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            return f"apt-get install chromium failed: {result.stderr.strip()[-300:]}"
    return None if CHROMIUM.exists() else f"apt-get installed chromium but {CHROMIUM} is missing"


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's Chromium, installed when absent and we are root."""
    if not CHROMIUM.exists():
        if os.geteuid() != 0:
            pytest.skip(f"{CHROMIUM} is missing and only root can install it (apt-get install chromium)")
        problem = _install_chromium()
        if problem:
            pytest.skip(problem)
    return CHROMIUM


@pytest.fixture(scope="session")
def web_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The service tests' repository (RGB, demo-weights grayscale and flat generators, an x4
    upscaler) plus a 4-class conditional generator with class names."""
    repo = tmp_path_factory.mktemp("web-models")
    build_repository(repo)
    write_conditional_entry(repo, CONDITIONAL, 8, 8, 4, CLASS_NAMES)
    return repo


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    """A running `gan-serve` subprocess and what it printed."""

    process: subprocess.Popen[str]
    url: str = ""
    output: list[str] = field(default_factory=list)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_server(repo: Path, **env: str) -> Server:
    """Start `gan-serve` on a free port; returns before it is ready (see `wait_ready`)."""
    environment = {
        **os.environ,
        "GAN_SERVE_DEVICE": "cpu",
        "GAN_SERVE_MAX_N": str(MAX_N),
        "GAN_SERVE_WARMUP_BATCH_SIZES": "[1]",
        "GAN_SERVE_TILE_SIZE": "32",
        "GAN_SERVE_INTRA_OP_THREADS": "1",
        "GAN_SERVE_LOG_FORMAT": "text",
        **env,
    }
    command = [sys.executable, "-m", "service.cli", "--models", str(repo), "--port", str(_free_port())]
    process = subprocess.Popen(
        command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    return Server(process)


def wait_ready(server: Server, timeout: float = 90) -> Server:
    """Read the server's output until it prints the page's address (and keep draining it after)."""
    lines: queue.Queue[str | None] = queue.Queue()

    def drain() -> None:
        assert server.process.stdout is not None
        for line in server.process.stdout:
            server.output.append(line)
            lines.put(line)
        lines.put(None)

    threading.Thread(target=drain, daemon=True).start()
    while True:
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            server.stop()
            raise RuntimeError(
                "gan-serve did not print its page address:\n" + "".join(server.output)
            ) from None
        if line is None:
            raise RuntimeError("gan-serve exited:\n" + "".join(server.output))
        match = _READY.search(line)
        if match:
            server.url = match.group(1)
            return server


@pytest.fixture(scope="session")
def servers(web_repo: Path) -> Iterator[dict[str, Server]]:
    """Two real services over the same repository, started together: one open, one requiring a key."""
    started = {"open": start_server(web_repo), "keys": start_server(web_repo, GAN_SERVE_API_KEYS=API_KEY)}
    try:
        yield {name: wait_ready(server) for name, server in started.items()}
    finally:
        for server in started.values():
            server.stop()


@pytest.fixture(scope="session")
def server(servers: dict[str, Server]) -> Server:
    return servers["open"]


@pytest.fixture(scope="session")
def keyed_server(servers: dict[str, Server]) -> Server:
    return servers["keys"]


@pytest.fixture(scope="session")
def browser(chromium: Path) -> Iterator[Any]:
    """One headless Chromium for the session (Playwright gives it a fresh profile directory)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    path = artifacts_dir()
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def page(browser: Any, artifacts: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser tab (its own session storage) that fails the test on any script error;
    a full-page screenshot of how the test left it is kept."""
    context = browser.new_context(viewport={"width": 1100, "height": 800}, accept_downloads=True)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    yield tab
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)
    tab.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)
    context.close()
    # A 4xx the test asked for is logged by Chromium as a failed resource load: not a script error.
    assert [e for e in errors if "Failed to load resource" not in e] == []
