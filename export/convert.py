"""TensorFlow → ONNX through `tf2onnx.convert.from_function` (from_keras breaks on Keras 3)."""

from __future__ import annotations

import logging
import re
from typing import Any

import onnx
import tensorflow as tf
import tf2onnx

from export.errors import ExportError, UnsupportedLayer
from export.source import Shape, SourceModel

#: Opset 17: supported by every onnxruntime the service targets (CPU and CUDA EPs), and has
#: everything these models need (ConvTranspose, DepthToSpace, LayerNormalization).
OPSET = 17
GENERATOR_INPUT = "z"
UPSCALER_INPUT = "lr"
OUTPUT_NAME = "image"

_UNSUPPORTED_RE = re.compile(r"Tensorflow op \[(?P<node>[^:\]]+): (?P<op>[^\]]+)\] is not supported")


class _UnsupportedOpLog(logging.Handler):
    """Collects tf2onnx's 'op is not supported' log lines: it logs them instead of raising."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.ops: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        match = _UNSUPPORTED_RE.search(record.getMessage())
        if match:
            self.ops.append((match["op"], match["node"]))


def input_name_for(source: SourceModel) -> str:
    return GENERATOR_INPUT if source.is_generator else UPSCALER_INPUT


def signature_shape(source: SourceModel) -> Shape:
    """Batch always dynamic; height and width dynamic for upscalers (fully convolutional)."""
    if source.is_generator:
        return (None, *source.input_shape[1:])
    return (None, None, None, source.input_shape[3])


def to_onnx(source: SourceModel, shape: Shape | None = None) -> onnx.ModelProto:
    """Convert `source` to an ONNX model with input `z`/`lr`, output `image`, named dynamic axes."""
    shape = signature_shape(source) if shape is None else shape
    name = input_name_for(source)
    spec = tf.TensorSpec(shape, tf.float32, name=name)

    @tf.function  # type: ignore[untyped-decorator]
    def serve(x: Any) -> dict[str, Any]:
        return {OUTPUT_NAME: source.call(x)}

    collector = _UnsupportedOpLog()
    tf2onnx_logger = logging.getLogger("tf2onnx")
    tf2onnx_logger.addHandler(collector)
    try:
        model_proto, _ = tf2onnx.convert.from_function(serve, input_signature=(spec,), opset=OPSET)
    except ExportError:
        raise
    except Exception as exc:
        if collector.ops:
            raise _unsupported(collector.ops) from exc
        raise UnsupportedLayer(
            f"tf2onnx could not convert the model: {type(exc).__name__}: {exc}".strip()
        ) from exc
    finally:
        tf2onnx_logger.removeHandler(collector)
    if collector.ops:
        raise _unsupported(collector.ops)
    _name_dynamic_axes(model_proto, name, source.is_generator)
    return model_proto


def _unsupported(ops: list[tuple[str, str]]) -> UnsupportedLayer:
    listed = ", ".join(sorted({f"{op} (at {node})" for op, node in ops}))
    return UnsupportedLayer(
        f"the model uses TensorFlow op(s) that ONNX opset {OPSET} cannot express: {listed}. Replace the "
        "layer that produces them (e.g. a Lambda or custom layer) with standard Keras layers"
    )


def _name_dynamic_axes(model: onnx.ModelProto, input_name: str, generator: bool) -> None:
    """Give dynamic axes readable names (`batch`, `height`…) instead of tf2onnx's `unk__N`."""
    in_axes = ["batch", "latent"] if generator else ["batch", "height", "width", "channels"]
    out_axes = ["batch", "out_height", "out_width", "channels"]
    for value, names in ((model.graph.input[0], in_axes), (model.graph.output[0], out_axes)):
        for dim, axis_name in zip(value.type.tensor_type.shape.dim, names, strict=False):
            if not dim.HasField("dim_value"):
                dim.dim_param = axis_name


def onnx_shape(value: onnx.ValueInfoProto) -> list[int | None]:
    """A graph input's or output's shape, None for dynamic axes."""
    return [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
