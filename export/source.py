"""The model being exported, whatever it was saved as: one float32 input, one float32 output."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import tensorflow as tf

from export.errors import NotAnImageModel, SeveralInputsOrOutputs, SourceError

SourceFormat = Literal["keras", "h5", "savedmodel", "weights", "builtin"]
Shape = tuple[int | None, ...]


@dataclass
class SourceModel:
    """A TensorFlow callable plus its I/O shapes; the exporter needs nothing else from the source."""

    call: Callable[[Any], Any]  # float32 tensor -> float32 tensor, inference mode
    input_shape: Shape
    output_shape: Shape
    format: SourceFormat
    path: Path | None = None
    keras_model: Any = None
    # Objects that must outlive `call` (a loaded SavedModel owns the variables its signature reads).
    keepalive: list[Any] = field(default_factory=list)

    @property
    def is_generator(self) -> bool:
        return len(self.input_shape) == 2

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Run the source model on a numpy batch."""
        try:
            return np.asarray(self.call(tf.constant(x, dtype=tf.float32)), dtype=np.float32)
        except Exception as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            need = "any height and width (fully convolutional)" if not self.is_generator else "any batch size"
            raise NotAnImageModel(
                f"the source model fails on an input of shape {list(x.shape)}: {detail}. "
                f"The service needs a model that accepts {need}"
            ) from exc


def _shape(value: Any) -> Shape:
    return tuple(None if d is None else int(d) for d in value)


def check_io(input_shape: Shape, output_shape: Shape) -> None:
    """Refuse models whose input is neither a latent vector nor an image, or whose output is no image."""
    if len(input_shape) not in (2, 4):
        raise NotAnImageModel(
            f"the model's input has shape {list(input_shape)} (rank {len(input_shape)}): expected a "
            "latent vector (batch, size) for a generator or an image (batch, height, width, channels) "
            "for an upscaler"
        )
    if len(output_shape) == 4:
        channels = output_shape[3]
        if channels not in (1, 3, 4):
            raise NotAnImageModel(
                f"the model's output has shape {list(output_shape)}: its last axis ({channels}) is not an "
                "image channel count (1 grayscale, 3 RGB or 4 RGBA); only channels-last (NHWC) images are "
                "supported"
            )
    elif len(output_shape) != 2:
        raise NotAnImageModel(
            f"the model's output has shape {list(output_shape)} (rank {len(output_shape)}): expected an "
            "image (batch, height, width, channels) or a flat image (batch, height*width*channels)"
        )


def from_keras(model: Any, *, format: SourceFormat = "keras", path: Path | None = None) -> SourceModel:
    """Wrap an in-memory Keras model (called with training=False, so BatchNorm uses moving stats)."""
    try:
        inputs, outputs = list(model.inputs), list(model.outputs)
    except (AttributeError, ValueError) as exc:
        raise SourceError(
            "the Keras model has no defined inputs/outputs (a subclassed or unbuilt model?): build it "
            "functionally, starting from keras.Input(shape), or save weights and use --architecture"
        ) from exc
    if len(inputs) != 1 or len(outputs) != 1:
        raise SeveralInputsOrOutputs(
            f"the model has {len(inputs)} input(s) and {len(outputs)} output(s): a generator or upscaler "
            "must have exactly one of each"
        )
    input_shape, output_shape = _shape(inputs[0].shape), _shape(outputs[0].shape)
    check_io(input_shape, output_shape)

    if len(input_shape) == 4 and input_shape[1:3] != (None, None):
        # An upscaler built for one size (Input((64, 64, 3))) is usually fully convolutional: Keras'
        # input check alone refuses other sizes, and the ONNX graph gets dynamic H/W. Calling the
        # graph directly lets verification run the source on those other sizes too.
        def call(x: Any) -> Any:
            return model.call(x, training=False)
    else:

        def call(x: Any) -> Any:
            return model(x, training=False)

    return SourceModel(call, input_shape, output_shape, format, path=path, keras_model=model)
