"""Read a PyTorch zip checkpoint (`torch.save`) into numpy arrays without PyTorch.

A checkpoint's `data.pkl` is a pickle, and unpickling can call any importable function. The
unpickler here resolves only the handful of globals a tensor state dict needs (an `OrderedDict`,
`torch._utils._rebuild_tensor_v2`, the typed storage names) and refuses every other one before
anything is called, naming it in the error.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Literal

import numpy as np

_STORAGE_DTYPES: dict[str, str] = {
    "DoubleStorage": "f8",
    "FloatStorage": "f4",
    "HalfStorage": "f2",
    "LongStorage": "i8",
    "IntStorage": "i4",
    "ShortStorage": "i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


class CheckpointError(ValueError):
    """The file is not a PyTorch zip checkpoint this reader accepts (or it tries to run code)."""


class _StorageType:
    """Stands for a `torch.*Storage` class: only its element type matters here."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


def _rebuild_tensor_v2(
    storage: np.ndarray,
    storage_offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    requires_grad: bool = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> np.ndarray:
    """`torch._utils._rebuild_tensor_v2` for numpy: a strided view of the storage, copied."""
    if not size:
        return np.array(storage[storage_offset])
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[storage_offset:], shape=tuple(size), strides=tuple(s * item for s in stride)
    )
    return np.array(view)


def _rebuild_parameter(
    data: np.ndarray, requires_grad: bool = False, backward_hooks: Any = None
) -> np.ndarray:
    """`torch._utils._rebuild_parameter`: a parameter is just its tensor here."""
    return data


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _TensorUnpickler(pickle.Unpickler):
    """Rebuilds tensors as numpy arrays; every other global is refused before it is resolved."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, byteorder: str) -> None:
        super().__init__(io.BytesIO(data))
        self.archive = archive
        self.prefix = prefix
        self.byteorder: Literal["<", ">"] = "<" if byteorder == "little" else ">"
        self.storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise CheckpointError(
                f"checkpoint refused: its pickle references {module}.{name}, which a tensor "
                "checkpoint never needs (a pickle can run code); only tensors are read"
            ) from None

    def persistent_load(self, pid: Any) -> np.ndarray:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointError(f"checkpoint refused: unknown persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise CheckpointError(f"checkpoint refused: storage type {storage_type!r} is not a tensor type")
        key = str(key)
        if key not in self.storages:
            try:
                raw = self.archive.read(f"{self.prefix}data/{key}")
            except KeyError:
                raise CheckpointError(f"checkpoint is missing tensor data {self.prefix}data/{key}") from None
            dtype = storage_type.dtype.newbyteorder(self.byteorder)
            array = np.frombuffer(raw, dtype=dtype)
            if array.size < int(numel):
                raise CheckpointError(f"checkpoint tensor data {key} is shorter than its {numel} elements")
            self.storages[key] = array.astype(storage_type.dtype.newbyteorder("="))
        return self.storages[key]


def load_checkpoint(path: Path) -> Any:
    """The object `torch.save` wrote to `path` (dicts and `OrderedDict`s of numpy arrays)."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise CheckpointError(
            f"{path} is not a PyTorch zip checkpoint (legacy pre-1.6 pickles are not read)"
        ) from None
    with archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise CheckpointError(f"{path} has {len(pickles)} data.pkl records, expected 1")
        prefix = pickles[0][: -len("data.pkl")]
        try:
            byteorder = archive.read(f"{prefix}byteorder").decode().strip()
        except KeyError:
            byteorder = "little"
        unpickler = _TensorUnpickler(archive.read(pickles[0]), archive, prefix, byteorder)
        try:
            return unpickler.load()
        except CheckpointError:
            raise
        except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError) as e:
            raise CheckpointError(f"{path}: cannot read its pickle: {e}") from e
