"""Build the default model repository: `python -m zoo.build --repo models [--only NAME ...] [--force]`.

Every entry goes through the export tool exactly as a user's model would. An entry is rebuilt only
when its content hash changes: the bytes of its source weights, its recipe (options, seed,
description) and the export tool's own source. The hash is stored in `<repo>/<name>/build.json`
after a successful export, so an interrupted build is redone and timestamps never matter.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from zoo import faces64

STAMP_FILENAME = "build.json"
ZOO_DIR = Path(__file__).resolve().parent
PROJECT_DIR = ZOO_DIR.parent
DEFAULT_SRGAN_DIR = ZOO_DIR / "weights"
SRGAN_WEIGHTS = "srgan_x4.weights.h5"
SRGAN_REPORT = "srgan_x4.json"
DIGITS_WEIGHTS = "cgan_digits.weights.h5"
DIGITS_REPORT = "cgan_digits.json"
DIGITS_CLASS_NAMES = [str(d) for d in range(10)]
DEMO_SEED = 20261122
DEMO_DESCRIPTION = (
    "untrained demo weights (random initialisation, seed {seed}): shows the {arch} architecture "
    "working end to end; its images are noise, not pictures"
)


@dataclass(frozen=True)
class BuildContext:
    """Where sources come from and where intermediate files go."""

    repo: Path
    work_dir: Path
    srgan_dir: Path = DEFAULT_SRGAN_DIR
    digits_dir: Path = DEFAULT_SRGAN_DIR  # trained cgan-digits weights + report
    faces_checkpoint: Path | None = None


@dataclass(frozen=True)
class Entry:
    """One repository entry: what its output depends on, and how to export it."""

    name: str
    inputs: Callable[[BuildContext], list[Path]]  # files whose bytes the entry depends on
    recipe: Callable[[BuildContext], dict[str, Any]]
    export: Callable[[BuildContext], None]
    code: tuple[str, ...] = field(default=())  # zoo modules (beyond this one) that shape the output


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def export_tool_hash() -> str:
    """A hash of the export tool's source and the card schema: a new tool rebuilds everything."""
    digest = hashlib.sha256()
    files = [*sorted((PROJECT_DIR / "export").glob("*.py")), PROJECT_DIR / "service" / "card.py"]
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def content_hash(entry: Entry, ctx: BuildContext, tool_hash: str) -> str:
    """The entry's content hash over its input bytes, recipe, zoo code and the export tool."""
    record = {
        "name": entry.name,
        "inputs": [_sha256(p) for p in entry.inputs(ctx)],
        "recipe": entry.recipe(ctx),
        "code": {m: _sha256(ZOO_DIR / m) for m in ("build.py", *entry.code)},
        "export_tool": tool_hash,
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def is_up_to_date(repo: Path, name: str, digest: str) -> bool:
    """Whether `<repo>/<name>` was built from exactly this content hash."""
    from service.card import CARD_FILENAME, MODEL_FILENAME

    entry_dir = repo / name
    stamp = entry_dir / STAMP_FILENAME
    if not (
        stamp.is_file() and (entry_dir / CARD_FILENAME).is_file() and (entry_dir / MODEL_FILENAME).is_file()
    ):
        return False
    try:
        return bool(json.loads(stamp.read_text()).get("content_hash") == digest)
    except (OSError, ValueError):
        return False


# faces64 ---------------------------------------------------------------------------------------


def _faces_inputs(ctx: BuildContext) -> list[Path]:
    return [ctx.faces_checkpoint or faces64.checkpoint_path()]


def _faces_recipe(ctx: BuildContext) -> dict[str, Any]:
    return {"architecture": "dcgan-faces64", "description": faces64.DESCRIPTION}


def _faces_export(ctx: BuildContext) -> None:
    from export.api import export_file

    keras_file = faces64.save_keras(ctx.work_dir / "faces64.keras", ctx.faces_checkpoint)
    export_file(keras_file, ctx.repo, "faces64", description=faces64.DESCRIPTION)


# srgan-x4 --------------------------------------------------------------------------------------


def _srgan_report(ctx: BuildContext) -> dict[str, Any]:
    path = ctx.srgan_dir / SRGAN_REPORT
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: train with `python -m zoo.training.train_srgan`")
    report: dict[str, Any] = json.loads(path.read_text())
    return report


def srgan_description(report: dict[str, Any]) -> str:
    """The card description: what was trained on what, and how it scores against bicubic."""
    options = report["architecture_options"]
    steps = report.get("steps_total", report["steps"])
    gains = ", ".join(
        f"{name} {r['psnr_y_model_db']:.2f} dB vs bicubic {r['psnr_y_bicubic_db']:.2f} dB"
        for name, r in report["test"].items()
    )
    return (
        f"SRGAN ×4 generator ({options['blocks']} residual blocks, {options['filters']} filters) trained "
        f"in this project on scikit-image sample photographs with an L1 pixel loss ({steps} "
        f"steps); held-out Y-channel PSNR: {gains}"
    )


def _srgan_inputs(ctx: BuildContext) -> list[Path]:
    return [ctx.srgan_dir / SRGAN_WEIGHTS]


def _srgan_recipe(ctx: BuildContext) -> dict[str, Any]:
    report = _srgan_report(ctx)
    return {"architecture_options": report["architecture_options"], "description": srgan_description(report)}


def _srgan_export(ctx: BuildContext) -> None:
    from export.api import export_file

    report = _srgan_report(ctx)
    export_file(
        ctx.srgan_dir / SRGAN_WEIGHTS,
        ctx.repo,
        "srgan-x4",
        architecture="srgan-x4",
        architecture_options=report["architecture_options"],
        description=srgan_description(report),
    )


# digits-cgan -----------------------------------------------------------------------------------


def _digits_report(ctx: BuildContext) -> dict[str, Any]:
    path = ctx.digits_dir / DIGITS_REPORT
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: train with `python -m zoo.training.train_cgan_digits`")
    report: dict[str, Any] = json.loads(path.read_text())
    return report


def digits_description(report: dict[str, Any]) -> str:
    """The card description: what was trained on what, and how often the label is obeyed."""
    accuracy = report["evaluation"]["label_accuracy"]["overall"]
    return (
        f"conditional GAN (cgan-digits: noise × label embedding) trained in this project on "
        f"scikit-learn's 8×8 handwritten digits ({report['steps']} steps); pass a digit as the class: "
        f"a classifier fitted on real digits reads {accuracy:.1%} of its samples as the digit asked for"
    )


def _digits_inputs(ctx: BuildContext) -> list[Path]:
    return [ctx.digits_dir / DIGITS_WEIGHTS]


def _digits_recipe(ctx: BuildContext) -> dict[str, Any]:
    report = _digits_report(ctx)
    return {
        "architecture_options": report["architecture_options"],
        "class_names": DIGITS_CLASS_NAMES,
        "description": digits_description(report),
    }


def _digits_export(ctx: BuildContext) -> None:
    from export.api import export_keras_model
    from zoo.training.train_cgan_digits import load_generator

    report = _digits_report(ctx)
    weights = ctx.digits_dir / DIGITS_WEIGHTS
    export_keras_model(
        load_generator(weights, report["architecture_options"]["latent_size"]),
        ctx.repo,
        "digits-cgan",
        architecture="cgan-digits",
        description=digits_description(report),
        class_names=DIGITS_CLASS_NAMES,
        source_path=weights,
    )


# demo entries ----------------------------------------------------------------------------------


def _demo_entry(arch: str) -> Entry:
    def recipe(ctx: BuildContext) -> dict[str, Any]:
        # Random initialisation depends on the Keras version: part of the recipe.
        return {"architecture": arch, "seed": DEMO_SEED, "keras": importlib.metadata.version("keras")}

    def export(ctx: BuildContext) -> None:
        import keras

        from export.api import export_keras_model
        from export.architectures import build

        keras.utils.set_random_seed(DEMO_SEED)
        export_keras_model(
            build(arch),
            ctx.repo,
            arch,
            architecture=arch,
            demo_weights=True,
            description=DEMO_DESCRIPTION.format(seed=DEMO_SEED, arch=arch),
        )

    return Entry(arch, lambda ctx: [], recipe, export)


ENTRIES: dict[str, Entry] = {
    e.name: e
    for e in (
        Entry("faces64", _faces_inputs, _faces_recipe, _faces_export, ("faces64.py", "torch_checkpoint.py")),
        Entry("srgan-x4", _srgan_inputs, _srgan_recipe, _srgan_export),
        Entry(
            "digits-cgan", _digits_inputs, _digits_recipe, _digits_export, ("training/train_cgan_digits.py",)
        ),
        _demo_entry("dcgan-cifar10"),
        _demo_entry("mlp-cifar10"),
        _demo_entry("dcgan-mnist"),
    )
}


def build_repository(
    ctx: BuildContext, only: list[str] | None = None, force: bool = False, console: Console | None = None
) -> dict[str, str]:
    """Build the selected entries that are out of date; returns name → "built" or "up to date"."""
    console = console or Console(stderr=True, soft_wrap=True)
    names = only or list(ENTRIES)
    unknown = [n for n in names if n not in ENTRIES]
    if unknown:
        raise SystemExit(f"unknown default model(s) {unknown}; choose from {list(ENTRIES)}")
    tool_hash = export_tool_hash()
    results: dict[str, str] = {}
    for name in names:
        entry = ENTRIES[name]
        digest = content_hash(entry, ctx, tool_hash)
        if not force and is_up_to_date(ctx.repo, name, digest):
            console.print(f"[dim]up to date[/dim]  {name}")
            results[name] = "up to date"
            continue
        start = time.monotonic()
        with _reporting(console), console.status(f"building {name}"):
            entry.export(ctx)
        (ctx.repo / name / STAMP_FILENAME).write_text(
            json.dumps({"content_hash": digest, "built_by": "python -m zoo.build"}, indent=2) + "\n"
        )
        console.print(f"[green]built[/green]       {name} ({time.monotonic() - start:.1f} s)")
        results[name] = "built"
    return results


class _ConsoleReporter:
    """Shows the export tool's slow steps and notes on the build's console."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def step(self, description: str) -> Any:
        return self.console.status(description)

    def note(self, message: str) -> None:
        self.console.print(f"            {message}")


def _reporting(console: Console) -> Any:
    from export.progress import reporting_to

    return reporting_to(_ConsoleReporter(console))


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    # TensorFlow's C++ start-up chatter would bury the progress lines.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repo", type=Path, default=Path("models"), help="model repository to fill")
    p.add_argument(
        "--only", nargs="+", metavar="NAME", choices=list(ENTRIES), help="build only these entries"
    )
    p.add_argument("--force", action="store_true", help="rebuild even when up to date")
    p.add_argument("--work-dir", type=Path, default=Path("build/zoo"), help="intermediate files (.keras)")
    p.add_argument(
        "--srgan-dir", type=Path, default=DEFAULT_SRGAN_DIR, help="trained srgan-x4 weights + json"
    )
    p.add_argument(
        "--digits-dir", type=Path, default=DEFAULT_SRGAN_DIR, help="trained cgan-digits weights + json"
    )
    args = p.parse_args(argv)
    ctx = BuildContext(
        repo=args.repo, work_dir=args.work_dir, srgan_dir=args.srgan_dir, digits_dir=args.digits_dir
    )
    console = Console(stderr=True, soft_wrap=True)
    results = build_repository(ctx, args.only, args.force, console)
    built = [n for n, r in results.items() if r == "built"]
    console.print(f"{args.repo}: {len(built)} built, {len(results) - len(built)} up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
