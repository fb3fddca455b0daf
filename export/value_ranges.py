"""Value ranges read off the frozen TensorFlow graph, before any conversion.

Output: walk back from the output through ops that move values without changing them and through
affine ops with constant operands (`Rescaling`, `x * 127.5 + 127.5`, a normalising Lambda or TF
op), to the op that bounds the values — tanh [-1, 1], sigmoid [0, 1], relu6 [0, 6], a clip or a
min/max pair — then map that interval forward through the affine ops.

Input (upscalers): walk forward from the input through leading affine ops with constant operands;
an affine map that takes [0, 255] to a width-1 or width-2 interval (`Rescaling(1/255)`, `x/127.5-1`,
`x/255 - mean`) means the model reads 8-bit values, one that takes [0, 1] to [-1, 1] means [0, 1].
Anything else is unknown, and the user is asked.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow as tf

Range = tuple[float, float]
Affine = tuple[float, float]  # y = a * x + b

_BOUNDING: dict[str, Range] = {"Tanh": (-1.0, 1.0), "Sigmoid": (0.0, 1.0), "Relu6": (0.0, 6.0)}
#: Ops whose output values are a subset of their first input's values.
_VALUE_PRESERVING = {
    "Identity", "IdentityN", "Reshape", "Transpose", "DepthToSpace", "SpaceToDepth", "Squeeze",
    "ExpandDims", "StridedSlice", "Slice", "Cast", "ResizeNearestNeighbor", "Snapshot", "StopGradient",
    "EnsureShape",
}  # fmt: skip
_PASS_THROUGH_CONST = {"Identity", "Cast", "Snapshot"}


class _Graph:
    def __init__(self, graph_def: Any) -> None:
        self.nodes = {node.name: node for node in graph_def.node}
        self.consumers: dict[str, list[Any]] = {}
        for node in graph_def.node:
            for name in self.data_inputs(node):
                self.consumers.setdefault(name, []).append(node)

    @staticmethod
    def data_inputs(node: Any) -> list[str]:
        return [i.split(":")[0] for i in node.input if not i.startswith("^")]

    def producer(self, node: Any, index: int) -> Any:
        inputs = self.data_inputs(node)
        return self.nodes.get(inputs[index]) if index < len(inputs) else None

    def scalar(self, node: Any) -> float | None:
        """The value of a constant (through Identity/Cast), when it is one number for every element."""
        while node is not None and node.op in _PASS_THROUGH_CONST:
            node = self.producer(node, 0)
        if node is None or node.op != "Const":
            return None
        value = np.asarray(tf.make_ndarray(node.attr["value"].tensor), dtype=np.float64)
        if value.size == 0 or not np.all(value == value.flat[0]):
            return None
        return float(value.flat[0])

    def affine(self, node: Any) -> tuple[Affine, Any] | None:
        """(a, b) and the non-constant input when `node` is `a * x + b` with constant a, b."""
        if node.op == "Neg":
            return (-1.0, 0.0), self.producer(node, 0)
        if node.op not in ("Mul", "AddV2", "Add", "Sub", "RealDiv", "Div", "BiasAdd"):
            return None
        left, right = self.producer(node, 0), self.producer(node, 1)
        c_left, c_right = self.scalar(left), self.scalar(right)
        if c_right is not None and c_left is None:
            c, x, const_first = c_right, left, False
        elif c_left is not None and c_right is None:
            c, x, const_first = c_left, right, True
        else:
            return None
        if node.op == "Mul":
            return (c, 0.0), x
        if node.op in ("AddV2", "Add", "BiasAdd"):
            return (1.0, c), x
        if node.op == "Sub":
            return ((-1.0, c) if const_first else (1.0, -c)), x
        if const_first or c == 0:  # c / x is not affine
            return None
        return (1.0 / c, 0.0), x


def _apply(affines: list[Affine], interval: Range) -> Range:
    low, high = interval
    for a, b in affines:
        low, high = sorted((a * low + b, a * high + b))
    return (low, high)


def output_range(graph_def: Any, output_tensor: str) -> Range | None:
    """The interval the output's values are confined to, or None when nothing bounds them."""
    graph = _Graph(graph_def)
    node = graph.nodes.get(output_tensor.split(":")[0])
    affines: list[Affine] = []  # from the output back
    lower: float | None = None
    upper: float | None = None
    while node is not None:
        if node.op in _BOUNDING:
            return _apply(affines[::-1], _BOUNDING[node.op])
        if node.op == "ClipByValue":
            low, high = graph.scalar(graph.producer(node, 1)), graph.scalar(graph.producer(node, 2))
            if low is not None and high is not None:
                return _apply(affines[::-1], (low, high))
            return None
        if node.op in ("Maximum", "Minimum"):
            inputs = [graph.producer(node, 0), graph.producer(node, 1)]
            constants = [graph.scalar(n) for n in inputs]
            if sum(c is not None for c in constants) != 1:
                return None
            value = next(c for c in constants if c is not None)
            if node.op == "Maximum" and lower is None:
                lower = value
            elif node.op == "Minimum" and upper is None:
                upper = value
            if lower is not None and upper is not None and not affines:
                return (lower, upper)
            node = inputs[1] if constants[0] is not None else inputs[0]
            continue
        if node.op in _VALUE_PRESERVING:
            node = graph.producer(node, 0)
            continue
        found = graph.affine(node)
        if found is None or lower is not None or upper is not None:
            return None
        affines.append(found[0])
        node = found[1]
    return None


def _leading_affine(graph: _Graph, start: Any) -> Affine | None:
    """The affine map applied to the input before its first other op; None if there is none."""
    a_total, b_total = 1.0, 0.0
    node, changed = start, False
    while True:
        consumers = graph.consumers.get(node.name, [])
        if len(consumers) != 1:
            break
        nxt = consumers[0]
        if nxt.op in _PASS_THROUGH_CONST:
            node = nxt
            continue
        found = graph.affine(nxt)
        if found is None or found[1] is not node:
            break
        (a, b), _ = found
        a_total, b_total = a * a_total, a * b_total + b
        node, changed = nxt, True
    return (a_total, b_total) if changed else None


def _close(value: float, target: float, tolerance: float = 0.02) -> bool:
    return abs(value - target) <= tolerance * abs(target)


def input_range(graph_def: Any, input_tensor: str) -> Range | None:
    """The range an image model expects, inferred from the normalisation it applies first."""
    graph = _Graph(graph_def)
    start = graph.nodes.get(input_tensor.split(":")[0])
    if start is None:
        return None
    affine = _leading_affine(graph, start)
    if affine is None:
        return None
    a, b = affine
    width_255 = abs(a) * 255.0
    if _close(width_255, 1.0) or _close(width_255, 2.0):
        return (0.0, 255.0)
    low, high = sorted((b, a + b))
    if _close(abs(a), 2.0) and abs(low + 1) < 0.02 and abs(high - 1) < 0.02:
        return (0.0, 1.0)
    return None


def iter_ops(graph_def: Any) -> Iterator[str]:
    """Every op type in the graph (for diagnostics and tests)."""
    for node in graph_def.node:
        yield node.op
