"""Image codecs for the sizes the service produces: `python bench/codecs.py [--rounds 5] [--window 0.15]`.

Measures, on one thread, every candidate library that is importable in the running Python for each
job the service does with images: PNG encode at a fast setting (the default) and at a small-file
setting, JPEG and WebP encode at quality 90, and PNG / JPEG decode for /upscale. Candidates that
are not installed are listed as skipped, so the same script measures the product's `.venv` (Pillow
and what pyproject.toml picked) or a scratch environment holding every candidate:

    uv venv /tmp/codecs && VIRTUAL_ENV=/tmp/codecs uv pip install numpy pillow onnxruntime \\
        simplejpeg imagecodecs opencv-python-headless pyspng fpng
    PYTHONPATH=. /tmp/codecs/bin/python bench/codecs.py

The images are real model outputs from the default repository (`make models`): faces64 faces
(64²) and srgan-x4 upscales of them (128² from a 32² face, 256² from one face, 512² from a 2×2 grid,
1024² from a 4×4 grid), cached in bench/results/codec-images.npz. Random noise would not compress.

Timing: for every job and size, each round gives every candidate one short window (at least
`--window` seconds and two calls) in an order that rotates by round, so candidates are compared
seconds apart on a shared machine; the table gives the median ms per image over rounds and the
min–max, process CPU ms per image (median), the bytes, and the check: PNG output decoded by Pillow
must equal the input exactly; JPEG/WebP output is decoded by Pillow and compared with the input
(PSNR) and with Pillow's own output at the same setting; decoders are compared with Pillow's decode
of the same bytes (pixels that differ, largest difference). Load average and the machine's busy
cores are printed per job. `--json PATH` writes every window.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT))

from peers.procstat import busy_fraction, machine_cpu  # noqa: E402

SIZES = (64, 128, 256, 512, 1024)
CACHE = BENCH / "results" / "codec-images.npz"
QUALITY = 90


# -- the images -----------------------------------------------------------------------------------


def model_images(models: Path) -> dict[int, np.ndarray]:
    """RGB uint8 images of every size in SIZES, made by the default repository's faces64 and srgan-x4."""
    import onnxruntime as ort

    from service.card import read_card
    from service.labels import generator_input_width
    from service.pixels import from_uint8, make_grid, to_uint8

    options = ort.SessionOptions()
    options.log_severity_level = 3

    def session(name: str) -> tuple[Any, ort.InferenceSession]:
        card = read_card(models / name)
        return card, ort.InferenceSession(str(models / name / card.file), options, ["CPUExecutionProvider"])

    faces_card, faces = session("faces64")
    latents = np.random.default_rng(7).standard_normal((16, generator_input_width(faces_card)), np.float32)
    out = faces.run([faces_card.output_name], {faces_card.input_name: latents})[0]
    face_images = to_uint8(out.reshape(16, 64, 64, 3), faces_card.output_range)
    sr_card, sr = session("srgan-x4")
    assert sr_card.input_range is not None

    def upscale(pixels: np.ndarray) -> np.ndarray:
        values = from_uint8(pixels[None], sr_card.input_range)
        return to_uint8(
            sr.run([sr_card.output_name], {sr_card.input_name: values})[0][0], sr_card.output_range
        )

    small = np.asarray(Image.fromarray(face_images[1]).resize((32, 32), Image.Resampling.BOX))
    return {
        64: face_images[0],
        128: upscale(small),
        256: upscale(face_images[2]),
        512: upscale(make_grid(face_images[:4], 2)),
        1024: upscale(make_grid(face_images, 4)),
    }


def load_images(models: Path) -> dict[int, np.ndarray]:
    """The cached images, or new ones from the models (a 1024² upscale takes seconds on a CPU)."""
    if CACHE.is_file():
        with np.load(CACHE) as cached:
            images = {int(key): cached[key] for key in cached.files}
        if sorted(images) == sorted(SIZES):
            return images
    if not (models / "faces64" / "model.json").is_file():
        raise SystemExit(f"{models}/faces64 is missing: build the default repository first (`make models`)")
    images = model_images(models)
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {str(size): image for size, image in images.items()}
    np.savez(CACHE, **arrays)
    return images


# -- the candidates -------------------------------------------------------------------------------

Encoder = Callable[[np.ndarray], bytes]
Decoder = Callable[[bytes], np.ndarray]


@dataclass
class Candidate:
    """One library and setting for one job; `run` is None when its library is not importable."""

    name: str
    run: Callable[[Any], Any] | None
    missing: str = ""


@dataclass
class Job:
    """One thing the service does with images, and the candidates for it."""

    key: str
    title: str
    kind: str  # "png", "lossy" or "decode"
    candidates: list[Candidate] = field(default_factory=list)
    #: For decode jobs: how the input bytes are made from the image.
    source: Encoder | None = None


def _pillow_save(image: np.ndarray, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, fmt, **options)
    return buffer.getvalue()


def _pillow_open(data: bytes) -> np.ndarray:
    """What /upscale did before: Pillow's decode, turned upright, as an array."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return np.asarray((ImageOps.exif_transpose(image) or image).convert("RGB"))


def _service_png(module: Any, level: int) -> Encoder:
    """The service's own PNG encoder at `level`."""
    return lambda pixels: module.encode.encode_png(pixels, level)


def _service_decode(module: Any) -> Decoder:
    """The service's own decode (header checks, fast path, Pillow fallback), colour planes only."""
    return lambda data: module.decode.decode_image(data, 1 << 30).color


def _up_png(compress: Callable[[bytes, int], bytes], level: int) -> Encoder:
    """The service's PNG writer with another deflate library: is ISA-L the right one?"""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))
        )

    def encode(pixels: np.ndarray) -> bytes:
        height, width, channels = pixels.shape
        rows = pixels.reshape(height, width * channels)
        filtered = np.empty((height, width * channels + 1), np.uint8)
        filtered[:, 0] = 2
        filtered[0, 1:] = rows[0]
        np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
        header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
        idat = compress(filtered.tobytes(), level)
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")

    return encode


def _optional(name: str, module: str, make: Callable[[Any], Callable[[Any], Any]]) -> Candidate:
    """A candidate whose library may be missing from this environment."""
    try:
        imported = __import__(module)
    except ImportError as exc:
        return Candidate(name, None, f"{module} not installed ({exc.name})")
    return Candidate(name, make(imported))


def _cv2_setup(cv2: Any) -> Any:
    # The service encodes on its own pool, one image per thread: OpenCV must not add threads of its own.
    cv2.setNumThreads(1)
    return cv2


def jobs() -> list[Job]:
    """Every job with every candidate this script knows."""
    png_fast = Job("png-fast", "PNG encode, fast default (lossless)", "png")
    png_fast.candidates = [
        Candidate("Pillow compress_level=1 (before)", lambda a: _pillow_save(a, "PNG", compress_level=1)),
        *[
            _optional(
                f"service encode_png level {level}: Up filter + ISA-L{' (after)' if level == 1 else ''}",
                "service.encode",
                partial(_service_png, level=level),
            )
            for level in (1, 2, 3)
        ],
        _optional("Up filter + zlib-ng level 1", "zlib_ng.zlib_ng", lambda m: _up_png(m.zlib_ng.compress, 1)),
        Candidate("Pillow compress_level=0 (stored)", lambda a: _pillow_save(a, "PNG", compress_level=0)),
        _optional(
            "imagecodecs libpng level 1, RLE, SUB",
            "imagecodecs",
            lambda m: lambda a: m.png_encode(a, level=1, strategy=3, filter=16),
        ),
        _optional(
            "imagecodecs libpng level 1, default filters",
            "imagecodecs",
            lambda m: lambda a: m.png_encode(a, level=1),
        ),
        _optional(
            "imagecodecs libspng level 1", "imagecodecs", lambda m: lambda a: m.spng_encode(a, level=1)
        ),
        _optional(
            "OpenCV imencode level 1",
            "cv2",
            lambda m: (
                lambda cv2: (
                    lambda a: cv2.imencode(
                        ".png", cv2.cvtColor(a, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1]
                    )[1].tobytes()
                )
            )(_cv2_setup(m)),
        ),
        _optional("fpng (py-fpng-nb)", "fpng", lambda m: lambda a: m.from_ndarray(a)),
    ]
    png_small = Job("png-small", "PNG encode, small-file setting (lossless)", "png")
    png_small.candidates = [
        Candidate(
            "Pillow compress_level=6 (zlib default)", lambda a: _pillow_save(a, "PNG", compress_level=6)
        ),
        Candidate("Pillow compress_level=9", lambda a: _pillow_save(a, "PNG", compress_level=9)),
        _optional("Up filter + zlib-ng level 6", "zlib_ng.zlib_ng", lambda m: _up_png(m.zlib_ng.compress, 6)),
        _optional("Up filter + zlib-ng level 9", "zlib_ng.zlib_ng", lambda m: _up_png(m.zlib_ng.compress, 9)),
        _optional("imagecodecs libpng level 6", "imagecodecs", lambda m: lambda a: m.png_encode(a, level=6)),
        _optional("imagecodecs libpng level 9", "imagecodecs", lambda m: lambda a: m.png_encode(a, level=9)),
        _optional(
            "OpenCV imencode level 6",
            "cv2",
            lambda m: (
                lambda cv2: (
                    lambda a: cv2.imencode(
                        ".png", cv2.cvtColor(a, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 6]
                    )[1].tobytes()
                )
            )(_cv2_setup(m)),
        ),
    ]
    jpeg = Job("jpeg", f"JPEG encode, quality {QUALITY}, 4:2:0", "lossy")
    jpeg.candidates = [
        Candidate("Pillow (before)", lambda a: _pillow_save(a, "JPEG", quality=QUALITY)),
        _optional(
            "simplejpeg 4:2:0",
            "simplejpeg",
            lambda m: lambda a: m.encode_jpeg(a, quality=QUALITY, colorspace="RGB", colorsubsampling="420"),
        ),
        _optional(
            "imagecodecs jpeg8 4:2:0",
            "imagecodecs",
            lambda m: lambda a: m.jpeg8_encode(a, level=QUALITY, subsampling=(2, 2)),
        ),
        _optional(
            "OpenCV imencode",
            "cv2",
            lambda m: (
                lambda cv2: (
                    lambda a: cv2.imencode(
                        ".jpg", cv2.cvtColor(a, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, QUALITY]
                    )[1].tobytes()
                )
            )(_cv2_setup(m)),
        ),
    ]
    webp = Job("webp", f"WebP encode, lossy quality {QUALITY}", "lossy")
    webp.candidates = [
        Candidate("Pillow method 4 (before)", lambda a: _pillow_save(a, "WEBP", quality=QUALITY)),
        Candidate("Pillow method 2", lambda a: _pillow_save(a, "WEBP", quality=QUALITY, method=2)),
        Candidate("Pillow method 0", lambda a: _pillow_save(a, "WEBP", quality=QUALITY, method=0)),
        _optional(
            "imagecodecs webp method 4",
            "imagecodecs",
            lambda m: lambda a: m.webp_encode(a, level=QUALITY, lossless=False, method=4, numthreads=1),
        ),
        _optional(
            "OpenCV imencode",
            "cv2",
            lambda m: (
                lambda cv2: (
                    lambda a: cv2.imencode(
                        ".webp", cv2.cvtColor(a, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_WEBP_QUALITY, QUALITY]
                    )[1].tobytes()
                )
            )(_cv2_setup(m)),
        ),
    ]
    png_decode = Job(
        "png-decode",
        "PNG decode (/upscale input)",
        "decode",
        source=lambda a: _pillow_save(a, "PNG", compress_level=6),
    )
    png_decode.candidates = [
        _optional("service decode_image (Pillow: before and after)", "service.decode", _service_decode),
        Candidate("Pillow alone", _pillow_open),
        _optional("pyspng", "pyspng", lambda m: lambda d: m.load(d)),
        _optional("imagecodecs libpng", "imagecodecs", lambda m: lambda d: m.png_decode(d)),
        _optional("imagecodecs libspng", "imagecodecs", lambda m: lambda d: m.spng_decode(d)),
        _optional(
            "OpenCV imdecode",
            "cv2",
            lambda m: (
                lambda cv2: (
                    lambda d: cv2.cvtColor(
                        cv2.imdecode(np.frombuffer(d, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB
                    )
                )
            )(_cv2_setup(m)),
        ),
    ]
    jpeg_decode = Job(
        "jpeg-decode",
        "JPEG decode (/upscale input)",
        "decode",
        source=lambda a: _pillow_save(a, "JPEG", quality=QUALITY),
    )
    jpeg_decode.candidates = [
        Candidate("Pillow (before)", _pillow_open),
        _optional("service decode_image (after: simplejpeg)", "service.decode", _service_decode),
        _optional("simplejpeg", "simplejpeg", lambda m: lambda d: m.decode_jpeg(d, colorspace="RGB")),
        _optional("imagecodecs jpeg8", "imagecodecs", lambda m: lambda d: m.jpeg8_decode(d)),
        _optional(
            "OpenCV imdecode",
            "cv2",
            lambda m: (
                lambda cv2: (
                    lambda d: cv2.cvtColor(
                        cv2.imdecode(np.frombuffer(d, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB
                    )
                )
            )(_cv2_setup(m)),
        ),
    ]
    return [png_fast, png_small, jpeg, webp, png_decode, jpeg_decode]


# -- checking -------------------------------------------------------------------------------------


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 images, dB (inf when equal)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def check(job: Job, candidate: Candidate, image: np.ndarray) -> dict[str, Any]:
    """What the candidate's output is worth: bytes and exactness (see the module docstring)."""
    assert candidate.run is not None
    if job.kind == "decode":
        assert job.source is not None
        data = job.source(image)
        decoded = np.asarray(candidate.run(data))
        reference = _pillow_open(data)
        if decoded.shape != reference.shape:
            return {"bytes": len(data), "verdict": f"shape {decoded.shape} != Pillow's {reference.shape}"}
        diff = np.abs(decoded.astype(np.int16) - reference.astype(np.int16))
        differing = int(np.count_nonzero(diff.any(axis=-1)))
        verdict = (
            "= Pillow"
            if differing == 0
            else f"{differing} px ≠ Pillow ({differing / diff[..., 0].size:.2%}), max {int(diff.max())}"
        )
        return {
            "bytes": len(data),
            "verdict": verdict,
            "differing_pixels": differing,
            "max_diff": int(diff.max()),
        }
    data = candidate.run(image)
    decoded = _pillow_open(data)
    if job.kind == "png":
        exact = decoded.shape == image.shape and bool(np.array_equal(decoded, image))
        return {"bytes": len(data), "verdict": "exact" if exact else "NOT EXACT", "exact": exact}
    reference = _pillow_open(job.candidates[0].run(image)) if job.candidates[0].run else decoded
    largest = int(np.abs(decoded.astype(np.int16) - reference.astype(np.int16)).max())
    quality = psnr(decoded, image)
    same = "= Pillow's pixels" if largest == 0 else f"max {largest} from Pillow's"
    return {
        "bytes": len(data),
        "verdict": f"{quality:.2f} dB, {same}",
        "psnr_db": quality,
        "max_diff": largest,
    }


# -- timing ---------------------------------------------------------------------------------------


def window(run: Callable[[Any], Any], argument: Any, seconds: float) -> tuple[float, float]:
    """Wall and process-CPU milliseconds per call over one window of at least `seconds` and two calls
    (one call when it alone takes four windows: the slowest settings at 1024²)."""
    calls = 0
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    while True:
        run(argument)
        calls += 1
        elapsed = time.perf_counter() - wall_start
        if (calls >= 2 and elapsed >= seconds) or elapsed >= 4 * seconds:
            break
    cpu = time.process_time() - cpu_start
    return elapsed / calls * 1000, cpu / calls * 1000


def measure(
    job: Job, images: dict[int, np.ndarray], sizes: tuple[int, ...], rounds: int, seconds: float
) -> dict[str, Any]:
    """Every available candidate of `job` at every size: rounds of alternated windows, and the checks."""
    available = [c for c in job.candidates if c.run is not None]
    result: dict[str, Any] = {"job": job.key, "title": job.title, "sizes": {}}
    machine_before, load_before = machine_cpu(), os.getloadavg()[0]
    for size in sizes:
        image = images[size]
        argument = job.source(image) if job.source else image
        for candidate in available:  # one untimed call each: imports, tables, first allocations
            assert candidate.run is not None
            candidate.run(argument)
        walls: dict[str, list[float]] = {c.name: [] for c in available}
        cpus: dict[str, list[float]] = {c.name: [] for c in available}
        for round_index in range(rounds):
            shift = round_index % len(available)
            for candidate in available[shift:] + available[:shift]:
                assert candidate.run is not None
                wall, cpu = window(candidate.run, argument, seconds)
                walls[candidate.name].append(wall)
                cpus[candidate.name].append(cpu)
        result["sizes"][size] = {
            c.name: {"wall_ms": walls[c.name], "cpu_ms": cpus[c.name], **check(job, c, image)}
            for c in available
        }
    result["loadavg"] = [load_before, os.getloadavg()[0]]
    result["machine_busy_cores"] = busy_fraction(machine_before, machine_cpu()) * (os.cpu_count() or 1)
    result["skipped"] = {c.name: c.missing for c in job.candidates if c.run is None}
    return result


# -- reporting ------------------------------------------------------------------------------------


def _ms(value: float) -> str:
    return f"{value:.3g}" if value < 100 else f"{value:,.0f}"


def table(result: dict[str, Any]) -> str:
    """One job's Markdown table: size, candidate, ms per image (median, min–max), CPU ms, bytes, check."""
    load = result["loadavg"]
    lines = [
        f"**{result['title']}** (load average {load[0]:.1f} → {load[1]:.1f}; "
        f"machine busy {result['machine_busy_cores']:.2f} of {os.cpu_count()} cores, this run's one "
        "included)",
        "",
        "| size | candidate | ms/image median (min–max) | CPU ms | ÷ before | bytes | check |",
        "|---|---|---|---|---|---|---|",
    ]
    for size, by_candidate in result["sizes"].items():
        before = statistics.median(next(iter(by_candidate.values()))["wall_ms"])
        for name, cell in by_candidate.items():
            wall = cell["wall_ms"]
            median = statistics.median(wall)
            lines.append(
                f"| {size}² | {name} | {_ms(median)} ({_ms(min(wall))}–{_ms(max(wall))}) | "
                f"{_ms(statistics.median(cell['cpu_ms']))} | {before / median:.2f}× | "
                f"{cell['bytes']:,} | {cell['verdict']} |"
            )
    for name, why in result["skipped"].items():
        lines.append(f"\nskipped: {name}: {why}")
    return "\n".join(lines)


def versions() -> dict[str, str]:
    """Versions of every candidate library importable here."""
    import importlib.metadata

    found = {}
    for package in (
        "pillow",
        "numpy",
        "simplejpeg",
        "imagecodecs",
        "opencv-python-headless",
        "pyspng",
        "fpng",
    ):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--models", type=Path, default=ROOT / "models", help="the default repository")
    parser.add_argument("--rounds", type=int, default=5, help="windows per candidate and size (≥ 5)")
    parser.add_argument("--window", type=float, default=0.1, help="seconds per window (at least 2 calls)")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), choices=SIZES)
    parser.add_argument("--jobs", nargs="+", help="only these jobs (png-fast, png-small, jpeg, webp, …)")
    parser.add_argument("--json", type=Path, help="write every window here")
    args = parser.parse_args(argv)
    images = load_images(args.models)
    started = time.time()
    print(f"versions: {versions()}; python {sys.version.split()[0]}; {os.cpu_count()} cores\n", flush=True)
    results = []
    for job in jobs():
        if args.jobs and job.key not in args.jobs:
            continue
        result = measure(job, images, tuple(args.sizes), args.rounds, args.window)
        results.append(result)
        print(table(result) + "\n", flush=True)
    print(f"{time.time() - started:.0f} s", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"versions": versions(), "results": results}, indent=1, default=str))


if __name__ == "__main__":
    main()
