"""The built image itself (`make image-check`): its configuration, contents and libraries.

Runs only with GAN_SERVE_TEST_IMAGE; the contract tests beside it run against the same image.
"""

from __future__ import annotations

import io
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.container.conftest import IMAGE, ROOT, engine, start_container

pytestmark = [
    pytest.mark.xdist_group("container"),
    pytest.mark.skipif(not IMAGE, reason="needs a built image: make image-check"),
]

#: The shared libraries onnxruntime-gpu's CUDA provider loads, by soname (libcuda.so.1 is the driver's).
CUDA_LIBRARIES = [
    "libcudart.so.13",
    "libcublas.so.13",
    "libcublasLt.so.13",
    "libcufft.so.12",
    "libcurand.so.10",
    "libnvrtc.so.13",
    "libnvJitLink.so.13",
    "libcudnn.so.9",
]


def in_image(*argv: str, check: bool = True) -> str:
    """Run one command in a fresh container of the image, as its user; its stdout."""
    return engine("run", "--rm", "--entrypoint", argv[0], IMAGE, *argv[1:], check=check).stdout


def python_in_image(code: str) -> str:
    return in_image("python", "-c", code).strip()


@pytest.fixture(scope="module")
def inspected() -> dict[str, Any]:
    (image,) = json.loads(engine("image", "inspect", IMAGE).stdout)
    return dict(image)


@pytest.fixture(scope="module")
def environment(inspected: dict[str, Any]) -> dict[str, str]:
    return dict(line.split("=", 1) for line in inspected["Config"]["Env"])


@pytest.fixture(scope="module")
def is_gpu_image(environment: dict[str, str]) -> bool:
    return environment.get("GAN_SERVE_DEVICE") == "cuda"


def test_config_is_the_sagemaker_contract(inspected: dict[str, Any]) -> None:
    config = inspected["Config"]
    assert config["Entrypoint"] == ["gan-serve"]
    assert config["Cmd"] == ["serve"]
    assert config["User"] == "10001:10001"
    assert config["Labels"]["com.amazonaws.sagemaker.capabilities.accept-bind-to-port"] == "true"
    assert "8080/tcp" in config["ExposedPorts"]
    # Docker keeps it under Config, podman at the top; podman's OCI format would drop it altogether.
    healthcheck = config.get("Healthcheck") or inspected.get("Healthcheck")
    assert healthcheck, "no HEALTHCHECK: podman must build with --format docker"
    assert "/health/ready" in " ".join(healthcheck["Test"])


def test_runs_as_the_service_user_with_a_writable_home() -> None:
    seen = python_in_image(
        "import os, pwd; home = os.environ['HOME']; "
        "print(os.getuid(), home, pwd.getpwuid(os.getuid()).pw_dir, os.access(home, os.W_OK))"
    )
    assert seen == "10001 /home/gan-serve /home/gan-serve True"


def test_holds_no_tensorflow_and_no_build_tools() -> None:
    found = python_in_image(
        "import importlib.util as u, shutil; "
        "print([m for m in ('tensorflow', 'keras', 'tf2onnx', 'pip') if u.find_spec(m)], shutil.which('uv'))"
    )
    assert found == "[] None"


def test_installs_exactly_the_locked_versions(is_gpu_image: bool) -> None:
    installed: dict[str, str] = json.loads(
        python_in_image(
            "import importlib.metadata as m, json; "
            "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
        )
    )
    lock = tomllib.loads((ROOT / "uv.lock").read_text(encoding="utf-8"))
    locked = {(p["name"], p["version"]) for p in lock["package"] if "version" in p}
    names = {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in installed.items()}
    off_lock = {name: version for name, version in names.items() if (name, version) not in locked}
    assert off_lock == {}, "installed, but not as uv.lock has it"
    runtime = "onnxruntime-gpu" if is_gpu_image else "onnxruntime"
    other = "onnxruntime" if is_gpu_image else "onnxruntime-gpu"
    assert runtime in names and other not in names


def test_built_in_models_serve_without_a_mount(tmp_path: Path) -> None:
    if python_in_image("import os; print(len(os.listdir('/opt/ml/model')))") == "0":
        pytest.skip("built with MODELS=none: no built-in models")
    container = start_container(None, tmp_path / "gan-serve.log")
    try:
        with container.client() as client:
            models = client.get("/models").json()
            generators = [m for m in models["models"] if m["kind"] == "generator"]
            assert generators, models
            response = client.post("/generate", json={"n": 1, "seed": 1})
    finally:
        assert container.stop() == 0, container.output()
    assert response.status_code == 200, response.text
    image = Image.open(io.BytesIO(response.content))
    default = next(m for m in generators if m["name"] == models["defaults"]["generator"])
    assert image.size == (default["width"], default["height"])


def test_starts_without_warnings_about_its_environment(container: Any, client: httpx.Client) -> None:
    assert client.get("/ping").status_code == 200
    output = container.output()
    assert "Traceback" not in output
    for complaint in ("home directory", "Permission denied", "read-only file system", "telemetry"):
        assert complaint.lower() not in output.lower(), output


# --- the gpu target ------------------------------------------------------------------------------


@pytest.fixture
def gpu_only(is_gpu_image: bool) -> None:
    if not is_gpu_image:
        pytest.skip("cpu image")


@pytest.mark.usefixtures("gpu_only")
def test_gpu_image_offers_the_cuda_provider() -> None:
    providers = python_in_image("import onnxruntime as o; print(o.get_available_providers())")
    assert "CUDAExecutionProvider" in providers


@pytest.mark.usefixtures("gpu_only")
def test_gpu_image_registers_every_cuda_library_with_the_linker() -> None:
    cache = in_image("ldconfig", "-p")
    for soname in CUDA_LIBRARIES:
        assert re.search(rf"^\s*{re.escape(soname)} .*=> /opt/venv/", cache, re.MULTILINE), soname


@pytest.mark.usefixtures("gpu_only")
def test_gpu_image_cuda_provider_resolves_everything_but_the_driver() -> None:
    provider = python_in_image(
        "import onnxruntime, pathlib; "
        "print(pathlib.Path(onnxruntime.__file__).parent / 'capi' / 'libonnxruntime_providers_cuda.so')"
    )
    missing = [line.split()[0] for line in in_image("ldd", provider).splitlines() if "not found" in line]
    assert missing == ["libcuda.so.1"], "only the NVIDIA driver, mounted at run time, may be missing"


@pytest.mark.usefixtures("gpu_only")
def test_gpu_image_loads_the_cudnn_onnxruntime_was_built_with() -> None:
    # cudnnGetVersion needs no GPU; 91400 is CUDNN_VERSION in onnxruntime-gpu 1.31.1's CUDA provider.
    version = python_in_image("import ctypes; print(ctypes.CDLL('libcudnn.so.9').cudnnGetVersion())")
    assert version == "91400"
