"""Narrow convolutions run wide on the CPU: the same numbers for a fraction of the work.

onnxruntime's CPU provider runs convolutions in a blocked layout (NCHWc) whose vectors hold 8
(AVX2) or 16 (AVX-512) output channels. A convolution with few output channels — the last layer
of almost every image model, 3 for RGB, 1 for grayscale — computes a whole vector for each of its
few channels: srgan-x4's final 9x9 convolution to RGB is 3 channels in 16 lanes, and half of the
model's time.

`widen_narrow_convs` rewrites such a convolution so that the idle lanes compute neighbouring
pixels: with S = 16 // C_out shifts, output channel s*C_out + c holds channel c's kernel moved s
columns right (in a kernel S-1 columns wider, zero elsewhere), the convolution steps S columns at
a time, and a reshape and transpose put the columns back in order. Every output value is the same
sequence of multiply-adds as before (the extra terms multiply by exactly zero), so the results are
meant to be bit-identical; a fused activation that was the convolution's only consumer moves
before the reordering, as it commutes with it. `service.sessions` keeps a rewritten graph only
when its outputs on probe inputs are bit-identical to the original's and it runs faster there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

#: Output channels one vector of the widest blocked layout holds (AVX-512; AVX2 holds 8).
LANES = 16
#: Elementwise activations onnxruntime fuses into a convolution: moved with it, before the reordering.
FUSED_ACTIVATIONS = frozenset({"Relu", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "Clip"})
#: Slice with its bounds as inputs needs opset 10; everything else used here is older.
MIN_OPSET = 10


def widen_narrow_convs(model_bytes: bytes) -> tuple[bytes, int]:
    """The model with every narrow 2-D convolution widened, and how many were (0: the bytes as given)."""
    model = onnx.load_from_string(model_bytes)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        return model_bytes, 0
    graph = model.graph
    constants = {tensor.name: tensor for tensor in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    graph_outputs = {output.name for output in graph.output}
    nodes: list[onnx.NodeProto] = []
    moved: set[str] = set()  # outputs of the activations that move with their convolution
    widened = 0
    for index, node in enumerate(graph.node):
        if node.output and node.output[0] in moved and node.op_type in FUSED_ACTIVATIONS:
            continue
        plan = _plan(node, constants)
        if plan is None:
            nodes.append(node)
            continue
        users = consumers.get(node.output[0], [])
        activation = None
        if (
            len(users) == 1
            and users[0].op_type in FUSED_ACTIVATIONS
            and users[0].domain in ("", "ai.onnx")
            and node.output[0] not in graph_outputs
        ):
            activation = users[0]
            moved.add(activation.output[0])
        nodes.extend(_widened(node, plan, activation, graph, f"{node.output[0]}/wide{index}"))
        widened += 1
    if not widened:
        return model_bytes, 0
    del graph.node[:]
    graph.node.extend(nodes)
    produced = {name for node in graph.node for name in node.output}
    kept = [info for info in graph.value_info if info.name in produced]
    del graph.value_info[:]
    graph.value_info.extend(kept)
    return model.SerializeToString(), widened


@dataclass(frozen=True)
class _Plan:
    """What a widened convolution needs: its weights, bias, shifts and explicit [t, l, b, r] pads."""

    weights: np.ndarray
    bias: np.ndarray
    shifts: int
    pads: list[int]


def _plan(node: onnx.NodeProto, constants: dict[str, onnx.TensorProto]) -> _Plan | None:
    """How to widen `node`, or None when it is not a narrow stride-1 2-D convolution with constant weights."""
    if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
        return None
    if node.input[1] not in constants or (
        len(node.input) > 2 and node.input[2] and node.input[2] not in constants
    ):
        return None
    weights = numpy_helper.to_array(constants[node.input[1]])
    if weights.ndim != 4 or weights.dtype != np.float32:
        return None
    out_channels, _, kernel_h, kernel_w = weights.shape
    shifts = LANES // max(out_channels, 1)
    if shifts < 2 or kernel_w < 3:  # nothing idle to fill, or no overlap for the shifts to share
        return None
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attributes.get("group", 1) != 1:
        return None
    if list(attributes.get("strides", [1, 1])) != [1, 1] or list(attributes.get("dilations", [1, 1])) != [
        1,
        1,
    ]:
        return None
    if "kernel_shape" in attributes and list(attributes["kernel_shape"]) != [kernel_h, kernel_w]:
        return None
    pads = _pads(attributes, kernel_h, kernel_w)
    if pads is None:
        return None
    bias = (
        numpy_helper.to_array(constants[node.input[2]])
        if len(node.input) > 2 and node.input[2]
        else np.zeros(out_channels, np.float32)
    )
    return _Plan(weights, bias.astype(np.float32, copy=False), shifts, pads)


def _pads(attributes: dict[str, object], kernel_h: int, kernel_w: int) -> list[int] | None:
    """Explicit [top, left, bottom, right] pads of a stride-1 convolution, or None for one not handled."""
    auto_pad = attributes.get("auto_pad", b"NOTSET")
    if auto_pad in (b"NOTSET", "NOTSET"):
        pads = list(attributes.get("pads", [0, 0, 0, 0]))  # type: ignore[call-overload]
        return pads if len(pads) == 4 else None
    if auto_pad in (b"VALID", "VALID"):
        return [0, 0, 0, 0]
    total_h, total_w = kernel_h - 1, kernel_w - 1
    if auto_pad in (b"SAME_UPPER", "SAME_UPPER"):
        top, left = total_h // 2, total_w // 2
    elif auto_pad in (b"SAME_LOWER", "SAME_LOWER"):
        top, left = total_h - total_h // 2, total_w - total_w // 2
    else:
        return None
    return [top, left, total_h - top, total_w - left]


def _widened(
    node: onnx.NodeProto, plan: _Plan, activation: onnx.NodeProto | None, graph: onnx.GraphProto, prefix: str
) -> list[onnx.NodeProto]:
    """The nodes replacing `node` (and `activation`): the wide convolution, then the reordering."""
    weights, shifts = plan.weights, plan.shifts
    out_channels, in_channels, kernel_h, kernel_w = weights.shape
    wide = np.zeros((shifts * out_channels, in_channels, kernel_h, kernel_w + shifts - 1), np.float32)
    for shift in range(shifts):
        wide[shift * out_channels : (shift + 1) * out_channels, :, :, shift : shift + kernel_w] = weights
    top, left, bottom, right = plan.pads
    # Right pad grown by shifts - 1: ceil(W / shifts) steps cover every column, for any width W.
    pads = [top, left, bottom, right + shifts - 1]

    def constant(name: str, value: np.ndarray) -> str:
        graph.initializer.append(numpy_helper.from_array(value, f"{prefix}/const/{name}"))
        return f"{prefix}/const/{name}"

    def ints(name: str, values: list[int]) -> str:
        return constant(name, np.array(values, np.int64))

    x = node.input[0]
    final = activation.output[0] if activation is not None else node.output[0]
    conv = helper.make_node(
        "Conv",
        [x, constant("W", wide), constant("B", np.tile(plan.bias, shifts))],
        [f"{prefix}/conv"],
        name=f"{prefix}/conv",
        kernel_shape=[kernel_h, kernel_w + shifts - 1],
        strides=[1, shifts],
        pads=pads,
    )
    result = [conv]
    y = f"{prefix}/conv"
    if activation is not None:
        moved = onnx.NodeProto()
        moved.CopyFrom(activation)
        moved.name = f"{prefix}/{activation.op_type}"
        moved.input[0] = y
        moved.output[0] = f"{prefix}/activated"
        result.append(moved)
        y = f"{prefix}/activated"
    result += [
        # (N, shifts*C, H, Q) -> (N, shifts, C, H*Q) -> (N, C, H*Q, shifts) -> (N, C, H, Q*shifts): W kept
        helper.make_node("Reshape", [y, ints("split", [0, shifts, out_channels, -1])], [f"{prefix}/split"]),
        helper.make_node("Transpose", [f"{prefix}/split"], [f"{prefix}/interleaved"], perm=[0, 2, 3, 1]),
        helper.make_node("Shape", [x], [f"{prefix}/input_shape"]),
        helper.make_node("Gather", [f"{prefix}/input_shape", ints("n_index", [0])], [f"{prefix}/n"], axis=0),
        helper.make_node(
            "Gather", [f"{prefix}/input_shape", ints("h_index", [2])], [f"{prefix}/h_in"], axis=0
        ),
        helper.make_node(
            "Gather", [f"{prefix}/input_shape", ints("w_index", [3])], [f"{prefix}/w_in"], axis=0
        ),
        # The original output's height and width: input + pads - kernel + 1.
        helper.make_node(
            "Add", [f"{prefix}/h_in", ints("h_grow", [top + bottom - kernel_h + 1])], [f"{prefix}/h"]
        ),
        helper.make_node(
            "Add", [f"{prefix}/w_in", ints("w_grow", [left + right - kernel_w + 1])], [f"{prefix}/w"]
        ),
        helper.make_node(
            "Concat",
            [f"{prefix}/n", ints("c", [out_channels]), f"{prefix}/h", ints("rest", [-1])],
            [f"{prefix}/rows_shape"],
            axis=0,
        ),
        helper.make_node("Reshape", [f"{prefix}/interleaved", f"{prefix}/rows_shape"], [f"{prefix}/rows"]),
        helper.make_node(
            "Slice", [f"{prefix}/rows", ints("start", [0]), f"{prefix}/w", ints("axis", [3])], [final]
        ),
    ]
    return result
