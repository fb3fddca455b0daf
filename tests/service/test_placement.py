"""Node placement: which provider really runs each node, and no default model leaving any on the CPU."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient

from service.card import read_card
from service.placement import enable_placement_profile, node_placement
from service.repository import ModelRepository
from service.sessions import CPU, CUDA
from service.settings import Settings
from tests.service.conftest import RGB_GENERATOR

HAS_CUDA = CUDA in ort.get_available_providers()


def test_placement_counts_every_node_that_ran_and_removes_the_profile(repo: Path, tmp_path: Path) -> None:
    card = read_card(repo / RGB_GENERATOR)
    options = ort.SessionOptions()
    enable_placement_profile(options, tmp_path, RGB_GENERATOR)
    session = ort.InferenceSession(str(repo / RGB_GENERATOR / card.file), options, providers=[CPU])
    session.run(None, {card.input_name: np.zeros((2, 16), np.float32)})
    placement = node_placement(session)
    assert set(placement) == {CPU}
    assert placement[CPU]["ConvTranspose"] == 2
    assert placement[CPU]["MatMul"] == 1
    assert list(tmp_path.iterdir()) == []


def test_models_lists_cpu_nodes_empty_on_a_cpu_deployment(client: TestClient) -> None:
    models = client.get("/models").json()["models"]
    assert models and all(model["cpu_nodes"] == {} for model in models)


@pytest.mark.skipif(not HAS_CUDA, reason="needs onnxruntime-gpu and a CUDA device")
@pytest.mark.xdist_group("tf")
def test_every_builtin_architecture_runs_wholly_on_cuda(tmp_path: Path) -> None:
    # The built-in architectures are Keras code: this one check needs the export tool.
    keras = pytest.importorskip("keras")

    from export.api import export_keras_model
    from export.architectures import ARCHITECTURES, build

    keras.utils.set_random_seed(0)
    for name in ARCHITECTURES:
        export_keras_model(build(name), tmp_path, name, architecture=name, demo_weights=True, preview=False)
    settings = Settings(models_dir=tmp_path, device="cuda", warmup_batch_sizes=[1, 8], tile_size=64)
    with ThreadPoolExecutor(1) as pool:
        repository = ModelRepository.load(settings, pool)
    assert {name: model.provider for name, model in repository.models.items()} == dict.fromkeys(
        ARCHITECTURES, CUDA
    )
    left_on_cpu = {name: model.cpu_nodes for name, model in repository.models.items() if model.cpu_nodes}
    assert left_on_cpu == {}
