"""The container contract, run the way SageMaker runs the image.

Models: two small real exports (`export_keras_model`), packed by `package_repository` into the
model.tar.gz that `gan-export package` writes, then unpacked as SageMaker unpacks it into
/opt/ml/model.

Server, one of two:
- by default (`make test`), the image's ENTRYPOINT + CMD (`gan-serve serve`) from this virtualenv,
  with the cpu target's environment read from the Dockerfile;
- with GAN_SERVE_TEST_IMAGE=<image> (`make image-check`), that built image, started by
  GAN_SERVE_TEST_ENGINE (docker or podman) as `<engine> run <image> serve` with the model directory
  mounted read-only at /opt/ml/model.
Both get SAGEMAKER_BIND_TO_PORT on a free port, as SageMaker passes it.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import tarfile
import time
import uuid
from abc import ABC, abstractmethod
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
#: The image under test; unset: the virtualenv's gan-serve stands in for it.
IMAGE = os.environ.get("GAN_SERVE_TEST_IMAGE", "")
ENGINE = os.environ.get("GAN_SERVE_TEST_ENGINE", "docker")
#: Extra `<engine> run` arguments, e.g. "--device nvidia.com/gpu=all" for the gpu image on a GPU host.
RUN_ARGS = shlex.split(os.environ.get("GAN_SERVE_TEST_RUN_ARGS", ""))
#: GAN_SERVE_DEVICE for the image (the gpu image asks for cuda, which a host without a GPU lacks).
DEVICE = os.environ.get("GAN_SERVE_TEST_DEVICE", "cpu")


def engine(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """One docker/podman command; its output as text."""
    return subprocess.run([ENGINE, *args], capture_output=True, text=True, check=check, timeout=timeout)


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
class Container(ABC):
    """A running `gan-serve serve`, as a local process or in a container, and its /ping history."""

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

    @abstractmethod
    def exit_code(self) -> int | None:
        """None while it runs."""

    @abstractmethod
    def terminate(self) -> None:
        """SIGTERM, as SageMaker and `docker stop` send."""

    @abstractmethod
    def wait(self, timeout: float) -> int:
        """The exit status once it has exited (TimeoutExpired after `timeout` seconds)."""

    @abstractmethod
    def stop(self) -> int:
        """SIGTERM, then SIGKILL after SageMaker's 30 s; the exit status."""


@dataclass
class LocalProcess(Container):
    """The image's command run from this virtualenv."""

    process: subprocess.Popen[bytes] | None = None

    def _process(self) -> subprocess.Popen[bytes]:
        assert self.process is not None
        return self.process

    def exit_code(self) -> int | None:
        return self._process().poll()

    def terminate(self) -> None:
        self._process().send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        return self._process().wait(timeout=timeout)

    def stop(self) -> int:
        process = self._process()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode


@dataclass
class ImageContainer(Container):
    """The built image run by docker or podman; its output is copied to `log` when asked for."""

    name: str = ""
    removed: bool = False
    returncode: int | None = None

    def output(self) -> str:
        if not self.removed:
            logs = engine("logs", self.name, check=False)
            self.log.write_text(logs.stdout + logs.stderr, encoding="utf-8")
        return super().output()

    def exit_code(self) -> int | None:
        if self.returncode is None:
            state = engine("inspect", "--format", "{{.State.Running}} {{.State.ExitCode}}", self.name)
            running, code = state.stdout.split()
            if running == "false":
                self.returncode = int(code)
        return self.returncode

    def terminate(self) -> None:
        engine("kill", "--signal", "TERM", self.name)

    def wait(self, timeout: float) -> int:
        if self.returncode is None:
            waited = engine("wait", self.name, timeout=timeout)
            self.returncode = int(waited.stdout.split()[-1])
        return self.returncode

    def stop(self) -> int:
        if not self.removed:
            if self.exit_code() is None:
                engine("stop", "--time", "30", self.name, timeout=60)
            code = self.wait(timeout=60)
            self.output()
            engine("rm", "--force", self.name, check=False)
            self.removed = True
            return code
        assert self.returncode is not None
        return self.returncode


def launch(model_dir: Path | None, log: Path, port: int, environment: dict[str, str]) -> Container:
    """Start gan-serve as the image's command would: in the image, or from this virtualenv."""
    if IMAGE:
        name = f"gan-serve-test-{uuid.uuid4().hex[:12]}"
        args = ["run", "--detach", "--name", name, "--publish", f"127.0.0.1:{port}:{port}"]
        for key, value in {"SAGEMAKER_BIND_TO_PORT": str(port), **environment}.items():
            args += ["--env", f"{key}={value}"]
        if model_dir is not None:
            args += ["--volume", f"{model_dir}:/opt/ml/model:ro"]
        engine(*args, *RUN_ARGS, IMAGE, "serve")
        return ImageContainer(port, log, name=name)

    assert model_dir is not None, "the virtualenv's gan-serve has no built-in models"
    argv, image_env = image_command_and_environment()
    image_env.pop("HOME", None)  # the image user's home, not this host's
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GAN_SERVE_", "SAGEMAKER_"))}
    env.update(image_env)
    env.update(
        GAN_SERVE_MODELS_DIR=str(model_dir), SAGEMAKER_BIND_TO_PORT=str(port), GAN_SERVE_HOST="127.0.0.1"
    )
    env.update(environment)
    executable = BIN / argv[0]
    assert executable.exists(), f"{argv[0]} is not installed in {BIN}: pip install -e ."
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(executable), *argv[1:]], env=env, stdout=sink, stderr=subprocess.STDOUT, cwd=model_dir.parent
        )
    return LocalProcess(port, log, process=process)


def start_container(
    model_dir: Path | None, log: Path, environment: dict[str, str] | None = None
) -> Container:
    """Start the server with SageMaker's environment; record every /ping until ready.

    `model_dir` None runs the image with the models it carries (image runs only).
    """
    extra = {"GAN_SERVE_DEVICE": DEVICE} if IMAGE else {}
    container = launch(model_dir, log, free_port(), {**extra, **(environment or {})})
    deadline = time.monotonic() + START_TIMEOUT
    next_state_check = 0.0
    with httpx.Client(base_url=container.url, timeout=5.0) as client:
        while time.monotonic() < deadline:
            if time.monotonic() >= next_state_check:
                # Asking the engine costs ~0.1 s: once a second is enough to notice an early exit.
                next_state_check = time.monotonic() + 1.0
                if container.exit_code() is not None:
                    output = container.output()
                    container.stop()
                    raise AssertionError(f"gan-serve exited {container.exit_code()}:\n{output}")
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
    output = container.output()
    container.stop()
    raise AssertionError(f"/ping never answered 200 within {START_TIMEOUT} s:\n{output}")


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
