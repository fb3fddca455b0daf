"""Every command answers `--version` with the installed package's version, as the app's OpenAPI does."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize("command", ["gan-serve", "gan-export", "gan-deploy"])
def test_version_flag(command: str) -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / command), "--version"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{command} {importlib.metadata.version('gan-serve')}"
