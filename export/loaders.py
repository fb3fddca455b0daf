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

from export import checkpoints, weight_matching
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
from export.source import (
    ConditionRequest,
    InputInfo,
    SourceModel,
    check_io,
    conditional_source,
    from_keras,
    with_concat_condition,
)
from export.tf_ops import ALLOWED_SYMBOLS, TFOpLambda, modernize_tf_op_nodes, refusal, tf_op_symbols

FORMATS_HELP = (
    "accepted: a .keras file, a full-model .h5 file, a TensorFlow SavedModel directory "
    "(with saved_model.pb), a weights file (.weights.h5 / .h5) or a tf.train.Checkpoint together with "
    "--architecture"
)
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")
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
    condition: ConditionRequest | None = None,
) -> SourceModel:
    """Load `path` (.keras, legacy .h5, SavedModel dir, checkpoint, weights + architecture)."""
    checkpoint = checkpoints.find_checkpoint(path)
    if checkpoint is not None:
        model = checkpoints.load_checkpoint(checkpoint, path, architecture, architecture_options or {})
        return from_keras(model, format="checkpoint", path=path, condition=condition)
    if not path.exists():
        raise SourceNotFound(f"{path}: no such file or directory")
    if path.is_dir():
        if (path / "saved_model.pb").exists() or (path / "saved_model.pbtxt").exists():
            source = load_savedmodel(path, condition)
            return with_concat_condition(source, condition) if condition and not source.condition else source
        raise UnknownFormat(
            f"{path}: a directory without saved_model.pb or a TensorFlow checkpoint; {FORMATS_HELP}"
        )
    if zipfile.is_zipfile(path):
        if path.name.endswith(".keras") or _zip_has(path, "config.json"):
            model = _load_keras_file(path, unsafe)
            return from_keras(model, format="keras", path=path, condition=condition)
        raise UnknownFormat(f"{path}: a zip file that is not a .keras model; {FORMATS_HELP}")
    if h5py.is_hdf5(path):
        with h5py.File(path, "r") as h5:
            full_model = "model_config" in h5.attrs
        if full_model:
            return from_keras(_load_legacy_h5(path, unsafe), format="h5", path=path, condition=condition)
        model = load_weights_into(path, architecture, architecture_options or {})
        return from_keras(model, format="weights", path=path, condition=condition)
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


_MODEL_CLASSES = ("Sequential", "Functional", "Model")


def _node_refs(value: Any) -> Iterator[list[Any]]:
    """Every `[layer name, node index, tensor index, ...]` reference in a legacy functional config."""
    if isinstance(value, list):
        if len(value) >= 3 and isinstance(value[0], str) and isinstance(value[1], int):
            yield value
            return
        for item in value:
            yield from _node_refs(item)
    elif isinstance(value, dict):
        if isinstance(value.get("keras_history"), list):
            yield value["keras_history"]
        for item in value.values():
            yield from _node_refs(item)


def renumber_nested_model_nodes(config: Any) -> None:
    """Shift references to nested models' nodes (in place) to Keras 3's numbering.

    tf.keras 2 counted a nested `Sequential([Dense(..., input_dim=8), ...])`'s own build as node 0,
    so the outer model calls it as node 1; Keras 3 gives such a model only the nodes of its calls.
    """
    if not isinstance(config, dict):
        return
    inner = config.get("config")
    layers = inner.get("layers") if isinstance(inner, dict) else None
    if not isinstance(layers, list):
        return
    refs = [ref for layer in layers for ref in _node_refs(layer.get("inbound_nodes", []))]
    assert isinstance(inner, dict)
    refs += list(_node_refs([inner.get("input_layers", []), inner.get("output_layers", [])]))
    for layer in layers:
        if layer.get("class_name") not in _MODEL_CLASSES:
            continue
        renumber_nested_model_nodes(layer)
        name = layer.get("name", layer.get("config", {}).get("name"))
        mine = [ref for ref in refs if ref[0] == name]
        calls = len(layer.get("inbound_nodes", []))
        offset = max((ref[1] for ref in mine), default=-1) + 1 - calls
        if calls and offset > 0:
            for ref in mine:
                ref[1] -= offset


def _refuse_unknown_tf_ops(config: Any, path: Path) -> None:
    for layer, symbol in tf_op_symbols(list(_layer_configs(config))):
        if symbol not in ALLOWED_SYMBOLS:
            raise UnsupportedLayer(f"{path}: {refusal(symbol, layer)}")


_LAMBDA_ADVICE = (
    "A Lambda must be rebuildable from the file: give it output_shape=... when you build the model, "
    "or better replace it with a built-in layer (export.architectures.PixelShuffle for "
    "tf.nn.depth_to_space, keras.layers.Rescaling for x/255 or x*127.5+127.5), then save again"
)


def _rephrase_load_error(path: Path, exc: Exception, config: Any = None) -> SourceError:
    match = _UNKNOWN_CLASS_RE.search(str(exc))
    if match:
        return UnsupportedLayer(
            f"{path}: the model uses layer {match[1]!r}, which is not a Keras layer known here. Register it "
            "with @keras.saving.register_keras_serializable, or save weights only and pass --architecture "
            "module:function with a builder that creates it"
        )
    plain = _ANSI_RE.sub("", str(exc))  # Keras puts terminal bold codes around its advice
    text = " ".join(line.strip() for line in plain.strip().splitlines() if line.strip())
    text = text or type(exc).__name__
    has_lambda = config is not None and any(c["class_name"] == "Lambda" for c in _layer_configs(config))
    if has_lambda or "Lambda" in text:
        return UnsupportedLayer(f"{path}: Keras could not load the model: {text}. {_LAMBDA_ADVICE}")
    return UnsupportedLayer(f"{path}: Keras could not load the model: {text}")


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
        raise _rephrase_load_error(path, exc, config) from exc


def _load_legacy_h5(path: Path, unsafe: bool) -> Any:
    """A tf.keras 2.x full-model .h5: its config (TF-op layers modernised), then its weights."""
    from keras.src.legacy.saving import legacy_h5_format, saving_utils

    with h5py.File(path, "r") as h5:
        raw = h5.attrs["model_config"]
        config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        _refuse_lambdas(config, path, unsafe)
        _refuse_unknown_tf_ops(config, path)
        modernize_tf_op_nodes(config)
        renumber_nested_model_nodes(config)
        custom_objects: dict[str, Any] = {
            "Conv2DTranspose": LegacyConv2DTranspose,
            "PixelShuffle": PixelShuffle,
            "TFOpLambda": TFOpLambda,
        }
        if unsafe:
            custom_objects["Lambda"] = LegacyLambda
        try:
            with keras.saving.custom_object_scope(custom_objects):
                model = saving_utils.model_from_config(config, custom_objects=custom_objects)
            weights = h5.get("model_weights", h5)
            legacy_h5_format.load_weights_from_hdf5_group(weights, model)
        except SourceError:
            raise
        except Exception as exc:
            raise _rephrase_load_error(path, exc, config) from exc
    return model


def load_savedmodel(path: Path, condition: ConditionRequest | None = None) -> SourceModel:
    """A SavedModel through its `serving_default` signature: no Keras involved."""
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:
        raise _savedmodel_error(path, exc) from exc
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
    if len(inputs) == 2 and len(outputs) == 1:
        return _conditional_savedmodel(path, loaded, signature, condition)
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


def _conditional_savedmodel(
    path: Path, loaded: Any, signature: Any, condition: ConditionRequest | None
) -> SourceModel:
    """A two-input (noise + label) serving signature, wrapped like a two-input Keras generator."""
    specs = list(signature.structured_input_signature[1].items())
    out_key, out_spec = next(iter(signature.structured_outputs.items()))
    infos = [InputInfo(key, tuple(spec.shape.as_list()), spec.dtype) for key, spec in specs]
    embeddings = {
        int(v.shape[0]) for v in loaded.variables if "embedding" in v.name.lower() and v.shape.rank == 2
    }

    def invoke(ordered: list[Any]) -> Any:
        return signature(**{key: value for (key, _), value in zip(specs, ordered, strict=True)})[out_key]

    return conditional_source(
        infos,
        invoke,
        tuple(out_spec.shape.as_list()),
        "savedmodel",
        path,
        condition,
        embedding_classes=next(iter(embeddings)) if len(embeddings) == 1 else None,
        keepalive=[loaded, signature],
    )


_LFS_POINTER = b"version https://git-lfs"


def damaged_files(files: list[Path]) -> list[str]:
    """Files that are empty, Git LFS / git-annex pointers instead of data, or cut short."""
    found = []
    for file in files:
        if not file.is_file():
            continue
        with file.open("rb") as handle:
            head = handle.read(64)
        size = file.stat().st_size
        if size == 0:
            found.append(f"{file} is empty")
        elif head.startswith(_LFS_POINTER):
            found.append(f"{file} is a Git LFS pointer ({size} bytes), not the data: run `git lfs pull`")
        elif head.startswith(b"/annex/") or b".git/annex/" in head:
            found.append(f"{file} is a git-annex pointer, not the data: run `git annex get`")
    return found


def truncated_variables(prefix: Path) -> list[str]:
    """Variables a checkpoint's index lists but its data files cannot deliver, with their shard."""
    problems: list[str] = []
    try:
        reader = tf.train.load_checkpoint(str(prefix))
    except Exception as exc:
        return [f"{prefix}.index cannot be read ({_first_line(exc)})"]
    for name in sorted(reader.get_variable_to_shape_map()):
        try:
            reader.get_tensor(name)
        except Exception as exc:
            shards = sorted(prefix.parent.glob(prefix.name + ".data-*"))
            sizes = ", ".join(f"{s} ({s.stat().st_size} bytes)" for s in shards)
            problems.append(
                f"variable {name!r} cannot be read ({_first_line(exc)}): the data file(s) {sizes} are "
                "truncated or damaged (an interrupted copy or download?)"
            )
            break
    return problems


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _savedmodel_error(path: Path, exc: Exception) -> SourceError:
    variables = path / "variables"
    files = [path / "saved_model.pb", *sorted(variables.glob("*"))] if variables.is_dir() else []
    problems = damaged_files(files)
    if not problems and (variables / "variables.index").exists():
        problems = truncated_variables(variables / "variables")
    if problems:
        return SourceError(
            f"{path}: the SavedModel is incomplete: {'; '.join(problems)}. Copy the whole directory again"
        )
    return UnknownFormat(f"{path}: TensorFlow cannot load this SavedModel: {_first_line(exc)}")


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


def load_weights_into(path: Path, architecture: str | None, options: dict[str, int]) -> Any:
    """Weights only: build the architecture, match every variable as Keras will, then load."""
    if architecture is None:
        raise MissingInformation(
            f"{path} holds weights only: pass --architecture NAME (built-ins: {', '.join(ARCHITECTURES)}) "
            "or --architecture module:function for your own builder"
        )
    model = build_architecture(architecture, options)
    prefix = f"{path} does not fit --architecture {architecture}"
    with h5py.File(path, "r") as h5:
        if "layers" in h5 and "layer_names" not in h5.attrs:
            weight_matching.check_keras3_file(h5, model, prefix)
        elif "layer_names" in h5.attrs or "model_weights" in h5:
            group = h5.get("model_weights", h5)
            weight_matching.check_legacy_file(group, model, prefix)
        else:
            raise UnknownFormat(f"{path}: an HDF5 file that holds neither a model nor Keras weights")
    try:
        model.load_weights(path)
    except Exception as exc:
        raise ArchitectureMismatch(f"{prefix}: {_first_line(exc)}") from exc
    return model
