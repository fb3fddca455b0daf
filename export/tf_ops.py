"""tf.keras 2 `TFOpLambda` layers rebuilt for Keras 3 from the TensorFlow symbol they record.

tf.keras 2 turned a TensorFlow function applied to a Keras tensor (`tf.nn.depth_to_space(x, 2)`,
`x / 127.5 - 1`, `tf.clip_by_value(y, 0, 255)`) into a `TFOpLambda` layer whose config stores only
the symbol's name (`"nn.depth_to_space"`) and whose call arguments sit in the inbound node. Unlike a
`Lambda` it carries no code, so it is safe to rebuild — for an allow-list of pure tensor ops. Any
other symbol is refused by name.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from export.errors import UnsupportedLayer

#: Recorded symbol (relative to `tf.`) → the TensorFlow function it names. Pure, stateless tensor
#: ops only: arithmetic, clipping, activations, shape moves, resizing and concatenation.
ALLOWED_SYMBOLS: dict[str, Any] = {
    "nn.depth_to_space": tf.nn.depth_to_space,
    "nn.space_to_depth": tf.nn.space_to_depth,
    "__operators__.add": tf.math.add,
    "math.add": tf.math.add,
    "math.subtract": tf.math.subtract,
    "math.multiply": tf.math.multiply,
    "math.truediv": tf.math.truediv,
    "math.divide": tf.math.divide,
    "math.negative": tf.math.negative,
    "math.maximum": tf.math.maximum,
    "math.minimum": tf.math.minimum,
    "math.abs": tf.math.abs,
    "math.square": tf.math.square,
    "math.sqrt": tf.math.sqrt,
    "math.tanh": tf.math.tanh,
    "math.sigmoid": tf.math.sigmoid,
    "nn.tanh": tf.math.tanh,
    "nn.sigmoid": tf.math.sigmoid,
    "nn.relu": tf.nn.relu,
    "nn.relu6": tf.nn.relu6,
    "nn.leaky_relu": tf.nn.leaky_relu,
    "nn.elu": tf.nn.elu,
    "clip_by_value": tf.clip_by_value,
    "concat": tf.concat,
    "reshape": tf.reshape,
    "transpose": tf.transpose,
    "identity": tf.identity,
    "image.resize": tf.image.resize,
    "compat.v1.image.resize": tf.image.resize,
    "cast": tf.cast,
}


class TFOpLambda(keras.layers.Layer):  # type: ignore[misc]
    """Applies one allow-listed TensorFlow function, with the arguments recorded in the model file."""

    def __init__(self, function: str, **kwargs: Any) -> None:
        kwargs.pop("symbol", None)
        super().__init__(**kwargs)
        if function not in ALLOWED_SYMBOLS:
            raise UnsupportedLayer(refusal(function, str(kwargs.get("name", "?"))))
        self.function = function
        self._fn = ALLOWED_SYMBOLS[function]

    def call(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.pop("name", None)
        kwargs.pop("training", None)
        return self._fn(*args, **kwargs)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "function": self.function}


def refusal(function: str, layer: str) -> str:
    """The message for a TF-op layer outside the allow-list."""
    return (
        f"layer {layer!r} applies tf.{function}, which the export tool does not rebuild (it rebuilds "
        f"pure tensor ops only: {', '.join('tf.' + s for s in sorted(ALLOWED_SYMBOLS))}). Replace it with a "
        "Keras layer, or save weights only and pass --architecture"
    )


def tf_op_symbols(layer_configs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(layer name, recorded symbol) of every TFOpLambda layer in a model config."""
    return [
        (str(c["config"].get("name", "?")), str(c["config"].get("function", "?")))
        for c in layer_configs
        if c.get("class_name") in ("TFOpLambda", "SlicingOpLambda")
    ]


def _tensor_ref(name: str, node_index: int, tensor_index: int) -> dict[str, Any]:
    return {
        "class_name": "__keras_tensor__",
        "config": {"shape": [], "dtype": "float32", "keras_history": [name, node_index, tensor_index]},
    }


def _is_ref(value: Any, layer_names: set[str]) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 3
        and isinstance(value[0], str)
        and value[0] in layer_names
        and all(isinstance(v, int) for v in value[1:])
    )


def _refs(value: Any, layer_names: set[str]) -> Any:
    """Tensor references inside recorded call arguments (`x + y` records y as [layer, node, tensor])."""
    if _is_ref(value, layer_names):
        return _tensor_ref(*value)
    if isinstance(value, list):
        return [_refs(v, layer_names) for v in value]
    if isinstance(value, dict):
        return {k: _refs(v, layer_names) for k, v in value.items()}
    return value


def modernize_tf_op_nodes(config: Any) -> None:
    """Rewrite tf.keras 2 TFOpLambda call records (in place) into the form Keras 3 replays.

    tf.keras 2 stores each call as `[inbound_layer, node, tensor, {call kwargs}]`, or a list of such
    entries when the first argument is a list of tensors; Keras 3 expects `{"args", "kwargs"}`.
    """
    if isinstance(config, list):
        for item in config:
            modernize_tf_op_nodes(item)
        return
    if not isinstance(config, dict):
        return
    layers = config.get("config", {}).get("layers") if isinstance(config.get("config"), dict) else None
    if isinstance(layers, list):
        names = {str(layer.get("name", layer.get("config", {}).get("name"))) for layer in layers}
        for layer in layers:
            if layer.get("class_name") in ("TFOpLambda", "SlicingOpLambda"):
                layer["inbound_nodes"] = [_modern_node(n, names) for n in layer.get("inbound_nodes", [])]
    for value in config.values():
        if isinstance(value, (dict, list)):
            modernize_tf_op_nodes(value)


def _modern_node(node: Any, names: set[str]) -> Any:
    if isinstance(node, dict) or not isinstance(node, list) or not node:
        return node
    if isinstance(node[0], str):  # one tensor as the first argument
        first: Any = _tensor_ref(node[0], node[1], node[2])
        kwargs = node[3] if len(node) > 3 else {}
    else:  # a list of tensors as the first argument (tf.concat([a, b], axis=-1))
        first = [_tensor_ref(entry[0], entry[1], entry[2]) for entry in node]
        kwargs = node[-1][3] if len(node[-1]) > 3 else {}
    return {"args": [first], "kwargs": _refs(dict(kwargs), names)}
