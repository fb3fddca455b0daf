"""Starting and stopping the servers under test: the product and each peer, each in its own environment."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from peers.procstat import descendants

BENCH = Path(__file__).resolve().parent.parent
ROOT = BENCH.parent

#: The peers, in the order the tables list them.
PEERS = ("naive", "bentoml", "ray")
LABELS = {
    "product": "gan-serve (product)",
    "naive": "naive FastAPI + onnxruntime",
    "bentoml": "BentoML (adaptive batching)",
    "ray": "Ray Serve (@serve.batch)",
}
#: What each peer's virtual environment must hold to be used (relative to the venv).
PEER_EXECUTABLES = {"naive": "bin/python", "bentoml": "bin/bentoml", "ray": "bin/python"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """One server under test: how to start it, where it listens, and its process once started."""

    name: str
    command: list[str]
    env: dict[str, str]
    cwd: Path
    port: int
    ready_path: str
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    started_in_s: float = 0.0
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return LABELS.get(self.name, self.name)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 300.0) -> None:
        """Start the server and wait until `ready_path` answers 200."""
        self._log = self.log_path.open("wb")
        begun = time.monotonic()
        self.process = subprocess.Popen(
            self.command,
            cwd=self.cwd,
            env={**os.environ, **self.env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self.process.returncode}; see {self.log_path}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if request(self.port, "GET", self.ready_path, timeout=5)[0] == 200:
                    break
            if time.monotonic() - begun > timeout:
                self.stop()
                raise RuntimeError(f"{self.label} not ready after {timeout:.0f} s; see {self.log_path}")
            time.sleep(0.5)
        self.started_in_s = time.monotonic() - begun

    def stop(self) -> None:
        """SIGTERM the server, then SIGKILL whatever of its process tree is left after 30 s."""
        if self.process is None:
            return
        tree = descendants(self.process.pid)
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        time.sleep(1)
        for pid in tree[1:]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        self.process = None
        if self._log is not None:
            self._log.close()


def request(
    port: int,
    method: str,
    target: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    timeout: float = 120.0,
) -> tuple[int, str, bytes]:
    """One HTTP request on loopback: (status, Content-Type, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, target, body=body or None, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        connection.close()


def product_source(ref: str | None, work: Path) -> tuple[Path, str]:
    """Where the product's code is run from, and its commit: this checkout (HEAD, maybe with
    uncommitted changes), or `service/` of git `ref` unpacked in `work`.

    A ref keeps a run independent of uncommitted work in the checkout (several people edit it).
    """
    commit = subprocess.run(
        ["git", "rev-parse", "--short", ref or "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    if ref is None:
        return ROOT, commit
    tree = work / f"product-{commit}"
    if not (tree / "service").is_dir():
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "archive", commit, "service"], cwd=ROOT, capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree, commit


def product_server(repo: Path, device: str, work: Path, source: Path, name: str = "product") -> Server:
    """gan-serve (`python -m service.cli` in `source`), with its default settings."""
    port = free_port()
    env = {
        "GAN_SERVE_MODELS_DIR": str(repo),
        "GAN_SERVE_HOST": "127.0.0.1",
        "GAN_SERVE_PORT": str(port),
        "GAN_SERVE_DEVICE": device,
    }
    command = [sys.executable, "-m", "service.cli"]
    return Server(name, command, env, source, port, "/ping", work / f"{name}.log")


def peer_server(name: str, venv: Path, repo: Path, device: str, work: Path) -> Server:
    """A peer from its own virtual environment, serving the same model files."""
    port = free_port()
    env = {
        "PYTHONPATH": str(BENCH),
        "PEER_MODELS": str(repo),
        "PEER_DEVICE": device,
        "BENTOML_DO_NOT_TRACK": "true",
        "RAY_USAGE_STATS_ENABLED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    host = ["--host", "127.0.0.1", "--port", str(port)]
    if name == "naive":
        command = [str(venv / "bin/python"), "-m", "uvicorn", "peers.naive_app:app", *host]
        ready = "/ping"
    elif name == "bentoml":
        command = [str(venv / "bin/bentoml"), "serve", "peers.bentoml_service:GanApi", *host]
        ready = "/readyz"
    elif name == "ray":
        command = [str(venv / "bin/python"), "-m", "peers.ray_app", "--port", str(port)]
        ready = "/ping"
    else:
        raise ValueError(f"unknown peer {name}")
    return Server(name, command, env, BENCH, port, ready, work / f"{name}.log")


def pip_freeze(python: Path) -> dict[str, str]:
    """name → version of every distribution in the environment of `python`."""
    out = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    versions = {}
    for line in out.splitlines():
        name, sep, version = line.partition("==")
        if sep:
            versions[name.lower()] = version
    return versions
