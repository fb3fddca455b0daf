"""Load whatever the user saved into a `SourceModel`."""

from __future__ import annotations

from pathlib import Path

import keras

from export.errors import SourceNotFound, UnknownFormat
from export.source import SourceModel, from_keras


def load_source(
    path: Path,
    *,
    architecture: str | None = None,
    architecture_options: dict[str, int] | None = None,
    unsafe: bool = False,
) -> SourceModel:
    """Load `path` (.keras, legacy .h5, SavedModel dir, weights + architecture)."""
    if not path.exists():
        raise SourceNotFound(f"{path}: no such file or directory")
    if path.suffix == ".keras":
        return from_keras(keras.saving.load_model(path, safe_mode=not unsafe), format="keras", path=path)
    raise UnknownFormat(f"{path}: unknown model format")
