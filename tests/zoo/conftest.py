"""Session fixtures: a tiny trained srgan-x4 and a repository built by `zoo.build`, made once."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from zoo.build import BuildContext, build_repository
from zoo.training import train_srgan

TINY_TRAINING = ["--minutes", "5", "--steps", "3", "--patch", "8", "--batch", "2", "--blocks", "1"]
TINY_TRAINING += ["--filters", "8", "--val-every", "2", "--no-progress"]


@pytest.fixture(scope="session")
def tiny_srgan_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Output of the real training script on a budget of three steps on 8×8 patches."""
    out = tmp_path_factory.mktemp("srgan")
    train_srgan.main(["--out", str(out), *TINY_TRAINING])
    return out


@pytest.fixture(scope="session")
def faces_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository holding the faces64 entry, built by the zoo's build exactly as `make models` does."""
    root = tmp_path_factory.mktemp("zoo")
    ctx = BuildContext(repo=root / "models", work_dir=root / "work")
    assert build_repository(ctx, only=["faces64"]) == {"faces64": "built"}
    return ctx.repo


@pytest.fixture
def srgan_copy(tiny_srgan_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny training output, for tests that change it."""
    return Path(shutil.copytree(tiny_srgan_dir, tmp_path / "srgan"))
