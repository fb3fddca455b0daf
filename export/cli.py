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
from service.card import is_valid_model_name

EXIT_OK, EXIT_VERIFICATION, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3

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

The value range of the output is read from the architecture, else from a final tanh ([-1,1]) or
sigmoid ([0,1]); otherwise pass --output-range. Upscalers need --input-range unless their
architecture says it.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gan-export",
        description="Export trained Keras GAN generators (noise → image) and upscalers (image → ×N image) "
        "to verified, GPU-clean ONNX model-repository entries.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
    convert.add_argument("--output-range", metavar="LOW,HIGH", help="value range of the output, e.g. 0,255")
    convert.add_argument(
        "--input-range", metavar="LOW,HIGH", help="value range an upscaler expects, e.g. 0,1"
    )
    convert.add_argument("--description", default="", help="free text stored in the model card")
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
        "--tolerance", type=float, default=1e-4, help="max abs error allowed, source vs ONNX (default 1e-4)"
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
    if not args.source.exists():
        raise SourceNotFound(f"{args.source}: no such file or directory")

    reporter = RichReporter(console)
    with reporter.step("Loading TensorFlow"):
        from export.api import export_file
        from export.progress import reporting_to
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
        )
    entry = args.repo / card.name
    what = (
        f"generator, latent {card.latent_size} → {card.height}×{card.width}×{card.channels}"
        if card.kind == "generator"
        else f"upscaler ×{card.scale}, {card.input_channels} → {card.channels} channels"
    )
    verified = (
        f"max abs error {card.parity.max_abs_error:.2e} ≤ {card.parity.tolerance:g}"
        if card.parity.cases
        else "not verified (--no-verify)"
    )
    console.print(f"[bold]{entry}[/bold]: {what}; {verified}")
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
    from export.architectures import ARCHITECTURES

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
    return EXIT_OK


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
    args = _parser().parse_args(argv)
    console = Console(highlight=False, soft_wrap=True)
    errors = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        return _run(args, console)
    except KeyboardInterrupt:
        errors.print("interrupted")
        return 130
    except Exception as exc:
        if isinstance(exc, ExportError):
            errors.print(Text.assemble(("error: ", "red"), str(exc)), soft_wrap=True)
            return int(exc.exit_code)
        if os.environ.get("GAN_EXPORT_DEBUG"):
            traceback.print_exc()
        message = f"{type(exc).__name__}: {exc} (please report it; set GAN_EXPORT_DEBUG=1 for the traceback)"
        errors.print(Text.assemble(("internal error: ", "red"), message), soft_wrap=True)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
