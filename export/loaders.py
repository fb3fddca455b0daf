"""Load whatever the user saved into a `SourceModel`.

Formats: `.keras`; legacy full-model `.h5` from tf.keras 2.x; a TensorFlow SavedModel directory
(through its `serving_default` signature, without Keras); weights only (`.weights.h5` or a legacy
weights `.h5`) together with an architecture, built-in or the user's `module:function`.
"""

from __future__ import annotations

import importlib
import json
import re
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import h5py
import keras
import numpy as np
import tensorflow as tf

from export.architectures import ARCHITECTURES, PixelShuffle, build
from export.errors import (
    ArchitectureMismatch,
    MissingInformation,
    SeveralInputsOrOutputs,
    SourceError,
    SourceNotFound,
    UnknownFormat,
    UnsafeLayer,
    UnsupportedLayer,
    UsageError,
)
from export.source import SourceModel, check_io, from_keras

FORMATS_HELP = (
    "accepted: a .keras file, a full-model .h5 file, a TensorFlow SavedModel directory "
    "(with saved_model.pb), or a weights file (.weights.h5 / .h5) together with --architecture"
)
_UNKNOWN_CLASS_RE = re.compile(r"Could not locate (?:class|function) '([^']+)'")


class LegacyConv2DTranspose(keras.layers.Conv2DTranspose):  # type: ignore[misc]
    """tf.keras 2.x wrote `groups` into Conv2DTranspose configs; Keras 3 rejects the argument."""

    def __init__(self, *args: Any, groups: int = 1, **kwargs: Any) -> None:
        if groups != 1:
            raise UnsupportedLayer(f"Conv2DTranspose with groups={groups} is not supported")
        super().__init__(*args, **kwargs)


class LegacyLambda(keras.layers.Lambda):  # type: ignore[misc]
    """A tf.keras 2.x Lambda (loaded only with --unsafe): its code sees `tf`, and its shape is traced."""

    #: What notebooks' lambdas refer to; Keras 3 would run them with none of these names defined.
    CODE_GLOBALS: ClassVar[dict[str, Any]] = {"tf": tf, "keras": keras, "np": np}

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None, safe_mode: Any = None) -> Any:
        config = dict(config)
        for key in ("function", "output_shape"):
            config[key] = cls._load_code(config.get(key), config.get("name"))
        if isinstance(config.get("output_shape"), list):
            config["output_shape"] = tuple(config["output_shape"])
        if config.get("arguments"):
            config["arguments"] = keras.saving.deserialize_keras_object(
                config["arguments"], custom_objects=custom_objects
            )
        return cls(**config)

    @classmethod
    def _load_code(cls, value: Any, layer: Any) -> Any:
        if isinstance(value, dict) and value.get("class_name") == "__lambda__":
            value = (value["config"]["code"], value["config"]["defaults"], value["config"]["closure"])
        elif isinstance(value, list) and len(value) == 3 and isinstance(value[0], str):
            value = tuple(value)  # tf.keras 2.x: [base64 code, defaults, closure]
        elif not isinstance(value, tuple):
            return value
        from keras.src.utils import python_utils

        try:
            return python_utils.func_load(value, globs=dict(cls.CODE_GLOBALS))
        except (ValueError, TypeError, EOFError) as exc:
            raise UnsupportedLayer(
                f"Lambda layer {layer!r}: its saved Python code cannot be loaded by Python "
                f"{sys.version_info.major}.{sys.version_info.minor} ({exc}); rebuild the model without the "
                "Lambda, or save weights only and pass --architecture"
            ) from exc

    def compute_output_shape(self, input_shape: Any) -> Any:
        try:
            return super().compute_output_shape(input_shape)
        except NotImplementedError:
            spec = tf.TensorSpec(tuple(input_shape), tf.float32)
            traced = tf.function(self.call).get_concrete_function(spec)
            return tuple(traced.structured_outputs.shape)


def load_source(
    path: Path,
    *,
    architecture: str | None = None,
    architecture_options: dict[str, int] | None = None,
    unsafe: bool = False,
) -> SourceModel:
    """Load `path` (.keras, legacy .h5, SavedModel dir, weights + architecture) as a `SourceModel`."""
    if not path.exists():
        raise SourceNotFound(f"{path}: no such file or directory")
    if path.is_dir():
        if (path / "saved_model.pb").exists() or (path / "saved_model.pbtxt").exists():
            return load_savedmodel(path)
        raise UnknownFormat(f"{path}: a directory without saved_model.pb is not a SavedModel; {FORMATS_HELP}")
    if zipfile.is_zipfile(path):
        if path.name.endswith(".keras") or _zip_has(path, "config.json"):
            return from_keras(_load_keras_file(path, unsafe), format="keras", path=path)
        raise UnknownFormat(f"{path}: a zip file that is not a .keras model; {FORMATS_HELP}")
    if h5py.is_hdf5(path):
        with h5py.File(path, "r") as h5:
            full_model = "model_config" in h5.attrs
        if full_model:
            return from_keras(_load_legacy_h5(path, unsafe), format="h5", path=path)
        return load_weights_file(path, architecture, architecture_options or {})
    raise UnknownFormat(f"{path}: unknown model format; {FORMATS_HELP}")


def _zip_has(path: Path, member: str) -> bool:
    with zipfile.ZipFile(path) as archive:
        return member in archive.namelist()


def _layer_configs(config: Any) -> Iterator[dict[str, Any]]:
    """Every layer config in a (possibly nested) model config."""
    if isinstance(config, dict):
        if "class_name" in config and isinstance(config.get("config"), dict):
            yield config
        for value in config.values():
            yield from _layer_configs(value)
    elif isinstance(config, list):
        for value in config:
            yield from _layer_configs(value)


def _refuse_lambdas(config: Any, path: Path, unsafe: bool) -> None:
    names = [c["config"].get("name", "?") for c in _layer_configs(config) if c["class_name"] == "Lambda"]
    if names and not unsafe:
        listed = ", ".join(repr(n) for n in names)
        raise UnsafeLayer(
            f"{path}: the model holds Lambda layer(s) {listed}, which carry Python code that runs when "
            "the model is loaded. If you trust the file, pass --unsafe; better, replace the Lambda "
            "with a real layer (e.g. export.architectures.PixelShuffle for tf.nn.depth_to_space)"
        )


def _rephrase_load_error(path: Path, exc: Exception) -> SourceError:
    match = _UNKNOWN_CLASS_RE.search(str(exc))
    if match:
        return UnsupportedLayer(
            f"{path}: the model uses layer {match[1]!r}, which is not a Keras layer known here. Register it "
            "with @keras.saving.register_keras_serializable, or save weights only and pass --architecture "
            "module:function with a builder that creates it"
        )
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return UnsupportedLayer(f"{path}: Keras could not load the model: {first_line}")


def _load_keras_file(path: Path, unsafe: bool) -> Any:
    with zipfile.ZipFile(path) as archive:
        try:
            config = json.loads(archive.read("config.json"))
        except (KeyError, ValueError) as exc:
            raise UnknownFormat(f"{path}: not a valid .keras file ({exc})") from exc
    _refuse_lambdas(config, path, unsafe)
    try:
        return keras.saving.load_model(
            path, compile=False, safe_mode=not unsafe, custom_objects={"PixelShuffle": PixelShuffle}
        )
    except SourceError:
        raise
    except Exception as exc:
        raise _rephrase_load_error(path, exc) from exc


def _load_legacy_h5(path: Path, unsafe: bool) -> Any:
    with h5py.File(path, "r") as h5:
        raw = h5.attrs["model_config"]
    config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    _refuse_lambdas(config, path, unsafe)
    custom_objects: dict[str, Any] = {"Conv2DTranspose": LegacyConv2DTranspose, "PixelShuffle": PixelShuffle}
    if unsafe:
        custom_objects["Lambda"] = LegacyLambda
    try:
        return keras.saving.load_model(
            path, compile=False, safe_mode=not unsafe, custom_objects=custom_objects
        )
    except SourceError:
        raise
    except Exception as exc:
        raise _rephrase_load_error(path, exc) from exc


def load_savedmodel(path: Path) -> SourceModel:
    """A SavedModel through its `serving_default` signature: no Keras involved."""
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:
        raise UnknownFormat(f"{path}: TensorFlow cannot load this SavedModel: {exc}") from exc
    signatures = dict(loaded.signatures)
    if "serving_default" not in signatures:
        found = ", ".join(sorted(signatures)) or "none"
        raise UnsupportedLayer(
            f"{path}: the SavedModel has no 'serving_default' signature (found: {found}). Save it with "
            "tf.saved_model.save(obj, dir, signatures=obj.__call__.get_concrete_function(spec))"
        )
    signature = signatures["serving_default"]
    inputs = signature.structured_input_signature[1]
    outputs = signature.structured_outputs
    if len(inputs) != 1 or len(outputs) != 1:
        raise SeveralInputsOrOutputs(
            f"{path}: the serving_default signature has {len(inputs)} input(s) ({', '.join(inputs)}) and "
            f"{len(outputs)} output(s) ({', '.join(outputs)}): a generator or upscaler must have one of each"
        )
    (in_key, in_spec), (out_key, out_spec) = next(iter(inputs.items())), next(iter(outputs.items()))
    if in_spec.dtype != tf.float32:
        raise UnsupportedLayer(f"{path}: the input {in_key!r} is {in_spec.dtype.name}; float32 is required")
    input_shape = tuple(in_spec.shape.as_list())
    output_shape = tuple(out_spec.shape.as_list())
    check_io(input_shape, output_shape)
    variable_axes = 3 if len(input_shape) == 4 else 1  # batch, plus height and width for upscalers
    fixed = [
        axis
        for axis, d in zip(
            ("batch", "height", "width")[:variable_axes], input_shape[:variable_axes], strict=True
        )
        if d is not None
    ]
    if fixed:
        dynamic = ["None"] * variable_axes + [str(d) for d in input_shape[variable_axes:]]
        raise UnsupportedLayer(
            f"{path}: the serving_default signature fixes the input's {', '.join(fixed)} "
            f"(shape {list(input_shape)}); the service needs them dynamic. Re-save with "
            f"tf.TensorSpec(({', '.join(dynamic)}), tf.float32) in the signature"
        )

    def call(x: Any) -> Any:
        return signature(**{in_key: x})[out_key]

    return SourceModel(
        call, input_shape, output_shape, "savedmodel", path=path, keepalive=[loaded, signature]
    )


def build_architecture(architecture: str, options: dict[str, int]) -> Any:
    """A built-in architecture by name, or the user's `module:function` builder called with `options`."""
    if architecture in ARCHITECTURES:
        try:
            return build(architecture, **options)
        except TypeError as exc:
            raise UsageError(f"--option: {exc}") from exc
    if ":" not in architecture:
        known = ", ".join(ARCHITECTURES)
        raise UsageError(
            f"unknown architecture {architecture!r}: use a built-in name ({known}) or module:function "
            "for your own builder"
        )
    module_name, _, function_name = architecture.partition(":")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # `module:function` is usually a file next to the user
    try:
        builder = getattr(importlib.import_module(module_name), function_name)
    except ImportError as exc:
        raise UsageError(
            f"--architecture {architecture}: cannot import module {module_name!r}: {exc}"
        ) from exc
    except AttributeError:
        raise UsageError(f"--architecture {architecture}: {module_name} has no {function_name!r}") from None
    try:
        model = builder(**options)
    except TypeError as exc:
        raise UsageError(f"--architecture {architecture}: calling it with {options} failed: {exc}") from exc
    if not isinstance(model, keras.Model):
        raise UsageError(f"--architecture {architecture}: returned {type(model).__name__}, not a keras.Model")
    return model


def load_weights_file(path: Path, architecture: str | None, options: dict[str, int]) -> SourceModel:
    """Weights only: build the architecture, check every variable's shape, then load."""
    if architecture is None:
        raise MissingInformation(
            f"{path} holds weights only: pass --architecture NAME (built-ins: {', '.join(ARCHITECTURES)}) "
            "or --architecture module:function for your own builder"
        )
    model = build_architecture(architecture, options)
    with h5py.File(path, "r") as h5:
        expected = _model_weight_shapes(model)
        if "layers" in h5 and "layer_names" not in h5.attrs:
            found, by_name = _keras3_weight_shapes(h5), True
        elif "layer_names" in h5.attrs:
            found, by_name = _legacy_weight_shapes(h5), False
        else:
            raise UnknownFormat(f"{path}: an HDF5 file that holds neither a model nor Keras weights")
    _compare_weights(path, architecture, expected, found, by_name)
    try:
        model.load_weights(path)
    except Exception as exc:
        raise ArchitectureMismatch(
            f"{path}: the weights do not load into --architecture {architecture}: {exc}"
        ) from exc
    return from_keras(model, format="weights", path=path)


LayerShapes = list[tuple[str, list[tuple[int, ...]]]]


def _snake_case(name: str) -> str:
    """Keras 3's `naming.to_snake_case`, which names layers inside a .weights.h5 file."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _model_weight_shapes(model: Any) -> list[tuple[str, str, list[tuple[int, ...]]]]:
    """(layer name, name inside a .weights.h5 file, variable shapes) of each layer with weights."""
    used: dict[str, int] = {}
    shapes = []
    for layer in model.layers:
        # Keras 3 names layers in the file by class, numbered per model (saving_lib's scheme).
        base = _snake_case(type(layer).__name__)
        if base in used:
            used[base] += 1
            file_name = f"{base}_{used[base]}"
        else:
            used[base] = 0
            file_name = base
        if layer.weights:
            shapes.append((layer.name, file_name, [tuple(int(d) for d in w.shape) for w in layer.weights]))
    return shapes


def _keras3_weight_shapes(h5: h5py.File) -> LayerShapes:
    shapes: LayerShapes = []
    for name, group in h5["layers"].items():
        datasets = _datasets(group)
        if datasets:
            ordered = sorted(datasets, key=lambda d: [int(p) if p.isdigit() else p for p in d[0].split("/")])
            shapes.append((name, [s for _, s in ordered]))
    return shapes


def _datasets(group: h5py.Group) -> list[tuple[str, tuple[int, ...]]]:
    found: list[tuple[str, tuple[int, ...]]] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset):
            found.append((name, tuple(obj.shape)))

    group.visititems(visit)
    return found


def _legacy_weight_shapes(h5: h5py.File) -> LayerShapes:
    shapes: LayerShapes = []
    for raw in h5.attrs["layer_names"]:
        name = raw.decode() if isinstance(raw, bytes) else str(raw)
        names = [
            n.decode() if isinstance(n, bytes) else str(n) for n in h5[name].attrs.get("weight_names", [])
        ]
        if names:
            shapes.append((name, [tuple(h5[name][n].shape) for n in names]))
    return shapes


def _compare_weights(
    path: Path,
    architecture: str,
    expected: list[tuple[str, str, list[tuple[int, ...]]]],
    found: LayerShapes,
    by_name: bool,
) -> None:
    """Raise naming the first layer whose variables differ, with expected vs found shapes.

    A Keras 3 .weights.h5 file is matched by its per-class layer names, a legacy .h5 by the order of
    layers with weights, exactly as `load_weights` will match them.
    """
    prefix = f"{path} does not fit --architecture {architecture}"
    if by_name:
        in_file = dict(found)
        for layer, file_name, shapes in expected:
            if file_name not in in_file:
                raise ArchitectureMismatch(
                    f"{prefix}: layer {layer!r} expects variable shapes {_fmt(shapes)} but the file has no "
                    f"weights for {file_name!r}. Check the architecture and its --option values"
                )
            if in_file[file_name] != shapes:
                raise ArchitectureMismatch(
                    f"{prefix}: layer {layer!r} expects variable shapes {_fmt(shapes)} but the file has "
                    f"{_fmt(in_file[file_name])}. Check the architecture and its --option values"
                )
        extra = sorted(set(in_file) - {file_name for _, file_name, _ in expected})
        if extra:
            raise ArchitectureMismatch(
                f"{prefix}: the file has weights for {extra[0]!r} {_fmt(in_file[extra[0]])}, which the "
                "architecture does not have. Check the architecture and its --option values"
            )
        return
    for index, ((layer, _, shapes), (found_name, found_shapes)) in enumerate(
        zip(expected, found, strict=False)
    ):
        if shapes != found_shapes:
            raise ArchitectureMismatch(
                f"{prefix}: layer #{index + 1} with weights, {layer!r}, expects variable shapes "
                f"{_fmt(shapes)} but the file's layer #{index + 1}, {found_name!r}, has "
                f"{_fmt(found_shapes)}. Check the architecture and its --option values"
            )
    if len(expected) != len(found):
        if len(expected) > len(found):
            first = f"the architecture's {expected[len(found)][0]!r}"
        else:
            first = f"the file's {found[len(expected)][0]!r}"
        raise ArchitectureMismatch(
            f"{prefix}: the architecture has {len(expected)} layers with weights, the file {len(found)}; "
            f"the first unmatched one is {first}"
        )


def _fmt(shapes: list[tuple[int, ...]]) -> str:
    return "[" + ", ".join("(" + ", ".join(map(str, s)) + ")" for s in shapes) + "]"
