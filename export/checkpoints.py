"""TensorFlow training checkpoints (`tf.train.Checkpoint`): recognised, explained, and loaded into
an architecture.

A checkpoint holds variable values keyed by the path of the object that owned them
(`generator/layer_with_weights-0/kernel` from tf.keras 2, `generator/_operations/1/_kernel` from
Keras 3) and no model. The generator is found among the checkpoint's objects (`generator` first);
its variables, grouped by owning layer in model order, are matched onto the layers with weights of
the architecture the user names, each variable by name and shape.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from export.errors import ArchitectureMismatch, MissingInformation, SourceError

_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
_BOOKKEEPING = ("save_counter", "_CHECKPOINTABLE_OBJECT_GRAPH")

CONVERT_SNIPPET = """\
    import tensorflow as tf
    generator = make_generator_model()          # your notebook's builder
    tf.train.Checkpoint(generator=generator).restore("{prefix}").expect_partial()
    generator.save("generator.keras")           # then: gan-export convert generator.keras ..."""


def find_checkpoint(path: Path) -> Path | None:
    """The checkpoint prefix `path` names (a directory, a prefix, or its .index file), else None."""
    if path.is_dir():
        if (path / "saved_model.pb").exists() or (path / "saved_model.pbtxt").exists():
            return None
        latest = tf.train.latest_checkpoint(str(path)) if (path / "checkpoint").exists() else None
        if latest:
            return Path(latest)
        indexes = sorted(path.glob("*.index"), key=lambda p: _natural(p.name))
        return indexes[-1].with_suffix("") if indexes else None
    if path.name.endswith(".index") and path.exists():
        return path.with_suffix("")
    if not path.exists() and Path(str(path) + ".index").exists():
        return path
    if path.name.startswith(path.name.split(".data-")[0]) and ".data-" in path.name and path.exists():
        return path.with_name(path.name.split(".data-")[0])
    return None


def _natural(text: str) -> list[Any]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text)]


def _variables(prefix: Path) -> dict[str, tuple[int, ...]]:
    try:
        pairs = tf.train.list_variables(str(prefix))
    except Exception as exc:
        from export.loaders import damaged_files

        shards = [Path(str(prefix) + ".index"), *sorted(prefix.parent.glob(prefix.name + ".data-*"))]
        problems = damaged_files(shards)
        detail = "; ".join(problems) if problems else str(exc).strip().splitlines()[0]
        raise SourceError(f"{prefix}: the checkpoint cannot be read: {detail}") from exc
    return {key[: -len(_SUFFIX)]: tuple(shape) for key, shape in pairs if key.endswith(_SUFFIX)}


def _roots(variables: dict[str, tuple[int, ...]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for key in variables:
        root = key.split("/")[0]
        if root not in _BOOKKEEPING:
            counts[root] = counts.get(root, 0) + 1
    return counts


def describe(prefix: Path) -> str:
    """What the checkpoint holds: its objects and how many variables each."""
    roots = _roots(_variables(prefix))
    return ", ".join(f"{name} ({count} variables)" for name, count in sorted(roots.items()))


def load_checkpoint(prefix: Path, given: Path, architecture: str | None, options: dict[str, int]) -> Any:
    """Build `architecture` and fill its variables from the checkpoint's generator."""
    variables = _variables(prefix)
    if architecture is None:
        raise MissingInformation(
            f"{given} is a TensorFlow training checkpoint ({prefix.name}; it holds {describe(prefix)}): "
            "variable values without the model's code, as the TensorFlow DCGAN tutorial saves them. Pass "
            "--architecture module:function with the function that builds your generator (e.g. "
            "--architecture dcgan:make_generator_model), or turn it into a .keras file in your notebook:\n"
            + CONVERT_SNIPPET.format(prefix=prefix)
        )
    from export.loaders import build_architecture

    model = build_architecture(architecture, options)
    roots = _roots(variables)
    ordered = sorted(roots, key=lambda r: (r != "generator", "gen" not in r.lower(), "optim" in r.lower(), r))
    errors: list[str] = []
    for root in ordered:
        try:
            _assign(model, prefix, root, variables)
            return model
        except ArchitectureMismatch as exc:
            errors.append(str(exc))
    raise ArchitectureMismatch(
        f"{given}: no object in the checkpoint fits --architecture {architecture}: "
        + (errors[0] if errors else "the checkpoint holds no variables")
        + ". Check the architecture and its --option values"
    )


def _leaf_layers(model: Any) -> list[Any]:
    leaves = []
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            leaves.extend(_leaf_layers(layer))
        elif layer.weights:
            leaves.append(layer)
    return leaves


def _groups(root: str, variables: dict[str, tuple[int, ...]]) -> list[tuple[str, dict[str, str]]]:
    """(owner path, {attribute name: key}) for the root's variables, owners in model order."""
    owners: dict[str, dict[str, str]] = {}
    for key in variables:
        if key.split("/")[0] != root:
            continue
        owner, _, attribute = key.rpartition("/")
        owners.setdefault(owner, {})[attribute.lstrip("_")] = key
    return sorted(owners.items(), key=lambda item: _natural(item[0]))


def _assign(model: Any, prefix: Path, root: str, variables: dict[str, tuple[int, ...]]) -> None:
    layers = _leaf_layers(model)
    groups = _groups(root, variables)
    if len(groups) != len(layers):
        raise ArchitectureMismatch(
            f"{root!r} has {len(groups)} layers with weights, the architecture {len(layers)}"
        )
    reader = tf.train.load_checkpoint(str(prefix))
    plan: list[tuple[Any, str]] = []
    for layer, (owner, attributes) in zip(layers, groups, strict=True):
        for variable in layer.weights:
            name = variable.name.split("/")[-1].split(":")[0]
            key = attributes.get(name)
            if key is None:
                raise ArchitectureMismatch(
                    f"layer {layer.name!r} needs {name!r} but the checkpoint's {owner!r} holds "
                    f"{sorted(attributes)}"
                )
            shape = tuple(int(d) for d in variable.shape)
            if variables[key] != shape:
                raise ArchitectureMismatch(
                    f"layer {layer.name!r} variable {name!r} has shape {shape} but the checkpoint's "
                    f"{owner}/{name} has {variables[key]}"
                )
            plan.append((variable, key))
    for variable, key in plan:
        variable.assign(np.asarray(reader.get_tensor(key + _SUFFIX)))
