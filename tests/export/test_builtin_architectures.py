"""Every built-in architecture, randomized and saved in every format that applies, exports correctly."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image

from export.graph_passes import asymmetric_conv_transposes, inverse_transpose_pairs
from service.card import METADATA_KEY, ModelCard, read_card
from tests.export.conftest import FORMATS, SAVEDMODEL_ARCHITECTURES, SMALL_OPTIONS

CASES = [(a, f) for a in SMALL_OPTIONS for f in FORMATS] + [
    (a, "savedmodel") for a in SAVEDMODEL_ARCHITECTURES
]
IDS = [f"{a}-{f}" for a, f in CASES]

pytestmark = pytest.mark.xdist_group("export")


def _session(entry) -> ort.InferenceSession:
    return ort.InferenceSession(str(entry / "model.onnx"), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize(("architecture", "fmt"), CASES, ids=IDS)
def test_parity_within_tolerance(builtin_export, architecture: str, fmt: str) -> None:
    exported = builtin_export(architecture, fmt)
    parity = exported.card.parity
    assert 0 < parity.max_abs_error <= parity.tolerance == 1e-4  # > 0: the weights really are random
    assert len(parity.cases) >= 2
    assert {1, 7} <= {c.input_shape[0] for c in parity.cases}
    assert all(error <= 1e-4 for error in parity.passes.values())


@pytest.mark.parametrize(("architecture", "fmt"), CASES, ids=IDS)
def test_batches_1_and_7_run(builtin_export, architecture: str, fmt: str) -> None:
    exported = builtin_export(architecture, fmt)
    card = exported.card
    session = _session(exported.entry)
    rng = np.random.default_rng(0)
    for batch in (1, 7):
        if card.kind == "generator":
            x = rng.standard_normal((batch, card.latent_size)).astype(np.float32)
        else:
            x = rng.uniform(0, 1, (batch, 10, 12, card.input_channels)).astype(np.float32)
        (y,) = session.run(None, {card.input_name: x})
        assert y.shape[0] == batch
        assert np.isfinite(y).all()
        low, high = card.output_range.low, card.output_range.high
        assert low - 1e-6 <= y.min() and y.max() <= high + 1e-6


@pytest.mark.parametrize("fmt", [*FORMATS, "savedmodel"])
def test_upscaler_accepts_odd_sizes(builtin_export, fmt: str) -> None:
    exported = builtin_export("srgan-x4", fmt)
    card = exported.card
    assert card.scale == 4
    x = np.random.default_rng(1).uniform(0, 1, (1, 17, 23, 3)).astype(np.float32)
    (y,) = _session(exported.entry).run(None, {"lr": x})
    assert y.shape == (1, 68, 92, 3)


@pytest.mark.parametrize(("architecture", "fmt"), CASES, ids=IDS)
def test_card_is_complete_and_agrees_with_graph(builtin_export, architecture: str, fmt: str) -> None:
    exported = builtin_export(architecture, fmt)
    card = read_card(exported.entry)
    assert card == exported.card
    model = onnx.load(str(exported.entry / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)

    metadata = {p.key: p.value for p in model.metadata_props}
    assert ModelCard.model_validate(json.loads(metadata[METADATA_KEY])) == card

    graph_input, graph_output = model.graph.input[0], model.graph.output[0]
    assert (card.input_name, card.output_name) == (graph_input.name, graph_output.name)
    expected_input = "z" if card.kind == "generator" else "lr"
    assert (card.input_name, card.output_name) == (expected_input, "image")

    def shape(value):
        return [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]

    assert card.input_shape == shape(graph_input) and card.output_shape == shape(graph_output)
    assert card.input_shape[0] is None and card.output_shape[0] is None  # dynamic batch
    assert card.opset == 17 == next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))

    assert card.source.format == fmt
    assert card.source.sha256 == _sha256(exported.source)
    assert {"tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime"} <= set(card.tools)
    assert card.created.endswith("Z")
    assert card.output_range.low == -1.0 and card.output_range.high == 1.0  # all built-ins end in tanh

    if card.kind == "generator":
        assert card.latent_size == 100
        assert card.input_shape == [None, 100]
        expected_hwc = {
            "mlp-cifar10": (32, 32, 3),
            "dcgan-cifar10": (32, 32, 3),
            "dcgan-mnist": (28, 28, 1),
            "dcgan-faces64": (64, 64, 3),
        }[architecture]
        assert (card.height, card.width, card.channels) == expected_hwc
        assert card.flat_output == (architecture == "mlp-cifar10")
        if not card.flat_output:
            assert card.output_shape == [None, *expected_hwc]
    else:
        assert card.input_shape == [None, None, None, 3] and card.output_shape == [None, None, None, 3]
        assert card.input_range is not None and (card.input_range.low, card.input_range.high) == (0.0, 1.0)
        assert card.input_channels == 3 and card.channels == 3


@pytest.mark.parametrize(("architecture", "fmt"), CASES, ids=IDS)
def test_graph_is_gpu_clean(builtin_export, architecture: str, fmt: str) -> None:
    exported = builtin_export(architecture, fmt)
    model = onnx.load(str(exported.entry / "model.onnx"))
    assert asymmetric_conv_transposes(model) == []
    assert inverse_transpose_pairs(model) == []
    assert all(node.domain in ("", "ai.onnx") for node in model.graph.node)
    passes = exported.card.parity.passes
    assert set(passes) == {
        "symmetric-conv-transpose",
        "remove-inverse-transposes",
        "onnxruntime-basic-optimization",
    }
    if architecture in ("dcgan-cifar10", "dcgan-mnist"):  # k − s odd: the rewrite must have happened
        assert any(p.startswith("symmetric-conv-transpose") for p in exported.card.graph_passes)


@pytest.mark.parametrize("architecture", list(SMALL_OPTIONS))
def test_preview_shows_source_above_onnx(builtin_export, architecture: str) -> None:
    exported = builtin_export(architecture, "keras")
    with Image.open(exported.entry / "preview.png") as image:
        assert image.mode == "RGB"
        pixels = np.asarray(image).astype(int)
    gap = 4  # two rows of equal height between 4-pixel gaps
    row = (pixels.shape[0] - 3 * gap) // 2
    top, bottom = pixels[gap : gap + row], pixels[2 * gap + row : 2 * gap + 2 * row]
    assert top.std() > 0 and bottom.std() > 0
    # Same model, same inputs: the two rows look the same to within 8-bit rounding.
    assert np.abs(top - bottom).max() <= 1


def _sha256(path) -> str:
    from export.api import sha256_path

    if path.is_dir():
        return sha256_path(path)
    return hashlib.sha256(path.read_bytes()).hexdigest()
