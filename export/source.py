"""The model being exported, whatever it was saved as: one float32 input, one float32 output."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import tensorflow as tf

from export.errors import (
    MissingInformation,
    NotAnImageModel,
    SeveralInputsOrOutputs,
    SourceError,
    UsageError,
)

SourceFormat = Literal["keras", "h5", "savedmodel", "weights", "builtin", "checkpoint"]
Shape = tuple[int | None, ...]
ConditionSource = Literal["index", "onehot", "concat"]
#: Input names that say "this is the class label" in public GAN code.
_LABEL_NAMES = ("label", "labels", "class", "classes", "cond", "condition", "y", "c", "onehot", "one_hot")


@dataclass(frozen=True)
class ConditionSpec:
    """How a conditional source takes its class; the served graph always takes [latent, one-hot]."""

    classes: int
    source: ConditionSource
    source_input: str | None = None
    #: For "concat": whether the one-hot values come after the noise (keras-io) or before it.
    onehot_first: bool = False


@dataclass(frozen=True)
class ConditionRequest:
    """What the user said with --condition: the encoding, and the class count if known."""

    classes: int | None
    source: ConditionSource | None = None  # None: whatever the model's inputs show
    onehot_first: bool = False


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
    condition: ConditionSpec | None = None

    @property
    def is_generator(self) -> bool:
        return len(self.input_shape) == 2

    @property
    def latent_size(self) -> int | None:
        """Noise values per row: the input width less the one-hot class values of a conditional model."""
        if not self.is_generator or self.input_shape[1] is None:
            return None
        return int(self.input_shape[1]) - (self.condition.classes if self.condition else 0)

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


def from_keras(
    model: Any,
    *,
    format: SourceFormat = "keras",
    path: Path | None = None,
    condition: ConditionRequest | None = None,
) -> SourceModel:
    """Wrap an in-memory Keras model (called with training=False, so BatchNorm uses moving stats).

    A two-input conditional generator (noise + integer label or one-hot) is wrapped so that it takes
    one row per image, `[noise, one-hot class]`, like every conditional graph the service runs.
    """
    try:
        inputs, outputs = list(model.inputs), list(model.outputs)
    except (AttributeError, ValueError) as exc:
        raise SourceError(
            "the Keras model has no defined inputs/outputs (a subclassed or unbuilt model?): build it "
            "functionally, starting from keras.Input(shape), or save weights and use --architecture"
        ) from exc
    if len(inputs) == 2 and len(outputs) == 1:
        return _two_input_generator(model, inputs, format, path, condition)
    if len(inputs) != 1 or len(outputs) != 1:
        raise SeveralInputsOrOutputs(
            f"the model has {len(inputs)} input(s) and {len(outputs)} output(s): a generator or upscaler "
            "must have exactly one of each (or, for a conditional generator, a noise and a label input)"
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

    source = SourceModel(call, input_shape, output_shape, format, path=path, keras_model=model)
    if condition is not None:
        return with_concat_condition(source, condition)
    return source


def with_concat_condition(source: SourceModel, condition: ConditionRequest) -> SourceModel:
    """A one-input generator whose input holds noise and a one-hot class (`--condition onehot:K`)."""
    if not source.is_generator:
        raise UsageError("--condition applies to generators; this model takes an image")
    if condition.source not in (None, "concat", "onehot") or condition.classes is None:
        raise UsageError(
            "this generator has one input: say where its one-hot class values are with --condition "
            "onehot:K (the last K input values) or onehot:K:first"
        )
    width = source.input_shape[1]
    if width is None or width <= condition.classes:
        raise UsageError(
            f"--condition onehot:{condition.classes}: the model's input has {width} values, too few to hold "
            f"{condition.classes} one-hot class values plus noise"
        )
    call = source.call
    if condition.onehot_first:
        classes = condition.classes

        def reordered(x: Any) -> Any:
            return call(tf.concat([x[:, -classes:], x[:, :-classes]], axis=1))

        call = reordered
    spec = ConditionSpec(condition.classes, "concat", onehot_first=condition.onehot_first)
    return replace(source, call=call, condition=spec)


@dataclass(frozen=True)
class InputInfo:
    """One input of a multi-input source: its name, shape and dtype."""

    name: str
    shape: Shape
    dtype: Any  # a tf.DType


def _is_label_input(info: InputInfo) -> bool:
    name = info.name.lower()
    return "int" in str(info.dtype) or any(name == n or name.startswith(n + "_") for n in _LABEL_NAMES)


def _two_input_generator(
    model: Any, inputs: list[Any], format: SourceFormat, path: Path | None, request: ConditionRequest | None
) -> SourceModel:
    infos = [
        InputInfo(str(getattr(t, "name", f"input_{i}")).split(":")[0], _shape(t.shape), t.dtype)
        for i, t in enumerate(inputs)
    ]

    def invoke(ordered: list[Any]) -> Any:
        return model(ordered, training=False)

    return conditional_source(
        infos,
        invoke,
        _shape(model.outputs[0].shape),
        format,
        path,
        request,
        embedding_classes=_embedding_classes(model),
        keras_model=model,
    )


def conditional_source(
    infos: list[InputInfo],
    invoke: Callable[[list[Any]], Any],
    output_shape: Shape,
    format: SourceFormat,
    path: Path | None,
    request: ConditionRequest | None,
    *,
    embedding_classes: int | None,
    keras_model: Any = None,
    keepalive: list[Any] | None = None,
) -> SourceModel:
    """A noise + label generator wrapped to take one `[noise, one-hot class]` row per image.

    `invoke` calls the source with its inputs in their own order. The label input is the integer
    one, else the one named like a label, else the shorter of two float vectors (a one-hot beside
    the noise); an integer label's class count comes from its Embedding or from --condition index:K.
    """
    described = " and ".join(f"{i.name} {list(i.shape)}" for i in infos)
    if any(len(i.shape) not in (1, 2) for i in infos):
        raise SeveralInputsOrOutputs(
            f"the model has two inputs ({described}): the service takes two inputs only from a conditional "
            "generator, a noise vector and a class label (an integer or a one-hot vector)"
        )
    label_flags = [_is_label_input(i) for i in infos]
    if label_flags.count(True) == 1:
        label_index = label_flags.index(True)
    else:  # two float vectors: the shorter one is the one-hot label (10 classes next to 100 noise values)
        widths = [i.shape[-1] if len(i.shape) == 2 else 1 for i in infos]
        if None in widths or widths[0] == widths[1]:
            raise SeveralInputsOrOutputs(
                f"the model has two inputs ({described}) and it is not clear which is the class label: name "
                "the label input 'label' (integer or one-hot) when building the model"
            )
        label_index = 0 if (widths[0] or 0) < (widths[1] or 0) else 1
    noise_index = 1 - label_index
    noise, label = infos[noise_index], infos[label_index]
    if len(noise.shape) != 2 or noise.shape[1] is None:
        raise SeveralInputsOrOutputs(
            f"the model has two inputs ({described}): the noise input must be a vector (batch, size)"
        )
    is_index = "int" in str(label.dtype) or len(label.shape) == 1 or label.shape[-1] == 1
    if is_index:
        classes = embedding_classes
        if request is not None and request.classes is not None:
            if classes is not None and classes != request.classes:
                raise UsageError(
                    f"--condition says {request.classes} classes but the label's Embedding has {classes}"
                )
            classes = request.classes
        if classes is None:
            raise MissingInformation(
                f"the label input {label.name!r} takes an integer class, but no Embedding layer tells how "
                "many classes there are: pass --condition index:K (e.g. --condition index:10)"
            )
        source: ConditionSource = "index"
    else:
        classes = int(label.shape[-1] or 0)
        source = "onehot"
    latent = int(noise.shape[1])
    check_io((None, latent + classes), output_shape)
    flat_label = len(label.shape) == 1

    def call(x: Any) -> Any:
        z, onehot = x[:, :latent], x[:, latent:]
        if source == "index":
            value = tf.argmax(onehot, axis=1, output_type=tf.int32)
            value = value if flat_label else value[:, None]
            value = tf.cast(value, label.dtype)
        else:
            value = tf.cast(onehot, label.dtype)
        return invoke([z, value] if noise_index == 0 else [value, z])

    spec = ConditionSpec(classes, source, source_input=label.name)
    return SourceModel(
        call,
        (None, latent + classes),
        output_shape,
        format,
        path=path,
        keras_model=keras_model,
        keepalive=keepalive or [],
        condition=spec,
    )


def _embedding_classes(model: Any) -> int | None:
    """The class count of an integer label: the `input_dim` of the model's Embedding (or `num_tokens`
    of its CategoryEncoding), searched through nested models; None unless exactly one count is found."""
    found: list[int] = []

    def visit(layer: Any) -> None:
        for inner in getattr(layer, "layers", []):
            visit(inner)
        if type(layer).__name__ == "Embedding":
            found.append(int(layer.input_dim))
        elif type(layer).__name__ == "CategoryEncoding":
            found.append(int(layer.num_tokens))

    visit(model)
    return found[0] if len(set(found)) == 1 else None
