"""uv.lock: it agrees with pyproject.toml, every install path reads it, and its GPU set is the chosen one."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

from tests.static.dockerfile import read_dockerfile

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
LOCK: dict[str, Any] = tomllib.loads((ROOT / "uv.lock").read_text(encoding="utf-8"))
#: The NVIDIA runtime set the gpu extra pins (docs/deploy.md, "The GPU libraries").
NVIDIA_SET = {
    "nvidia-cuda-runtime": "13.0.96",
    "nvidia-cuda-nvrtc": "13.0.88",
    "nvidia-cublas": "13.1.0.3",
    "nvidia-cufft": "12.0.0.61",
    "nvidia-curand": "10.4.0.35",
    "nvidia-nvjitlink": "13.0.88",
    "nvidia-cudnn-cu13": "9.14.0.64",
}


def uv() -> str:
    beside_python = Path(sys.executable).parent / "uv"
    found = str(beside_python) if beside_python.exists() else shutil.which("uv")
    assert found, "uv not found: install the dev extra"
    return found


def uv_lock_check(project: Path, *, offline: bool = True) -> subprocess.CompletedProcess[str]:
    """`uv lock --check`: compares uv.lock with pyproject.toml (offline: without asking an index)."""
    return subprocess.run(
        [
            uv(),
            "lock",
            "--check",
            *(["--offline"] if offline else []),
            "--no-progress",
            "--python",
            sys.executable,
        ],
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "UV_PYTHON_DOWNLOADS": "never", "UV_NO_CONFIG": "1"},
    )


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> set[tuple[str, str, str]]:
    """(name, specifier, extra) for every requirement of pyproject.toml, extras included."""
    project = PYPROJECT["project"]
    found = set()
    groups: dict[str, list[str]] = {"": project["dependencies"], **project["optional-dependencies"]}
    for extra, requirements in groups.items():
        for line in requirements:
            requirement = Requirement(line)
            found.add((normalize(requirement.name), str(requirement.specifier), extra))
    return found


def recorded() -> set[tuple[str, str, str]]:
    """The same, as uv.lock recorded pyproject.toml when it was last resolved."""
    (package,) = [p for p in LOCK["package"] if p["name"] == PYPROJECT["project"]["name"]]
    found = set()
    for requirement in package["metadata"]["requires-dist"]:
        extra = re.search(r"extra == '([\w-]+)'", requirement.get("marker", ""))
        specifier = str(Requirement(f"x{requirement.get('specifier', '')}").specifier)
        found.add((normalize(requirement["name"]), specifier, extra.group(1) if extra else ""))
    return found


def test_lock_records_every_requirement_of_pyproject() -> None:
    missing = sorted(declared() - recorded())
    stale = sorted(recorded() - declared())
    assert not missing and not stale, (
        f"uv.lock is out of date: run `make lock`. In pyproject.toml, not in uv.lock: {missing}; "
        f"in uv.lock, no longer in pyproject.toml: {stale}"
    )


def test_uv_agrees_that_the_lock_is_current() -> None:
    result = uv_lock_check(ROOT)
    assert result.returncode == 0, f"run `make lock`:\n{result.stdout}{result.stderr}"


def test_the_checks_fail_when_pyproject_drifts(tmp_path: Path) -> None:
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    pyproject = tmp_path / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    pyproject.write_text(text.replace('"rich>=13.7"', '"rich>=13.8"'), encoding="utf-8")
    assert '"rich>=13.8"' in pyproject.read_text(encoding="utf-8")

    # A changed requirement must be resolved again, which needs the package index (offline, a uv
    # cache without every package's metadata cannot resolve at all and says nothing about drift).
    result = uv_lock_check(tmp_path, offline=False)

    assert result.returncode != 0
    assert "needs to be updated" in result.stderr, result.stderr


def locked_versions(name: str) -> set[str]:
    return {p["version"] for p in LOCK["package"] if p["name"] == name}


@pytest.mark.parametrize(("name", "version"), sorted(NVIDIA_SET.items()))
def test_gpu_extra_pins_the_nvidia_set_and_the_lock_holds_it(name: str, version: str) -> None:
    assert f"{name}=={version}" in PYPROJECT["project"]["optional-dependencies"]["gpu"]
    assert locked_versions(name) == {version}


def test_lock_holds_no_other_nvidia_wheel() -> None:
    nvidia = {p["name"] for p in LOCK["package"] if p["name"].startswith("nvidia-")}
    assert nvidia == set(NVIDIA_SET), "a new NVIDIA wheel: pin it with the set (docs/deploy.md)"


def test_cpu_and_gpu_runtimes_are_declared_conflicting() -> None:
    conflicts = PYPROJECT["tool"]["uv"]["conflicts"]
    assert [{"extra": "cpu"}, {"extra": "gpu"}] in conflicts


def test_every_install_path_reads_the_lock() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^\$\(STAMP\): pyproject.toml uv.lock", makefile, re.MULTILINE)
    assert re.search(r"\$\(UV\) sync .*--locked", makefile)
    assert not re.search(r"pip install .*-e ", makefile), "an install that bypasses uv.lock"
    dockerfile = read_dockerfile(ROOT / "Dockerfile")
    copies = [i.positional() for i in dockerfile.instructions if i.keyword == "COPY"]
    assert ["pyproject.toml", "uv.lock", "./"] in copies
    syncs = [i for i in dockerfile.instructions if i.keyword == "RUN" and "uv sync" in i.arguments]
    assert {i.stage for i in syncs} == {"deps-cpu", "deps-gpu", "models"}
    assert all("--locked" in i.words() for i in syncs)
