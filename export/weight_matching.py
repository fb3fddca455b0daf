"""Check a weights-only file against an architecture the way Keras will match them, before loading.

Keras's own loaders decide which stored array goes into which variable; these checks use the same
rules, so a file Keras loads is never refused and a mismatch names the first layer that differs:

- Keras 3 `.weights.h5`: arrays live at paths such as `layers/sequential/layers/dense_1/vars/0`,
  named by class per container. The expected paths are taken from Keras itself, by saving the
  freshly built architecture to a scratch file and reading its layout back.
- tf.keras 2 weights `.h5` (and a full model's `model_weights` group): top-level layers with
  weights are matched in order; each one's arrays in its `weight_names` order against the layer's
  trainable then non-trainable variables — nested models included, at any depth.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import h5py

from export.errors import ArchitectureMismatch

Shape = tuple[int, ...]


def _natural(path: str) -> list[Any]:
    return [int(p) if p.isdigit() else p for p in re.split(r"[/_]", path)]


def _datasets(group: h5py.Group) -> dict[str, Shape]:
    found: dict[str, Shape] = {}

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset):
            found[name] = tuple(int(d) for d in obj.shape)

    group.visititems(visit)
    return found


def _by_layer(datasets: dict[str, Shape]) -> dict[str, list[Shape]]:
    """Array shapes grouped by the layer path that owns them (`layers/a/layers/b/vars/0` → `a/b`)."""
    layers: dict[str, list[tuple[str, Shape]]] = {}
    for path, shape in datasets.items():
        owner, _, index = path.rpartition("/vars/")
        if not owner:
            continue
        name = "/".join(p for p in owner.split("/") if p != "layers")
        layers.setdefault(name, []).append((index, shape))
    return {
        name: [shape for _, shape in sorted(items, key=lambda item: _natural(item[0]))]
        for name, items in sorted(layers.items(), key=lambda item: _natural(item[0]))
    }


def _fmt(shapes: list[Shape]) -> str:
    return "[" + ", ".join("(" + ", ".join(map(str, s)) + ")" for s in shapes) + "]"


def check_keras3_file(h5: h5py.File, model: Any, prefix: str) -> None:
    """Raise `ArchitectureMismatch` naming the first layer whose arrays differ from the model's."""
    with tempfile.TemporaryDirectory() as scratch:
        reference = Path(scratch) / "expected.weights.h5"
        model.save_weights(reference)
        with h5py.File(reference, "r") as expected_file:
            expected = _by_layer(_datasets(expected_file))
    found = _by_layer(_datasets(h5))
    hint = "Check the architecture and its --option values"
    for layer, shapes in expected.items():
        if not shapes:
            continue
        if layer not in found:
            raise ArchitectureMismatch(
                f"{prefix}: layer {layer!r} expects variable shapes {_fmt(shapes)} but the file has no "
                f"weights for it. {hint}"
            )
        if found[layer] != shapes:
            raise ArchitectureMismatch(
                f"{prefix}: layer {layer!r} expects variable shapes {_fmt(shapes)} but the file has "
                f"{_fmt(found[layer])}. {hint}"
            )
    extra = [name for name, shapes in found.items() if shapes and name not in expected]
    if extra:
        raise ArchitectureMismatch(
            f"{prefix}: the file has weights for {extra[0]!r} {_fmt(found[extra[0]])}, which the "
            f"architecture does not have. {hint}"
        )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def check_legacy_file(group: h5py.Group, model: Any, prefix: str) -> None:
    """The tf.keras 2 rule: layers with weights in order, arrays in `weight_names` order."""
    hint = "Check the architecture and its --option values"
    stored: list[tuple[str, list[tuple[str, Shape]]]] = []
    for raw in group.attrs.get("layer_names", []):
        name = _text(raw)
        names = [_text(n) for n in group[name].attrs.get("weight_names", [])]
        if names:
            stored.append((name, [(n, tuple(int(d) for d in group[name][n].shape)) for n in names]))
    layers = [layer for layer in model.layers if layer.weights]
    for index, (layer, (file_layer, arrays)) in enumerate(zip(layers, stored, strict=False)):
        variables = list(layer.trainable_weights) + list(layer.non_trainable_weights)
        wanted = [tuple(int(d) for d in v.shape) for v in variables]
        got = [shape for _, shape in arrays]
        if wanted == got:
            continue
        where = f"layer #{index + 1} with weights, {layer.name!r} (the file's {file_layer!r})"
        for position, (variable, (array_name, shape)) in enumerate(zip(variables, arrays, strict=False)):
            own = tuple(int(d) for d in variable.shape)
            if own != shape:
                raise ArchitectureMismatch(
                    f"{prefix}: {where}: variable #{position + 1}, {variable.path!r}, has shape "
                    f"{own} but the file's {array_name!r} has {shape}. {hint}"
                )
        raise ArchitectureMismatch(
            f"{prefix}: {where} has {len(wanted)} variables {_fmt(wanted)} but the file holds "
            f"{len(got)} {_fmt(got)}. {hint}"
        )
    if len(layers) != len(stored):
        first = (
            f"the architecture's {layers[len(stored)].name!r}"
            if len(layers) > len(stored)
            else f"the file's {stored[len(layers)][0]!r}"
        )
        raise ArchitectureMismatch(
            f"{prefix}: the architecture has {len(layers)} layers with weights, the file {len(stored)}; "
            f"the first unmatched one is {first}. {hint}"
        )
