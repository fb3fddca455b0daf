"""A model repository as a SageMaker `model.tar.gz`: entries at the top level of the archive.

SageMaker unpacks the archive into /opt/ml/model, so `<name>/model.onnx` in the archive becomes
`/opt/ml/model/<name>/model.onnx`, which is the repository layout the service reads.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from export.errors import SourceError, SourceNotFound
from service.entries import scan_repository
from service.errors import ModelsDirMissing, StartupError


def repository_entries(repo: Path) -> list[Path]:
    """Entry directories of `repo`, sorted by name, checked as `gan-serve` checks them before serving.

    The one repository scanner (`service.entries`): a folder `gan-serve` would refuse to start on is
    refused here too, never silently left out of the archive.
    """
    if not repo.is_dir():
        raise SourceNotFound(f"{repo}: no such model repository (directory)")
    try:
        return [entry.directory for entry in scan_repository(repo)]
    except ModelsDirMissing as exc:
        raise SourceError(f"{repo}: no model-repository entries found ({exc.message})") from exc
    except StartupError as exc:
        raise SourceError(f"{repo}: {exc.message}; gan-serve would refuse to start on it") from exc


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
