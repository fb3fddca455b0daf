"""docker-compose.yml: valid under the Compose Specification schema, and wired as docs/deploy.md says."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from tests.static.dockerfile import read_dockerfile

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"


def check_jsonschema() -> str:
    beside_python = Path(sys.executable).parent / "check-jsonschema"
    found = str(beside_python) if beside_python.exists() else shutil.which("check-jsonschema")
    assert found, "check-jsonschema not found: install the dev extra"
    return found


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    # The compose-spec schema is vendored inside check-jsonschema: no network at test time.
    return subprocess.run(
        [check_jsonschema(), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = YAML(typ="safe").load(COMPOSE.read_text(encoding="utf-8"))
    return loaded


def test_compose_file_is_valid_under_the_compose_specification() -> None:
    result = validate(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_rejects_a_misspelt_key(tmp_path: Path) -> None:
    bad = tmp_path / "docker-compose.yml"
    bad.write_text("services:\n  web:\n    image: x\n    restart_policy: always\n", encoding="utf-8")
    result = validate(bad)
    assert result.returncode != 0
    assert "restart_policy" in result.stdout + result.stderr


def test_gpu_service_reserves_one_nvidia_gpu(compose: dict[str, Any]) -> None:
    service = compose["services"]["gan-serve"]
    assert "profiles" not in service, "`docker compose up` must start the GPU service"
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert service["build"]["target"] == "gpu"


def test_cpu_variant_is_a_profile_without_a_gpu(compose: dict[str, Any]) -> None:
    service = compose["services"]["gan-serve-cpu"]
    assert service["profiles"] == ["cpu"]
    assert "deploy" not in service
    assert service["build"]["target"] == "cpu"


def test_build_targets_are_dockerfile_stages(compose: dict[str, Any]) -> None:
    stages = read_dockerfile(ROOT / "Dockerfile").bases
    for name, service in compose["services"].items():
        assert service["build"]["target"] in stages, name


@pytest.mark.parametrize("name", ["gan-serve", "gan-serve-cpu"])
def test_service_port_models_restart_and_readiness(compose: dict[str, Any], name: str) -> None:
    service = compose["services"][name]
    assert any(str(port).endswith(":8080") for port in service["ports"])
    assert any(str(volume).endswith(":/opt/ml/model") for volume in service["volumes"])
    assert service["restart"] in {"always", "unless-stopped", "on-failure"}
    assert service["environment"]["GAN_SERVE_MODELS_DIR"] == "/opt/ml/model"
    assert service["environment"]["GAN_SERVE_PORT"] == "8080"
    assert "/health/ready" in " ".join(service["healthcheck"]["test"])
    assert "curl" not in " ".join(service["healthcheck"]["test"])
    assert "models" in compose["volumes"]
