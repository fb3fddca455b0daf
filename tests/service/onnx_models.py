"""Small real ONNX models written with `onnx.helper`, and repository entries around them.

The serving side never needs TensorFlow, so neither do its tests: each graph here is a few nodes
with seeded random weights, shaped like what `gan-export` writes (float32 NHWC images at the
graph's edge, a dynamic batch axis), and each entry gets a card as `gan-export` would write it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from service.card import MODEL_FILENAME, Condition, ModelCard, Parity, Source, ValueRange, write_card

OPSET = 17


def graph_model(
    name: str,
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    weights: dict[str, np.ndarray],
) -> onnx.ModelProto:
    """A checked ONNX model of `nodes`, with `weights` as initializers."""
    graph = helper.make_graph(
        nodes, name, inputs, outputs, [numpy_helper.from_array(array, key) for key, array in weights.items()]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_entry(repo: Path, model: onnx.ModelProto, **card: Any) -> Path:
    """`<repo>/<name>/model.onnx` and its card; `card` holds the fields that say how to call it."""
    entry = repo / str(card["name"])
    entry.mkdir(parents=True)
    onnx.save(model, entry / MODEL_FILENAME)
    write_card(
        entry,
        ModelCard(
            source=Source(path=f"{card['name']}.onnx", format="builtin", sha256="0" * 64),
            opset=OPSET,
            parity=Parity(tolerance=1e-4, max_abs_error=None, cases=[]),
            created="2026-11-01T00:00:00Z",
            **card,
        ),
    )
    return entry


def write_upscaler_entry(repo: Path, model: onnx.ModelProto, name: str, scale: int) -> Path:
    """An RGB upscaler's entry: NHWC `low_res` in 0..1 → `high_res`, any size, `scale`× larger."""
    return write_entry(
        repo,
        model,
        name=name,
        kind="upscaler",
        input_name="low_res",
        output_name="high_res",
        input_shape=[None, None, None, 3],
        output_shape=[None, None, None, 3],
        channels=3,
        scale=scale,
        input_range=ValueRange(low=0.0, high=1.0),
        input_channels=3,
    )


def _float(name: str, shape: list[int | str]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _weights(seed: int, *shape: int, scale: float = 0.3) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, scale, shape).astype(np.float32)


def conv_generator(name: str, latent: int, edge: int, channels: int, *, seed: int = 0) -> onnx.ModelProto:
    """DCGAN-like: z @ W → (N, 8, edge/4, edge/4) → two stride-2 ConvTransposes → tanh → NHWC."""
    base, width = edge // 4, 8
    nodes = [
        helper.make_node("MatMul", ["z", "dense"], ["flat"]),
        helper.make_node("Reshape", ["flat", "cells"], ["cells_out"]),
        helper.make_node(
            "ConvTranspose", ["cells_out", "up1"], ["up1_out"], strides=[2, 2], pads=[1, 1, 1, 1]
        ),
        helper.make_node("Relu", ["up1_out"], ["relu"]),
        helper.make_node("ConvTranspose", ["relu", "up2"], ["up2_out"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Tanh", ["up2_out"], ["nchw"]),
        helper.make_node("Transpose", ["nchw"], ["image"], perm=[0, 2, 3, 1]),
    ]
    weights = {
        "dense": _weights(seed, latent, width * base * base),
        "cells": np.array([-1, width, base, base], np.int64),
        "up1": _weights(seed + 1, width, width, 4, 4),
        "up2": _weights(seed + 2, width, channels, 4, 4),
    }
    outputs = [_float("image", ["N", edge, edge, channels])]
    return graph_model(name, nodes, [_float("z", ["N", latent])], outputs, weights)


def dense_generator(name: str, latent: int, values: int, *, seed: int = 0) -> onnx.ModelProto:
    """An MLP generator with a flat output: tanh(relu(z @ W1) @ W2), (N, values)."""
    nodes = [
        helper.make_node("MatMul", ["z", "w1"], ["hidden"]),
        helper.make_node("Relu", ["hidden"], ["relu"]),
        helper.make_node("MatMul", ["relu", "w2"], ["pre"]),
        helper.make_node("Tanh", ["pre"], ["image"]),
    ]
    weights = {"w1": _weights(seed, latent, 32), "w2": _weights(seed + 1, 32, values)}
    return graph_model(name, nodes, [_float("z", ["N", latent])], [_float("image", ["N", values])], weights)


def pixel_shuffle_upscaler(name: str, scale: int, channels: int = 3, *, seed: int = 0) -> onnx.ModelProto:
    """An SRGAN-like head: NHWC → 3x3 conv to channels·scale² → pixel shuffle → tanh → NHWC."""
    nodes = [
        helper.make_node("Transpose", ["low_res"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "conv"], ["features"], pads=[1, 1, 1, 1]),
        helper.make_node("DepthToSpace", ["features"], ["shuffled"], blocksize=scale),
        helper.make_node("Tanh", ["shuffled"], ["upscaled"]),
        helper.make_node("Transpose", ["upscaled"], ["high_res"], perm=[0, 2, 3, 1]),
    ]
    weights = {"conv": _weights(seed, channels * scale * scale, channels, 3, 3)}
    inputs = [_float("low_res", ["N", "H", "W", channels])]
    return graph_model(name, nodes, inputs, [_float("high_res", ["N", "H2", "W2", channels])], weights)


def class_level_generator(name: str, latent: int, edge: int, classes: int) -> onnx.ModelProto:
    """A flat edge x edge grayscale generator, tanh(z @ W) over z = latent ++ one-hot(class).

    The one-hot rows of W add a constant per class (-1.5 .. 1.5 before tanh), the latent rows a little
    noise: every image's mean brightness tells its class, and the latents still matter.
    """
    rng = np.random.default_rng(len(name))
    weight = np.zeros((latent + classes, edge * edge), np.float32)
    weight[:latent] = rng.normal(0.0, 0.05, (latent, edge * edge))
    if classes:
        weight[latent:] = np.linspace(-1.5, 1.5, classes)[:, None]
    nodes = [helper.make_node("MatMul", ["z", "w"], ["pre"]), helper.make_node("Tanh", ["pre"], ["image"])]
    inputs = [_float("z", ["N", latent + classes])]
    return graph_model(name, nodes, inputs, [_float("image", ["N", edge * edge])], {"w": weight})


def write_conditional_entry(
    repo: Path, name: str, latent: int, edge: int, classes: int, class_names: list[str] | None = None
) -> Path:
    """A `class_level_generator` entry (unconditional when `classes` is 0), one-hot served encoding."""
    return write_entry(
        repo,
        class_level_generator(name, latent, edge, classes),
        name=name,
        kind="generator",
        description=f"{classes}-class test generator" if classes else "unconditional test generator",
        input_name="z",
        output_name="image",
        input_shape=[None, latent + classes],
        output_shape=[None, edge * edge],
        channels=1,
        height=edge,
        width=edge,
        flat_output=True,
        latent_size=latent,
        condition=Condition(classes=classes, class_names=class_names, source="onehot") if classes else None,
    )
