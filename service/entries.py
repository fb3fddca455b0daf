"""The model repository on disk: finding and checking its entries, without loading anything.

Each subdirectory of the models directory is one entry (`<name>/model.json` + `<name>/model.onnx`,
as `gan-export` writes them); hidden directories and plain files are ignored. This is the one
scanner of a repository: `gan-serve` reads the entries it serves with it, and `gan-export package`
the entries it packs, so a folder one of them refuses the other refuses too. It imports only the
card, so the export tool can use it without onnxruntime.

A broken entry stops the scan with a message naming the entry: serving a repository with a silently
missing model would turn an operator's mistake into clients' 404s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from service.card import FP16_MODEL_FILENAME, ModelCard, is_valid_model_name, read_card
from service.errors import ModelLoadError, ModelsDirMissing

BUILD_HINT = "build the default models with `make models`, or export your own with `gan-export`"


@dataclass(frozen=True)
class EntryFiles:
    """A repository entry found on disk, its card read and its files resolved."""

    card: ModelCard
    directory: Path
    model_path: Path
    fp16_path: Path | None


def scan_repository(models_dir: Path) -> list[EntryFiles]:
    """List and check every entry, sorted by name; raise on the first broken one or on none at all."""
    if not models_dir.is_dir():
        raise ModelsDirMissing(f"models directory {models_dir} does not exist: {BUILD_HINT}")
    entries = []
    for directory in sorted(p for p in models_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        entries.append(_read_entry(directory))
    if not entries:
        raise ModelsDirMissing(f"models directory {models_dir} holds no model entry: {BUILD_HINT}")
    return entries


def _read_entry(directory: Path) -> EntryFiles:
    name = directory.name
    if not is_valid_model_name(name):
        raise ModelLoadError(
            f"model entry {directory}: the name must be letters, digits, '.', '_' or '-' (at most 64)"
        )
    try:
        card = read_card(directory)
    except ValueError as exc:
        raise ModelLoadError(f"model entry {name}: {exc}") from exc
    if card.name != name:
        raise ModelLoadError(f"model entry {name}: its card names it {card.name!r}; rename one to match")
    model_path = _entry_file(directory, card.file)
    fp16_path = None
    if card.fp16 is not None and card.fp16.accepted:
        fp16_path = _entry_file(directory, card.fp16.file or FP16_MODEL_FILENAME)
    return EntryFiles(card=card, directory=directory, model_path=model_path, fp16_path=fp16_path)


def _entry_file(directory: Path, filename: str) -> Path:
    # Cards are files on disk and could be edited by hand: a file name must stay inside its entry.
    path = directory / filename
    if Path(filename).name != filename or filename in ("", ".", ".."):
        raise ModelLoadError(
            f"model entry {directory.name}: card file {filename!r} must be a plain file name"
        )
    if not path.is_file():
        raise ModelLoadError(f"model entry {directory.name}: {path} is missing")
    return path
