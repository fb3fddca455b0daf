"""TensorFlow → ONNX through `tf2onnx.convert.from_function` (from_keras breaks on Keras 3)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
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


@dataclass
class TracedGraph:
    """The source model traced and frozen into a TensorFlow GraphDef: what tf2onnx converts.

    Tracing is cheap next to conversion, so everything that can be read off the graph (value
    ranges) is read here, before the user waits for tf2onnx.
    """

    graph_def: Any
    input_names: list[str]
    output_names: list[str]
    tensors_to_rename: dict[str, str]
    name: str
    input_name: str
    generator: bool


def trace(source: SourceModel, shape: Shape | None = None) -> TracedGraph:
    """Trace `source.call` over a named input signature and freeze its variables into constants."""
    from tf2onnx import tf_loader

    shape = signature_shape(source) if shape is None else shape
    name = input_name_for(source)
    spec = tf.TensorSpec(shape, tf.float32, name=name)

    @tf.function  # type: ignore[untyped-decorator]
    def serve(x: Any) -> dict[str, Any]:
        return {OUTPUT_NAME: source.call(x)}

    try:
        concrete = serve.get_concrete_function(spec)
        input_names = [t.name for t in concrete.inputs if t.dtype != tf.dtypes.resource]
        output_names = [t.name for t in concrete.outputs if t.dtype != tf.dtypes.resource]
        renames = tf2onnx.convert.tensor_names_from_structed(concrete, input_names, output_names)
        with tf.device("/cpu:0"):
            graph_def = tf_loader.from_function(concrete, input_names, output_names)
    except ExportError:
        raise
    except Exception as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsupportedLayer(
            f"TensorFlow could not trace the model: {type(exc).__name__}: {detail}"
        ) from exc
    return TracedGraph(
        graph_def, input_names, output_names, renames, concrete.name, name, source.is_generator
    )


def to_onnx(source: SourceModel | TracedGraph, shape: Shape | None = None) -> onnx.ModelProto:
    """Convert to an ONNX model with input `z`/`lr`, output `image`, named dynamic axes."""
    traced = source if isinstance(source, TracedGraph) else trace(source, shape)
    collector = _UnsupportedOpLog()
    tf2onnx_logger = logging.getLogger("tf2onnx")
    tf2onnx_logger.addHandler(collector)
    try:
        with tf.device("/cpu:0"):
            model_proto, _ = tf2onnx.convert.from_graph_def(
                traced.graph_def,
                name=traced.name,
                input_names=traced.input_names,
                output_names=traced.output_names,
                opset=OPSET,
                tensors_to_rename=traced.tensors_to_rename,
            )
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
    _name_dynamic_axes(model_proto, traced.input_name, traced.generator)
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
