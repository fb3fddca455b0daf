"""`gan-export`: turn a trained Keras generator or upscaler into a verified model-repository entry.

Exit codes: 0 success; 1 verification failed (ONNX output differs from the source beyond the
tolerance); 2 a usage or input problem the message explains (file not found, unknown format, Lambda
without --unsafe, architecture mismatch, unsupported layer or op, not an image model…); 3 an
unexpected internal error (set GAN_EXPORT_DEBUG=1 to see the traceback); 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import traceback
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

from rich.console import Console
from rich.text import Text

from export.errors import ExportError, SourceError, SourceNotFound, UsageError
from service import __version__
from service.card import ModelCard, is_valid_model_name

EXIT_OK, EXIT_VERIFICATION, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3
#: Kept in step with export.api.DEFAULT_TOLERANCE (checked by a test) without importing TensorFlow.
DEFAULT_TOLERANCE = 1e-4
#: Options whose values may start with '-' (ranges such as -1,1), which argparse takes for options.
_NEGATIVE_VALUE_OPTIONS = ("--input-range", "--output-range")

EPILOG = """\
from a .keras file to a model-repository entry:

  1. export it (the model is converted, rewritten for the GPU, verified against Keras, and written
     with its model card and a preview image):
       gan-export convert generator.keras --repo models --name faces
  2. look at models/faces/preview.png (top row Keras, bottom row ONNX) and the card:
       gan-export inspect models/faces
  3. serve the repository (gan-serve --models models), or pack it for SageMaker:
       gan-export package models -o model.tar.gz

other sources:
  gan-export convert model.h5 --repo models --name cifar            # tf.keras 2.x full model
  gan-export convert saved_model_dir/ --repo models --name cifar    # TensorFlow SavedModel
  gan-export convert gen.weights.h5 --architecture dcgan-faces64 --repo models --name faces
  gan-export convert srgan.h5 --architecture srgan-x4 --option blocks=16 --repo models --name sr4
  gan-export convert g.weights.h5 --architecture mynets:build_generator --repo models --name mine
  gan-export architectures                                          # list built-in architectures

exit codes: 0 ok, 1 verification failed, 2 usage or input error, 3 internal error.
"""

CONVERT_EPILOG = """\
examples:
  gan-export convert generator.keras --repo models --name faces
  gan-export convert mlp.h5 --repo models --name mlp --image-shape 32x32x3
  gan-export convert sr.weights.h5 --architecture srgan-x4 --option blocks=8 --repo models --name sr
  gan-export convert model.h5 --unsafe --input-range 0,255 --repo models --name sr  # has Lambda layers
  gan-export convert srgan.weights.h5 --architecture nets:srgan --input-range -1,1 --repo models --name sr
  gan-export convert cgan.keras --condition onehot:10 --class-names 0,1,2,3,4,5,6,7,8,9 --repo m --name c
  gan-export convert training_checkpoints/ --architecture dcgan:make_generator_model --repo m --name g

The output range is read from the architecture, else from the graph: a final tanh [-1,1], sigmoid
[0,1] or clip, followed by any rescaling (Rescaling, x*127.5+127.5...). An upscaler's input range is
read from a leading Rescaling or x/255-style op. Whatever cannot be read is asked for in one message
before the conversion starts. Conditional generators (noise + integer label into an Embedding, or
noise + one-hot) are recognised from their two inputs; one input holding noise and a one-hot class
needs --condition onehot:K.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gan-export",
        description="Export trained Keras GAN generators (noise → image) and upscalers (image → ×N image) "
        "to verified, GPU-clean ONNX model-repository entries.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    convert = commands.add_parser(
        "convert",
        help="export a model file or directory into <repo>/<name>/",
        description="Convert SOURCE to ONNX, rewrite it for the GPU, verify it against the source, and write "
        "<repo>/<name>/model.onnx, model.json (the model card) and preview.png.",
        epilog=CONVERT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    convert.add_argument(
        "source",
        type=Path,
        metavar="SOURCE",
        help=".keras file, full-model .h5, SavedModel directory, or weights .h5/.weights.h5 "
        "(with --architecture)",
    )
    convert.add_argument(
        "--repo", type=Path, required=True, help="model repository directory (created if needed)"
    )
    convert.add_argument("--name", required=True, help="entry name: letters, digits, '.', '_', '-'")
    convert.add_argument(
        "--architecture", metavar="NAME|module:function", help="built-in architecture or your own builder"
    )
    convert.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="integer option for the architecture builder (repeatable), e.g. --option blocks=8",
    )
    convert.add_argument("--image-shape", metavar="HxWxC", help="image shape of a flat output, e.g. 32x32x3")
    convert.add_argument(
        "--output-range", metavar="LOW,HIGH", help="value range of the output, e.g. 0,255 or -1,1"
    )
    convert.add_argument(
        "--input-range", metavar="LOW,HIGH", help="value range an upscaler expects, e.g. 0,1 or -1,1"
    )
    convert.add_argument(
        "--condition",
        metavar="onehot:K|index:K",
        help="class conditioning the model does not show: onehot:K when the last K input values are a "
        "one-hot class concatenated to the noise (onehot:K:first when they come first); index:K when an "
        "integer label input feeds no Embedding",
    )
    convert.add_argument(
        "--class-names", metavar="A,B,...", help="names of a conditional generator's classes, in label order"
    )
    convert.add_argument("--description", default="", help="free text stored in the model card")
    convert.add_argument(
        "--version",
        metavar="VERSION",
        help="the model's version in its card, e.g. 3 or 2026.11 (default: a short hash of the ONNX graph)",
    )
    convert.add_argument(
        "--demo-weights", action="store_true", help="mark the weights as untrained demo weights"
    )
    convert.add_argument(
        "--fp16", action="store_true", help="also write model.fp16.onnx (float32 I/O) if its PSNR is ≥ 40 dB"
    )
    convert.add_argument(
        "--unsafe", action="store_true", help="allow Lambda layers (they run code stored in the file)"
    )
    convert.add_argument("--no-verify", action="store_true", help="skip the source-vs-ONNX comparison")
    convert.add_argument("--no-preview", action="store_true", help="do not write preview.png")
    convert.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help="max abs error allowed between source and ONNX, as a fraction of the output range "
        f"(default {DEFAULT_TOLERANCE:g}: 2e-4 for [-1,1], 0.0255 for [0,255])",
    )

    package = commands.add_parser(
        "package",
        help="pack a model repository as a SageMaker model.tar.gz",
        description="Write every entry of REPO into a gzip tarball laid out as SageMaker unpacks it into "
        "/opt/ml/model (<name>/model.onnx at the top level).",
    )
    package.add_argument("repo", type=Path, metavar="REPO")
    package.add_argument(
        "-o", "--output", type=Path, default=Path("model.tar.gz"), help="default: model.tar.gz"
    )

    commands.add_parser("architectures", help="list the built-in architectures and their options")

    inspect = commands.add_parser(
        "inspect", help="print the model card of an entry (directory or .onnx file)"
    )
    inspect.add_argument("entry", type=Path, metavar="ENTRY")
    return parser


class RichReporter:
    """Spinner while a step runs, a check mark with its duration when it ends."""

    def __init__(self, console: Console) -> None:
        self.console = console

    @contextlib.contextmanager
    def step(self, description: str) -> Iterator[None]:
        start = time.perf_counter()
        with self.console.status(description + "…"):
            yield
        self.console.print(f"[green]✓[/green] {description} ({time.perf_counter() - start:.1f} s)")

    def note(self, message: str) -> None:
        self.console.print(f"  {message}")


def _quiet_frameworks() -> None:
    """TensorFlow, absl and tf2onnx print pages of logs; the user needs none of them."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
    warnings.filterwarnings("ignore")
    import logging

    for name in ("tensorflow", "tf2onnx", "absl", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger("tf2onnx").propagate = False


def _import_tensorflow_silently() -> None:
    """Import TensorFlow with file descriptor 2 closed.

    TensorFlow 2.21 logs through absl at import ("oneDNN custom operations are on", twice), before
    TF_CPP_MIN_LOG_LEVEL is read; only the descriptor can silence it. Python errors still raise.
    """
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w", encoding="utf-8") as null:
            os.dup2(null.fileno(), 2)
            try:
                import tensorflow  # noqa: F401
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def _options(values: Sequence[str]) -> dict[str, int]:
    options = {}
    for item in values:
        key, sep, value = item.partition("=")
        try:
            if not sep or not key:
                raise ValueError
            options[key] = int(value)
        except ValueError:
            raise UsageError(f"--option {item!r}: expected KEY=INTEGER, e.g. --option blocks=8") from None
    return options


def parse_image_shape(text: str) -> tuple[int, int, int]:
    """'32x32x3' → (32, 32, 3)."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        h, w, c = (int(p) for p in parts)
    except ValueError:
        raise UsageError(f"--image-shape {text!r}: expected HxWxC, e.g. 32x32x3") from None
    if min(h, w, c) < 1 or c not in (1, 3, 4):
        raise UsageError(f"--image-shape {text!r}: sizes must be positive and C one of 1, 3, 4")
    return (h, w, c)


def parse_range(text: str, option: str) -> tuple[float, float]:
    """'-1,1' → (-1.0, 1.0)."""
    try:
        low, high = (float(p) for p in text.split(","))
    except ValueError:
        raise UsageError(f"{option} {text!r}: expected LOW,HIGH, e.g. -1,1 or 0,255") from None
    if not high > low:
        raise UsageError(f"{option} {text!r}: HIGH must exceed LOW")
    return (low, high)


def parse_condition(text: str) -> tuple[str, int, bool]:
    """'onehot:10' → ('onehot', 10, False); 'onehot:10:first' → ('onehot', 10, True); 'index:10'."""
    parts = text.strip().lower().split(":")
    try:
        if parts[0] not in ("onehot", "index") or len(parts) not in (2, 3):
            raise ValueError
        classes = int(parts[1])
        first = len(parts) == 3
        if classes < 2 or (first and (parts[2] != "first" or parts[0] != "onehot")):
            raise ValueError
    except ValueError:
        raise UsageError(
            f"--condition {text!r}: expected onehot:K, onehot:K:first or index:K with K ≥ 2 classes, "
            "e.g. --condition onehot:10"
        ) from None
    return parts[0], classes, first


def parse_class_names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",")]
    if any(not name for name in names) or len(set(names)) != len(names):
        raise UsageError(f"--class-names {text!r}: expected distinct, non-empty names separated by commas")
    return names


def _join_negative_values(argv: list[str]) -> list[str]:
    """`--input-range -1,1` → `--input-range=-1,1`: argparse would take `-1,1` for an option."""
    joined: list[str] = []
    index = 0
    while index < len(argv):
        item = argv[index]
        following = argv[index + 1] if index + 1 < len(argv) else ""
        if item in _NEGATIVE_VALUE_OPTIONS and following[:1] == "-" and following[1:2].isdigit():
            joined.append(f"{item}={following}")
            index += 2
            continue
        joined.append(item)
        index += 1
    return joined


def _convert(args: argparse.Namespace, console: Console) -> int:
    _quiet_frameworks()
    if not is_valid_model_name(args.name):
        raise UsageError(
            f"invalid entry name {args.name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit (it becomes a directory and a URL path part)"
        )
    options = _options(args.option)
    image_shape = parse_image_shape(args.image_shape) if args.image_shape else None
    output_range = parse_range(args.output_range, "--output-range") if args.output_range else None
    input_range = parse_range(args.input_range, "--input-range") if args.input_range else None
    condition = parse_condition(args.condition) if args.condition else None
    class_names = parse_class_names(args.class_names) if args.class_names else None
    if condition and class_names and len(class_names) != condition[1]:
        raise UsageError(
            f"--class-names gives {len(class_names)} names but --condition says {condition[1]} classes"
        )
    if not args.source.exists() and not Path(str(args.source) + ".index").exists():
        raise SourceNotFound(f"{args.source}: no such file or directory")

    reporter = RichReporter(console)
    with reporter.step("Loading TensorFlow"):
        if not os.environ.get("GAN_EXPORT_DEBUG"):
            _import_tensorflow_silently()
        from export.api import export_file
        from export.progress import reporting_to
        from export.source import ConditionRequest
    request = None
    if condition is not None:
        kind, classes, first = condition
        request = ConditionRequest(classes, "concat" if kind == "onehot" else "index", onehot_first=first)
    with reporting_to(reporter):
        card = export_file(
            args.source,
            args.repo,
            args.name,
            architecture=args.architecture,
            architecture_options=options,
            unsafe=args.unsafe,
            description=args.description,
            demo_weights=args.demo_weights,
            fp16=args.fp16,
            verify=not args.no_verify,
            tolerance=args.tolerance,
            preview=not args.no_preview,
            image_shape=image_shape,
            output_range=output_range,
            input_range=input_range,
            condition=request,
            class_names=class_names,
            version=args.version,
        )
    entry = args.repo / card.name
    what = (
        f"generator, latent {card.latent_size} → {card.height}×{card.width}×{card.channels}"
        if card.kind == "generator"
        else f"upscaler ×{card.scale}, {card.input_channels} → {card.channels} channels"
    )
    if card.condition is not None:
        what += f", {card.condition.classes} classes ({card.condition.source} label)"
    ranges = f"output [{card.output_range.low:g}, {card.output_range.high:g}]"
    if card.input_range is not None:
        ranges = f"input [{card.input_range.low:g}, {card.input_range.high:g}], " + ranges
    verified = (
        f"max abs error {card.parity.max_abs_error:.2e} = {card.parity.max_relative_error or 0:.1e} of the "
        f"range ≤ {card.parity.tolerance:g}"
        if card.parity.cases
        else "not verified (--no-verify)"
    )
    console.print(f"[bold]{entry}[/bold] (version {card.version}): {what}; {ranges}; {verified}")
    for name in sorted(p.name for p in entry.iterdir()):
        console.print(f"  {entry / name}")
    return EXIT_OK


def _package(args: argparse.Namespace, console: Console) -> int:
    from export.package import package_repository, repository_entries

    names = [e.name for e in repository_entries(args.repo)]
    out = package_repository(args.repo, args.output)
    console.print(f"{out}: {len(names)} entries ({', '.join(names)}), {out.stat().st_size / 1e6:.1f} MB")
    return EXIT_OK


def _architectures(console: Console) -> int:
    _quiet_frameworks()
    from export.catalog import ARCHITECTURES

    for arch in ARCHITECTURES.values():
        options = " ".join(f"{k}={v}" for k, v in arch.options.items())
        console.print(f"[bold]{arch.name}[/bold]  ({arch.kind})  {arch.description}")
        console.print(f"    options: {options}")
    return EXIT_OK


def _inspect(args: argparse.Namespace, console: Console) -> int:
    import json

    from service.card import METADATA_KEY, ModelCard, read_card

    entry: Path = args.entry
    if not entry.exists():
        raise SourceNotFound(f"{entry}: no such entry directory or .onnx file")
    if entry.is_dir():
        try:
            card = read_card(entry)
        except ValueError as exc:
            raise SourceError(str(exc)) from exc
    else:
        import onnx

        try:
            model = onnx.load(str(entry), load_external_data=False)
        except Exception as exc:
            raise SourceError(f"{entry}: not an ONNX file ({exc})") from exc
        props = {p.key: p.value for p in model.metadata_props}
        if METADATA_KEY not in props:
            raise SourceError(
                f"{entry}: this ONNX file carries no model card (was it written by gan-export?)"
            )
        card = ModelCard.model_validate(json.loads(props[METADATA_KEY]))
    console.print_json(card.to_json())
    hint = _latent_hint(card)
    if hint:
        console.print(hint)
    return EXIT_OK


def _latent_hint(card: ModelCard) -> str | None:
    """The conditional-looking latent hint, for an unconditional generator card."""
    if card.kind != "generator" or card.condition is not None or card.latent_size is None:
        return None
    from export.conditional_hint import latent_hint

    return latent_hint(card.latent_size)


def _run(args: argparse.Namespace, console: Console) -> int:
    if args.command == "convert":
        return _convert(args, console)
    if args.command == "package":
        return _package(args, console)
    if args.command == "architectures":
        return _architectures(console)
    return _inspect(args, console)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `gan-export`; returns the exit code."""
    args = _parser().parse_args(_join_negative_values(list(sys.argv[1:] if argv is None else argv)))
    console = Console(highlight=False, soft_wrap=True)
    errors = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        return _run(args, console)
    except KeyboardInterrupt:
        errors.print("interrupted")
        return 130
    except Exception as exc:
        if os.environ.get("GAN_EXPORT_DEBUG"):
            traceback.print_exc()
        if isinstance(exc, ExportError):
            errors.print(Text.assemble(("error: ", "red"), str(exc)), soft_wrap=True)
            return int(exc.exit_code)
        message = f"{type(exc).__name__}: {exc} (please report it; set GAN_EXPORT_DEBUG=1 for the traceback)"
        errors.print(Text.assemble(("internal error: ", "red"), message), soft_wrap=True)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
