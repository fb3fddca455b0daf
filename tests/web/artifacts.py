"""Where the browser tests keep their screenshots (a module of its own: tests/conftest.py prints it)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

ARTIFACTS_VARIABLE = "GAN_SERVE_WEB_ARTIFACTS"


def artifacts_dir() -> Path:
    """$GAN_SERVE_WEB_ARTIFACTS, else one folder in the temporary directory."""
    configured = os.environ.get(ARTIFACTS_VARIABLE)
    return Path(configured) if configured else Path(tempfile.gettempdir()) / "gan-serve-web-screenshots"
