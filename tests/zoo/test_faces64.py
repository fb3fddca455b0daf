"""The faces64 port reproduces the original PyTorch generator, in Keras and as exported ONNX."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from zoo import faces64

REFERENCE = Path(__file__).parent / "data" / "faces64_reference.npz"
pytestmark = pytest.mark.xdist_group("zoo")


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(REFERENCE) as data:
        return {k: data[k] for k in ("latents", "images")}


@pytest.fixture(scope="module")
def keras_port() -> object:
    return faces64.port(faces64.load_state_dict())


def test_keras_port_matches_the_stored_pytorch_reference(keras_port: object, reference: dict) -> None:
    images = faces64.generate(keras_port, reference["latents"])

    assert images.shape == (4, 64, 64, 3)
    assert np.abs(images - reference["images"]).max() < 1e-4


def test_keras_port_matches_live_pytorch(keras_port: object) -> None:
    pytest.importorskip("torch")
    from tests.zoo.make_faces64_reference import torch_generate, torch_generator

    latents = np.random.default_rng(7).standard_normal((8, faces64.LATENT_SIZE)).astype(np.float32)
    expected = torch_generate(torch_generator(), latents)

    assert np.abs(faces64.generate(keras_port, latents) - expected).max() < 1e-4


def test_a_flipped_kernel_would_not_match(reference: dict) -> None:
    """The layout question settled by numbers: a spatially flipped kernel is far off."""
    state = faces64.load_state_dict()
    flipped = {k: v[:, :, ::-1, ::-1].copy() if v.ndim == 4 else v for k, v in state.items()}
    images = faces64.generate(faces64.port(flipped), reference["latents"])

    assert np.abs(images - reference["images"]).max() > 0.1


def test_exported_onnx_matches_the_stored_pytorch_reference(faces_repo: Path, reference: dict) -> None:
    session = ort.InferenceSession(
        str(faces_repo / "faces64" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    card = json.loads((faces_repo / "faces64" / "model.json").read_text())
    (images,) = session.run(None, {card["input_name"]: reference["latents"]})

    assert np.abs(images - reference["images"]).max() < 1e-4
    assert card["demo_weights"] is False
    assert "MIT" in card["description"] and "DigiFace1M" in card["description"]


def test_faces_grid_is_four_by_four_faces(faces_repo: Path, tmp_path: Path) -> None:
    from PIL import Image

    from zoo.figures import faces_grid

    with Image.open(faces_grid(faces_repo, tmp_path / "grid.png")) as grid:
        assert grid.size == (4 * 128 + 5 * 2, 4 * 128 + 5 * 2)
        pixels = np.asarray(grid.convert("RGB"), dtype=np.float32)
    assert pixels.std() > 20  # faces, not a flat image
