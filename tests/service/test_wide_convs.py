"""Narrow convolutions widened (`service.wide_convs`): the same bits, and the service's choice.

Graph level: every convolution shape an image model ends with — 1 or 3 output channels, odd and
even kernels, each padding mode, a fused activation or none, batches and widths that are not a
multiple of the shifts — gives bit-identical outputs widened; convolutions the rewrite does not
cover are left byte for byte. Service level: an SRGAN-like upscaler whose last layer is a 9x9
convolution to RGB answers /upscale with the same bytes with and without the rewrite.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient
from onnx import helper

from service.app import create_app
from service.settings import Settings
from service.wide_convs import widen_narrow_convs
from tests.service.onnx_models import _float, _weights, graph_model, write_upscaler_entry
from tests.service.sample_images import png_bytes, random_pixels


def conv_model(
    out_channels: int,
    kernel: tuple[int, int],
    *,
    in_channels: int = 8,
    activation: str | None = "Tanh",
    bias: bool = True,
    **attributes: Any,
) -> onnx.ModelProto:
    """x (N, C, H, W) -> one Conv (constant weights) -> an optional activation -> y."""
    weights = {"w": _weights(1, out_channels, in_channels, *kernel)}
    inputs = ["x", "w"]
    if bias:
        weights["b"] = _weights(2, out_channels)
        inputs.append("b")
    conv_out = "y" if activation is None else "conv"
    nodes = [helper.make_node("Conv", inputs, [conv_out], **attributes)]
    if activation is not None:
        nodes.append(helper.make_node(activation, ["conv"], ["y"]))
    return graph_model(
        "conv",
        nodes,
        [_float("x", ["N", in_channels, "H", "W"])],
        [_float("y", ["N", out_channels, "H2", "W2"])],
        weights,
    )


def session(model: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


NARROW = [
    pytest.param(3, (9, 9), {"auto_pad": "SAME_UPPER"}, "Tanh", id="rgb-9x9-same-tanh"),
    pytest.param(3, (3, 3), {"pads": [1, 1, 1, 1]}, None, id="rgb-3x3-pads"),
    pytest.param(1, (5, 5), {"auto_pad": "SAME_LOWER"}, "Sigmoid", id="gray-5x5-same-lower-sigmoid"),
    pytest.param(3, (4, 4), {"auto_pad": "SAME_UPPER"}, "Relu", id="rgb-even-kernel"),
    pytest.param(4, (3, 5), {"pads": [0, 2, 1, 1]}, None, id="rgba-asymmetric-pads"),
    pytest.param(3, (3, 3), {"auto_pad": "VALID"}, "Tanh", id="rgb-valid"),
]


@pytest.mark.parametrize(("out_channels", "kernel", "attributes", "activation"), NARROW)
def test_widened_convolutions_give_the_same_bits(
    out_channels: int, kernel: tuple[int, int], attributes: dict[str, Any], activation: str | None
) -> None:
    original = conv_model(out_channels, kernel, activation=activation, **attributes).SerializeToString()
    widened, count = widen_narrow_convs(original)
    assert count == 1
    onnx.checker.check_model(onnx.load_from_string(widened))
    before, after = session(original), session(widened)
    rng = np.random.default_rng(7)
    for shape in [(1, 8, 32, 32), (2, 8, 17, 23), (1, 8, 9, 41), (3, 8, 12, 9), (1, 8, 9, 10)]:
        x = rng.standard_normal(shape).astype(np.float32)
        expected = before.run(None, {"x": x})[0]
        got = after.run(None, {"x": x})[0]
        assert got.shape == expected.shape
        assert np.array_equal(got, expected), f"{shape}: max difference {np.abs(got - expected).max()}"


LEFT = [
    pytest.param(conv_model(16, (3, 3), pads=[1, 1, 1, 1]), id="wide-already"),
    pytest.param(conv_model(3, (1, 1)), id="1x1"),
    pytest.param(conv_model(3, (3, 3), strides=[2, 2]), id="strided"),
    pytest.param(conv_model(3, (3, 3), dilations=[2, 2]), id="dilated"),
    pytest.param(conv_model(4, (3, 3), in_channels=8, group=2), id="grouped"),
]


@pytest.mark.parametrize("model", LEFT)
def test_convolutions_not_covered_are_left_as_they_are(model: onnx.ModelProto) -> None:
    original = model.SerializeToString()
    assert widen_narrow_convs(original) == (original, 0)


def test_an_activation_shared_with_another_consumer_stays_after_the_reordering() -> None:
    # The convolution's output also leaves the graph: the activation cannot move before the reordering.
    model = conv_model(3, (3, 3), auto_pad="SAME_UPPER", activation="Tanh")
    model.graph.output.append(_float("conv", ["N", 3, "H", "W"]))
    original = model.SerializeToString()
    widened, count = widen_narrow_convs(original)
    assert count == 1
    x = np.random.default_rng(3).standard_normal((2, 8, 19, 21)).astype(np.float32)
    for expected, got in zip(
        session(original).run(None, {"x": x}), session(widened).run(None, {"x": x}), strict=True
    ):
        assert np.array_equal(got, expected)


def srgan_like_upscaler(name: str) -> onnx.ModelProto:
    """NHWC -> 3x3 conv to 32 -> relu -> pixel shuffle x2 (8 channels) -> 9x9 conv to RGB -> tanh -> NHWC."""
    nodes = [
        helper.make_node("Transpose", ["low_res"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "features_w"], ["features"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["features"], ["relu"]),
        helper.make_node("DepthToSpace", ["relu"], ["shuffled"], blocksize=2),
        helper.make_node("Conv", ["shuffled", "head_w", "head_b"], ["head"], auto_pad="SAME_UPPER"),
        helper.make_node("Tanh", ["head"], ["upscaled"]),
        helper.make_node("Transpose", ["upscaled"], ["high_res"], perm=[0, 2, 3, 1]),
    ]
    weights = {
        "features_w": _weights(11, 32, 3, 3, 3),
        "head_w": _weights(12, 3, 8, 9, 9, scale=0.1),
        "head_b": _weights(13, 3),
    }
    return graph_model(
        name,
        nodes,
        [_float("low_res", ["N", "H", "W", 3])],
        [_float("high_res", ["N", "H2", "W2", 3])],
        weights,
    )


@pytest.fixture(scope="module")
def narrow_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("narrow-models")
    write_upscaler_entry(repo, srgan_like_upscaler("narrow-x2"), "narrow-x2", 2)
    return repo


def test_the_service_upscales_the_same_bytes_with_and_without_widening(
    narrow_repo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    image = png_bytes(random_pixels(37, 45, 3, seed=5))
    answers = []
    for wide in (True, False):
        settings = Settings(models_dir=narrow_repo, wide_convs=wide, tile_size=0, warmup_batch_sizes=[1])
        with (
            caplog.at_level(logging.INFO, logger="service.sessions"),
            TestClient(create_app(settings)) as client,
        ):
            answers.append(
                client.post(
                    "/upscale?model=narrow-x2&format=png",
                    content=image,
                    headers={"content-type": "image/png"},
                )
            )
            listed = client.get("/models").json()["models"][0]["wide_convs"]
            assert listed == (int("run widened" in caplog.text) if wide else 0)
    assert [answer.status_code for answer in answers] == [200, 200]
    assert answers[0].content == answers[1].content
    decisions = [r.getMessage() for r in caplog.records if "narrow convolutions" in r.getMessage()]
    # Only the first app widens (or, if its probe run was not faster here, says it kept the graph).
    assert len(decisions) == 1
    assert (
        "run widened on the CPU: bit-identical outputs" in decisions[0] or "kept as they are" in decisions[0]
    )
