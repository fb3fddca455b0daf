"""A model repository as a SageMaker `model.tar.gz`: entries at the top level of the archive.

SageMaker unpacks the archive into /opt/ml/model, so `<name>/model.onnx` in the archive becomes
`/opt/ml/model/<name>/model.onnx`, which is the repository layout the service reads.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from export.errors import SourceError, SourceNotFound
from service.card import CARD_FILENAME, read_card


def repository_entries(repo: Path) -> list[Path]:
    """Entry directories of `repo` (those holding a valid card), sorted by name; hidden ones skipped."""
    if not repo.is_dir():
        raise SourceNotFound(f"{repo}: no such model repository (directory)")
    entries = []
    for child in sorted(repo.iterdir()):
        if child.name.startswith(".") or not child.is_dir() or not (child / CARD_FILENAME).exists():
            continue
        try:
            card = read_card(child)
        except ValueError as exc:
            raise SourceError(str(exc)) from exc
        if not (child / card.file).is_file():
            raise SourceError(f"{child}: the card names {card.file}, which is missing")
        entries.append(child)
    if not entries:
        raise SourceError(f"{repo}: no model-repository entries (<name>/{CARD_FILENAME}) found")
    return entries


def package_repository(repo: Path, out: Path) -> Path:
    """Write every entry of `repo` into the gzip tarball `out`, as SageMaker unpacks into /opt/ml/model."""
    repo, out = Path(repo), Path(out)
    entries = repository_entries(repo)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with tarfile.open(partial, "w:gz") as archive:
        for entry in entries:
            for file in sorted(p for p in entry.rglob("*") if p.is_file()):
                archive.add(file, arcname=file.relative_to(repo).as_posix(), filter=_normalize)
    partial.replace(out)
    return out


def _normalize(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """Readable by any user in the container, owned by nobody in particular."""
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o644
    return info
