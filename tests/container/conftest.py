"""The container contract, run the way SageMaker runs the image.

Models: two small real exports (`export_keras_model`), packed by `package_repository` into the
model.tar.gz that `gan-export package` writes, then unpacked as SageMaker unpacks it into
/opt/ml/model. Server: the image's ENTRYPOINT + CMD (`gan-serve serve`), with the cpu target's
environment read from the Dockerfile, and SAGEMAKER_BIND_TO_PORT on a free port.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.static.dockerfile import read_dockerfile

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
GENERATOR = "dcgan-cifar10"
UPSCALER = "srgan-x4"
START_TIMEOUT = 120.0


@pytest.fixture(scope="session")
def model_tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """model.tar.gz of a DCGAN generator and a one-block SRGAN x4, exported with the real tool."""
    import keras

    from export.api import export_keras_model
    from export.architectures import build
    from export.package import package_repository

    work = tmp_path_factory.mktemp("export")
    keras.utils.set_random_seed(0)
    repo = work / "repo"
    export_keras_model(
        build(GENERATOR), repo, GENERATOR, architecture=GENERATOR, demo_weights=True, preview=False
    )
    export_keras_model(
        build(UPSCALER, blocks=1, filters=8),
        repo,
        UPSCALER,
        architecture=UPSCALER,
        demo_weights=True,
        preview=False,
    )
    return package_repository(repo, work / "model.tar.gz")


def unpack_like_sagemaker(tarball: Path, model_dir: Path) -> Path:
    """SageMaker extracts model.tar.gz into /opt/ml/model before it starts the container."""
    model_dir.mkdir(parents=True)
    with tarfile.open(tarball) as archive:
        archive.extractall(model_dir, filter="data")
    return model_dir


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def image_command_and_environment() -> tuple[list[str], dict[str, str]]:
    """ENTRYPOINT + CMD and the ENV of the Dockerfile's cpu target, as `docker run IMAGE` runs them."""
    dockerfile = read_dockerfile(ROOT / "Dockerfile")
    lineage = dockerfile.lineage("cpu")
    entrypoint = dockerfile.in_stages(lineage, "ENTRYPOINT")[-1].words()
    command = dockerfile.in_stages(lineage, "CMD")[-1].words()
    environment: dict[str, str] = {}
    for instruction in reversed(dockerfile.in_stages(lineage, "ENV")):
        for word in instruction.words():
            key, _, value = word.partition("=")
            environment[key] = value
    return [*entrypoint, *command], environment


@dataclass
class Ping:
    """One GET /ping: status (None: connection refused), body and latency."""

    status: int | None
    body: bytes
    seconds: float


@dataclass
class Container:
    """A running `gan-serve serve` process and what was seen while it started."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path
    pings: list[Ping] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, timeout: float = 60.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_container(model_dir: Path, log: Path) -> Container:
    """Start the image's command with SageMaker's environment; record every /ping until ready."""
    argv, image_env = image_command_and_environment()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GAN_SERVE_", "SAGEMAKER_"))}
    env.update(image_env)
    env.update(
        GAN_SERVE_MODELS_DIR=str(model_dir), SAGEMAKER_BIND_TO_PORT=str(port), GAN_SERVE_HOST="127.0.0.1"
    )
    executable = BIN / argv[0]
    assert executable.exists(), f"{argv[0]} is not installed in {BIN}: pip install -e ."
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(executable), *argv[1:]], env=env, stdout=sink, stderr=subprocess.STDOUT, cwd=model_dir.parent
        )
    container = Container(process, port, log)
    deadline = time.monotonic() + START_TIMEOUT
    with httpx.Client(base_url=container.url, timeout=5.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"gan-serve exited {process.returncode}:\n{container.output()}")
            start = time.perf_counter()
            try:
                response = client.get("/ping")
            except httpx.TransportError:
                container.pings.append(Ping(None, b"", time.perf_counter() - start))
                time.sleep(0.05)
                continue
            container.pings.append(Ping(response.status_code, response.content, time.perf_counter() - start))
            if response.status_code == 200:
                return container
            time.sleep(0.05)
    container.stop()
    raise AssertionError(f"/ping never answered 200 within {START_TIMEOUT} s:\n{container.output()}")


@pytest.fixture(scope="session")
def model_dir(model_tarball: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return unpack_like_sagemaker(model_tarball, tmp_path_factory.mktemp("opt-ml") / "model")


@pytest.fixture(scope="session")
def container(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    """One server for the read-only contract tests."""
    running = start_container(model_dir, tmp_path_factory.mktemp("logs") / "gan-serve.log")
    yield running
    running.stop()


@pytest.fixture
def client(container: Container) -> Iterator[httpx.Client]:
    with container.client() as http:
        yield http
