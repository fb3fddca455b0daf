"""The restricted checkpoint reader: tensors come back as numpy, code never runs."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from zoo import faces64
from zoo.torch_checkpoint import CheckpointError, load_checkpoint


def _reduce_pickle(module: str, name: str, argument: str) -> bytes:
    """A protocol-2 pickle that calls `module.name(argument)` when loaded by a plain unpickler."""
    arg = argument.encode()
    call = b"c" + f"{module}\n{name}\n".encode() + b"X" + struct.pack("<I", len(arg)) + arg + b"\x85R"
    return b"\x80\x02" + call + b"."


def _checkpoint(path: Path, data_pkl: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", data_pkl)
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/data/0", np.arange(4, dtype=np.float32).tobytes())
    return path


@pytest.mark.parametrize(
    ("module", "name", "argument"),
    [
        ("os", "system", "touch {marker}"),
        ("posix", "system", "touch {marker}"),
        ("builtins", "eval", "open({marker!r}, 'w')"),
        ("builtins", "exec", "open({marker!r}, 'w').close()"),
        ("subprocess", "Popen", "touch {marker}"),
    ],
)
def test_refuses_a_pickle_that_would_run_code(tmp_path: Path, module: str, name: str, argument: str) -> None:
    marker = tmp_path / "pwned"
    payload = _reduce_pickle(module, name, argument.format(marker=str(marker)))
    path = _checkpoint(tmp_path / "evil.pt", payload)

    with pytest.raises(CheckpointError, match=rf"references {module}\.{name}\b"):
        load_checkpoint(path)
    assert not marker.exists()


def test_refuses_code_hidden_inside_a_state_dict(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    # {"w": os.system("touch marker")}: the call sits where a tensor would be.
    inner = _reduce_pickle("os", "system", f"touch {marker}")[2:-1]
    payload = b"\x80\x02}X\x01\x00\x00\x00w" + inner + b"s."
    with pytest.raises(CheckpointError, match=r"os\.system"):
        load_checkpoint(_checkpoint(tmp_path / "evil.pt", payload))
    assert not marker.exists()


def test_refuses_a_file_that_is_not_a_zip_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "legacy.pt"
    path.write_bytes(_reduce_pickle("os", "system", "true"))
    with pytest.raises(CheckpointError, match="not a PyTorch zip checkpoint"):
        load_checkpoint(path)


def test_reads_the_face_generator_checkpoint() -> None:
    state = faces64.load_state_dict()

    assert state["main.0.weight"].shape == (100, 512, 4, 4)
    assert state["main.12.weight"].shape == (64, 3, 4, 4)
    assert state["main.1.running_var"].dtype == np.float32
    assert int(state["main.1.num_batches_tracked"]) > 0
    assert np.isfinite(state["main.3.weight"]).all()


def test_matches_torch_load_when_pytorch_is_importable() -> None:
    torch = pytest.importorskip("torch")
    ours = faces64.load_state_dict()
    theirs = torch.load(faces64.checkpoint_path(), map_location="cpu", weights_only=True)[
        faces64.CHECKPOINT_KEY
    ]

    assert list(ours) == list(theirs)
    for key, value in theirs.items():
        np.testing.assert_array_equal(ours[key], value.numpy())
