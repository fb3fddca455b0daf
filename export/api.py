"""The export API: a Keras model or a saved model file → a verified model-repository entry.

`export_keras_model` and `export_file` write `<repo>/<name>/model.onnx` + `model.json`
(+ `preview.png`, + `model.fp16.onnx` with `fp16=True`) and return the `ModelCard`. They raise
`export.errors.ExportError` subclasses whose messages are meant for the user.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import importlib.metadata
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict, Unpack

import numpy as np
import onnx
from onnxconverter_common import float16

from export import graph_passes
from export.catalog import ARCHITECTURES, Architecture
from export.conditional_hint import latent_hint
from export.convert import OPSET, TracedGraph, to_onnx, trace
from export.errors import ExportError, NotAnImageModel, UsageError, VerificationFailed
from export.image_spec import ImageShape, ImageSpec, Range, infer_image_spec
from export.progress import reporter
from export.source import ConditionRequest, SourceModel, from_keras, with_concat_condition
from export.verify import (
    SEED,
    Comparison,
    OnnxRunner,
    compare_graphs,
    compare_source,
    probe_inputs,
    write_preview,
)
from service.card import (
    CARD_FILENAME,
    FP16_MODEL_FILENAME,
    MODEL_FILENAME,
    PREVIEW_FILENAME,
    Condition,
    Fp16Variant,
    ModelCard,
    Parity,
    Source,
    ValueRange,
    card_to_metadata,
    content_version,
    is_valid_model_name,
    write_card,
)

MIN_FP16_PSNR_DB = 40.0
#: Max abs error allowed between source and ONNX, as a fraction of the output range (high − low).
#: Real models reach 1e-5 ([0, 255] heads) to 2.5e-5 (16-block SRGAN, tanh); one perturbed weight
#: in a small model moves the output by 1e-3 or more (tests/export/test_tolerance.py).
DEFAULT_TOLERANCE = 1e-4
_TOOLS = ("gan-serve", "keras", "tf2onnx", "onnx", "onnxruntime", "onnxconverter-common")

GraphPass = Callable[[onnx.ModelProto], int]


class ExportOptions(TypedDict, total=False):
    """Everything an export can be told beyond the source, the repository and the entry name."""

    architecture: str | None
    architecture_options: dict[str, int]
    unsafe: bool
    description: str
    demo_weights: bool
    fp16: bool
    verify: bool
    tolerance: float
    preview: bool
    image_shape: ImageShape | None
    output_range: Range | None
    input_range: Range | None
    condition: ConditionRequest | None
    class_names: list[str] | None
    source_path: Path | None
    version: str | None


@dataclass(frozen=True)
class _Options:
    architecture: str | None = None
    architecture_options: dict[str, int] = field(default_factory=dict)
    unsafe: bool = False
    description: str = ""
    demo_weights: bool = False
    fp16: bool = False
    verify: bool = True
    tolerance: float = DEFAULT_TOLERANCE
    preview: bool = True
    image_shape: ImageShape | None = None
    output_range: Range | None = None
    input_range: Range | None = None
    condition: ConditionRequest | None = None
    class_names: list[str] | None = None
    source_path: Path | None = None
    #: The model's version on its card; None: `content_version` of the ONNX graph.
    version: str | None = None

    def __post_init__(self) -> None:
        if self.version is not None and not is_valid_model_name(self.version):
            raise UsageError(
                f"invalid version {self.version!r}: use 1-64 letters, digits, '.', '_' or '-', starting with "
                "a letter or digit (it becomes a URL path part)"
            )


def export_keras_model(model: Any, repo: Path, name: str, **options: Unpack[ExportOptions]) -> ModelCard:
    """Export an in-memory Keras model to `<repo>/<name>/`; returns the card written."""
    opts = _Options(**options)
    check_name(name)
    fmt: Any = (
        _format_of(opts.source_path)
        if opts.source_path
        else ("builtin" if opts.architecture in ARCHITECTURES else "keras")
    )
    source = from_keras(model, format=fmt, path=opts.source_path, condition=opts.condition)
    return _export(source, Path(repo), name, opts)


def export_file(source: Path, repo: Path, name: str, **options: Unpack[ExportOptions]) -> ModelCard:
    """Export a saved model (.keras, .h5, SavedModel dir, checkpoint, or weights + `architecture`)."""
    from export.loaders import load_source  # keeps `import export.api` light until a file is loaded

    opts = _Options(**options)
    check_name(name)
    with reporter().step(f"Loading {source}"):
        loaded = load_source(
            Path(source),
            architecture=opts.architecture,
            architecture_options=opts.architecture_options,
            unsafe=opts.unsafe,
            condition=opts.condition,
        )
    return _export(loaded, Path(repo), name, opts)


def export_source(source: SourceModel, repo: Path, name: str, **options: Unpack[ExportOptions]) -> ModelCard:
    """Convert, rewrite, verify and write one repository entry from any loaded source model."""
    opts = _Options(**options)
    check_name(name)
    if opts.condition is not None and source.condition is None:
        source = with_concat_condition(source, opts.condition)
    return _export(source, Path(repo), name, opts)


def check_name(name: str) -> None:
    if not is_valid_model_name(name):
        raise UsageError(
            f"invalid entry name {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit (it becomes a directory and a URL path part)"
        )


def _format_of(path: Path) -> str:
    if path.is_dir():
        return "savedmodel"
    if path.name.endswith(".weights.h5"):
        return "weights"
    return "h5" if path.suffix == ".h5" else "keras"


def _export(source: SourceModel, repo: Path, name: str, opts: _Options) -> ModelCard:
    progress = reporter()
    arch: Architecture | None = ARCHITECTURES.get(opts.architecture) if opts.architecture else None
    condition = _card_condition(source, opts.class_names)

    with progress.step("Tracing the model"):
        traced = trace(source)
    # Every fact the graph cannot tell is asked for here, in one message, before the slow conversion.
    spec = infer_image_spec(
        source,
        traced,
        arch,
        image_shape=opts.image_shape,
        output_range=opts.output_range,
        input_range=opts.input_range,
    )
    hint = condition_hint(source)
    if hint:
        progress.note(hint)
    inputs = probe_inputs(source, spec.input_range)
    with progress.step("Converting to ONNX (tf2onnx)"):
        model, converted = _converted(source, traced, inputs[0])
    width = spec.output_range[1] - spec.output_range[0]
    abs_tolerance = opts.tolerance * width
    for x in inputs[1:]:  # the first ran in `_converted`; fail here rather than inside a graph pass
        _run_probe(converted, x, source)

    with progress.step("Graph passes"):
        model, applied, pass_errors = _run_passes(model, inputs, abs_tolerance)
    _check_graph(model)

    runner = OnnxRunner(model)
    outputs = [_run_probe(runner, x, source) for x in inputs]
    scale = _measure_scale(inputs, outputs) if spec.kind == "upscaler" else None

    comparison: Comparison | None = None
    if opts.verify:
        with progress.step("Verifying ONNX against the source model"):
            comparison = compare_source(source, runner, inputs)
        for case in comparison.cases():
            progress.note(
                f"parity {'x'.join(map(str, case.input_shape))}: max abs error {case.max_abs_error:.2e} "
                f"({case.max_abs_error / width:.1e} of the output range), mean {case.mean_abs_error:.2e}"
            )
        worst = comparison.max_abs_error()
        if not worst / width <= opts.tolerance:
            raise VerificationFailed(
                f"the ONNX model does not match the source model: max abs error {worst:.3g} is "
                f"{worst / width:.3g} of the output range {_fmt_range(spec.output_range)}, above the "
                f"tolerance {opts.tolerance:g} ("
                + "; ".join(
                    f"input {'x'.join(map(str, c.input_shape))}: {c.max_abs_error:.3g}"
                    for c in comparison.cases()
                )
                + "). A layer behaves differently in the source and in ONNX (a custom or Lambda layer, "
                "or a wrong --output-range); raise --tolerance only if the difference is acceptable"
            )
    parity = Parity(
        tolerance=opts.tolerance,
        max_abs_error=comparison.max_abs_error() if comparison else None,
        max_relative_error=comparison.max_abs_error() / width if comparison else None,
        cases=comparison.cases() if comparison else [],
        passes=pass_errors,
    )

    fp16_model: onnx.ModelProto | None = None
    fp16_variant: Fp16Variant | None = None
    if opts.fp16:
        with progress.step("Converting to fp16 and measuring PSNR"):
            fp16_model, fp16_variant = _fp16_variant(model, inputs, outputs, spec.output_range)
        progress.note(
            f"fp16 PSNR vs fp32: {fp16_variant.psnr_db:.1f} dB "
            f"({'accepted' if fp16_variant.accepted else f'rejected, below {MIN_FP16_PSNR_DB:g} dB'})"
        )

    card = ModelCard(
        name=name,
        # The graph as written, before the card goes into its metadata: same graph, same version.
        version=opts.version or content_version(model.SerializeToString()),
        kind="generator" if spec.kind == "generator" else "upscaler",
        description=opts.description or (arch.description if arch else ""),
        demo_weights=opts.demo_weights,
        input_name=model.graph.input[0].name,
        output_name=model.graph.output[0].name,
        input_shape=_onnx_shape(model.graph.input[0]),
        output_shape=_onnx_shape(model.graph.output[0]),
        channels=spec.channels,
        height=spec.height,
        width=spec.width,
        flat_output=spec.flat_output,
        output_range=ValueRange(low=spec.output_range[0], high=spec.output_range[1]),
        latent_size=spec.latent_size,
        condition=condition,
        scale=scale,
        input_range=ValueRange(low=spec.input_range[0], high=spec.input_range[1])
        if spec.input_range
        else None,
        input_channels=spec.input_channels,
        source=_source_record(source, opts.architecture),
        tools=_tool_versions(),
        opset=OPSET,
        graph_passes=applied,
        parity=parity,
        fp16=fp16_variant,
        created=dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
    )

    with progress.step(f"Writing {repo / name}"):
        rows = None
        if opts.preview and comparison:
            rows = _class_rows(spec, source, runner) if source.condition else _preview_rows(spec, comparison)
        _write_entry(
            repo,
            card,
            model,
            fp16_model if fp16_variant and fp16_variant.accepted else None,
            rows,
            spec.output_range,
        )
    return card


def _fmt_range(value_range: Range) -> str:
    return f"[{value_range[0]:g}, {value_range[1]:g}]"


def _card_condition(source: SourceModel, class_names: list[str] | None) -> Condition | None:
    if source.condition is None:
        if class_names:
            raise UsageError("--class-names applies to conditional generators; this model takes no class")
        return None
    spec = source.condition
    if class_names is not None and len(class_names) != spec.classes:
        raise UsageError(
            f"--class-names gives {len(class_names)} names but the model has {spec.classes} classes"
        )
    try:
        return Condition(
            classes=spec.classes, class_names=class_names, source=spec.source, source_input=spec.source_input
        )
    except ValueError as exc:
        raise UsageError(f"--class-names: {exc}") from None


def condition_hint(source: SourceModel) -> str | None:
    """A hint when an unconditional generator's latent size looks like noise + one-hot classes."""
    if not source.is_generator or source.condition is not None or source.latent_size is None:
        return None
    return latent_hint(source.latent_size)


def _run_passes(
    model: onnx.ModelProto, inputs: list[np.ndarray], tolerance: float
) -> tuple[onnx.ModelProto, list[str], dict[str, float]]:
    """Apply each pass to a copy; keep it if the graph still matches its predecessor.

    Every pass gets an entry in the returned errors; only passes that changed the graph are listed
    as applied (the ConvTranspose rewrite with its node count).
    """
    applied: list[str] = []
    errors: dict[str, float] = {}

    def portable(candidate: onnx.ModelProto) -> int:
        optimized = graph_passes.optimize_portable(candidate)
        if optimized is None:
            return 0
        before = [(n.op_type, list(n.input)) for n in candidate.graph.node]
        candidate.CopyFrom(optimized)
        return int(before != [(n.op_type, list(n.input)) for n in candidate.graph.node])

    passes: list[tuple[str, GraphPass]] = [
        ("symmetric-conv-transpose", graph_passes.symmetric_conv_transpose),
        ("remove-inverse-transposes", graph_passes.remove_inverse_transposes),
        ("onnxruntime-basic-optimization", portable),
    ]
    for pass_name, apply in passes:
        candidate = copy.deepcopy(model)
        changed = apply(candidate)
        if not changed:
            errors[pass_name] = 0.0  # nothing to rewrite: the graph is unchanged
            continue
        error = compare_graphs(model, candidate, inputs[:2])
        if not error <= tolerance:
            raise VerificationFailed(
                f"graph pass {pass_name} changed the output by {error:.3g} (tolerance {tolerance:g}); "
                "this is a bug in the export tool, please report it with the model"
            )
        model = candidate
        applied.append(f"{pass_name} ({changed})" if pass_name == "symmetric-conv-transpose" else pass_name)
        errors[pass_name] = error
    return model, applied, errors


#: Conversions tried before a graph whose output shape is not the source model's is an error.
CONVERT_ATTEMPTS = 3


def _converted(
    source: SourceModel, traced: TracedGraph, probe: np.ndarray
) -> tuple[onnx.ModelProto, OnnxRunner]:
    """`to_onnx(traced)` and its runner, checked: on `probe` the output has the source model's shape.

    The conversion is not deterministic: of 12 conversions of the same keras-io ESPCN (a tf.keras 2
    file, `tf.nn.depth_to_space` as its last layer) in one process, 2 lost the graph's final
    Squeeze and answered a rank-5 output. A graph that disagrees is traced and converted again.
    """
    expected: tuple[int, ...] | None = None
    got: tuple[int, ...] = ()
    for attempt in range(CONVERT_ATTEMPTS):
        if attempt:
            traced = trace(source)
        model = to_onnx(traced)
        runner = OnnxRunner(model)
        # The graph first: a model that fails on the probe is refused with the graph's own words.
        got = _run_probe(runner, probe, source).shape
        if expected is None:
            expected = source.predict(probe).shape
        if got == expected:
            return model, runner
    raise ExportError(
        f"internal error: the converted graph answers an input of shape {list(probe.shape)} with shape "
        f"{list(got)} where the model answers {list(expected or ())}, in {CONVERT_ATTEMPTS} conversions"
    )


def _run_probe(runner: OnnxRunner, x: np.ndarray, source: SourceModel) -> np.ndarray:
    try:
        return runner(x)
    except Exception as exc:  # onnxruntime's errors have no common public base class
        detail = str(exc).strip().splitlines()[0]
        if source.is_generator:
            raise NotAnImageModel(
                f"the ONNX model fails on a batch of shape {list(x.shape)}: {detail}"
            ) from exc
        raise NotAnImageModel(
            f"the model fails on an input of shape {list(x.shape)} ({detail}): it only works at its "
            f"input size {list(source.input_shape)}, but an upscaler must accept any height and width "
            "(fully convolutional)"
        ) from exc


def _check_graph(model: onnx.ModelProto) -> None:
    """Guarantees of every written graph: valid ONNX, GPU-friendly ConvTranspose, no cancelling Transposes."""
    onnx.checker.check_model(model, full_check=True)
    asymmetric = graph_passes.asymmetric_conv_transposes(model)
    if asymmetric:
        raise ExportError(f"internal error: ConvTranspose nodes with asymmetric pads remain: {asymmetric}")
    pairs = graph_passes.inverse_transpose_pairs(model)
    if pairs:
        raise ExportError(f"internal error: Transpose pairs that cancel out remain: {pairs}")


def _onnx_shape(value: onnx.ValueInfoProto) -> list[int | None]:
    return [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]


def _measure_scale(inputs: list[np.ndarray], outputs: list[np.ndarray]) -> int:
    """The upscale factor, measured: output size / input size, the same integer on both axes and inputs."""
    factors = set()
    for x, y in zip(inputs, outputs, strict=True):
        for axis in (1, 2):
            factors.add(y.shape[axis] / x.shape[axis])
    if len(factors) != 1 or not float(next(iter(factors))).is_integer() or next(iter(factors)) < 1:
        shapes = ", ".join(f"{list(x.shape)} → {list(y.shape)}" for x, y in zip(inputs, outputs, strict=True))
        raise NotAnImageModel(f"the upscaler has no single integer scale factor: {shapes}")
    return int(next(iter(factors)))


def _fp16_variant(
    model: onnx.ModelProto, inputs: list[np.ndarray], fp32_outputs: list[np.ndarray], value_range: Range
) -> tuple[onnx.ModelProto, Fp16Variant]:
    half = float16.convert_float_to_float16(copy.deepcopy(model), keep_io_types=True)
    runner = OnnxRunner(half)
    comparison = Comparison(inputs, fp32_outputs, [runner(x) for x in inputs])
    psnr = comparison.psnr_db(value_range[1] - value_range[0])
    variant = Fp16Variant(
        psnr_db=round(psnr, 2), min_psnr_db=MIN_FP16_PSNR_DB, accepted=psnr >= MIN_FP16_PSNR_DB
    )
    return half, variant


def _preview_rows(spec: ImageSpec, comparison: Comparison) -> list[list[np.ndarray]]:
    """Source images above ONNX images: the largest generator batch, or each upscaler probe's first image."""

    def images(batches: list[np.ndarray]) -> list[np.ndarray]:
        if spec.kind == "generator":
            batch = batches[-1]
            if spec.flat_output:
                batch = batch.reshape(-1, spec.height or 0, spec.width or 0, spec.channels)
            return list(batch)
        return [b[0] for b in batches]

    return [images(comparison.expected), images(comparison.actual)]


def _class_rows(spec: ImageSpec, source: SourceModel, runner: OnnxRunner) -> list[list[np.ndarray]]:
    """A conditional generator's preview: one row per class (the first ten), the same noise in each."""
    assert source.condition is not None and source.latent_size is not None
    classes = min(source.condition.classes, 10)
    noise = np.random.default_rng(SEED).standard_normal((8, source.latent_size)).astype(np.float32)
    rows = []
    for label in range(classes):
        onehot = np.zeros((8, source.condition.classes), np.float32)
        onehot[:, label] = 1.0
        batch = runner(np.concatenate([noise, onehot], axis=1))
        if spec.flat_output:
            batch = batch.reshape(-1, spec.height or 0, spec.width or 0, spec.channels)
        rows.append(list(batch))
    return rows


def _source_record(source: SourceModel, architecture: str | None) -> Source:
    if source.path is not None:
        return Source(
            path=str(source.path),
            format=source.format,
            sha256=sha256_path(source.path),
            architecture=architecture,
        )
    # An in-memory model has no file: its fingerprint is a hash over its weights, in order.
    digest = hashlib.sha256()
    for weight in source.keras_model.weights if source.keras_model is not None else []:
        digest.update(np.ascontiguousarray(np.asarray(weight), dtype=np.float32).tobytes())
    label = getattr(source.keras_model, "name", "model")
    return Source(
        path=f"<in-memory Keras model {label!r}>",
        format=source.format,
        sha256=digest.hexdigest(),
        architecture=architecture,
    )


def sha256_path(path: Path) -> str:
    """sha256 of a file, or of a directory's files in sorted relative-path order (path and bytes)."""
    digest = hashlib.sha256()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
    elif path.exists():
        files = [path]
    else:  # a checkpoint prefix (ckpt-1): its .index and .data-* files
        files = sorted(p for p in path.parent.glob(path.name + ".*") if p.is_file())
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        elif not path.exists():
            digest.update(file.name.encode() + b"\0")
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _tool_versions() -> dict[str, str]:
    import tensorflow as tf

    versions = {"tensorflow": str(tf.__version__)}  # whichever wheel: tensorflow or tensorflow-cpu
    for dist in _TOOLS:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _with_card(model: onnx.ModelProto, card: ModelCard) -> onnx.ModelProto:
    model = copy.deepcopy(model)
    metadata = card_to_metadata(card)
    kept = [p for p in model.metadata_props if p.key not in metadata]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in kept}, **metadata})
    model.producer_name = "gan-export"
    return model


def _write_entry(
    repo: Path,
    card: ModelCard,
    model: onnx.ModelProto,
    fp16_model: onnx.ModelProto | None,
    preview_rows: list[list[np.ndarray]] | None,
    value_range: Range,
) -> None:
    """Write the entry into a temporary sibling directory, then swap it in, so readers never see half."""
    repo.mkdir(parents=True, exist_ok=True)
    final = repo / card.name
    staging = Path(tempfile.mkdtemp(prefix=f".{card.name}.", dir=repo))
    try:
        onnx.save(_with_card(model, card), staging / MODEL_FILENAME)
        if fp16_model is not None:
            onnx.save(_with_card(fp16_model, card), staging / FP16_MODEL_FILENAME)
        if preview_rows is not None:
            write_preview(staging / PREVIEW_FILENAME, preview_rows, value_range)
        write_card(staging, card)
        staging.chmod(0o755)
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{card.name}.old.", dir=repo))
            final.rename(old / card.name)
            staging.rename(final)
            shutil.rmtree(old)
        else:
            staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    assert (final / CARD_FILENAME).exists()
