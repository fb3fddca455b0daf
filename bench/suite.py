"""The benchmark suite: the real service beside raw onnxruntime and the previous deployment, in one run.

    .venv/bin/python bench/suite.py --quick            # CPU, about three minutes on 2 cores
    .venv/bin/python bench/suite.py --device cuda      # on a CUDA host (onnxruntime-gpu installed)

It exports one generator with the real export tool (random weights, a built-in architecture),
starts `gan-serve` as a subprocess (batching on, then off) and the Flask baseline
(bench/baseline_flask.py), drives each with a closed-loop httpx load generator on loopback, and
measures raw onnxruntime on the same model file, batch and device in this process. It prints a
table of ratios and of every load point, writes `bench/results/<device>-<time>.json` and a
throughput-vs-concurrency plot, and replaces the generated section of docs/performance.md.
Servers run one at a time and raw onnxruntime runs while none is loaded, so nothing measured
shares the CPU with anything but the load generator.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from load import Call, LoadResult, run_load  # noqa: E402
from report import render_tables, write_docs, write_plot  # noqa: E402

RESULTS = BENCH / "results"


@dataclass
class Plan:
    """What one run measures; `--quick` shortens every point, never drops a comparison."""

    device: str
    architecture: str
    seconds: float
    max_requests: int
    concurrency: list[int]
    baseline_concurrency: list[int]
    n_large: int
    raw_seconds: float
    formats_n: int = 16
    formats_concurrency: int = 4
    client: str = "raw"
    upscaler: str | None = "srgan-x4"
    upscale_edge: int = 64
    results: list[LoadResult] = field(default_factory=list)


# -- the model ----------------------------------------------------------------------------------


def prepare_models(work: Path, generator: str, upscaler: str | None) -> tuple[Path, Path]:
    """Export the built-ins with random weights (fixed seed) once; return (repo, generator's .keras file)."""
    repo = work / "repo"
    keras_file = work / f"{generator}.keras"
    wanted = [generator] + ([upscaler] if upscaler else [])
    missing = [name for name in wanted if not (repo / name / "model.json").is_file()]
    if not missing and keras_file.is_file():
        return repo, keras_file
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from export.api import export_keras_model
    from export.architectures import build

    for name in wanted:
        keras.utils.set_random_seed(0)
        model = build(name)
        if name in missing:
            shutil.rmtree(repo / name, ignore_errors=True)
            export_keras_model(model, repo, name, architecture=name, demo_weights=True, preview=False)
        if name == generator:
            model.save(keras_file)
    return repo, keras_file


# -- raw onnxruntime ----------------------------------------------------------------------------


def timed_loop(
    step: Callable[[], object], seconds: float, windows: int = 3
) -> tuple[int, float, list[float]]:
    """Call `step` for `seconds` in `windows`; return the best window's (calls, seconds) and every latency.

    The best window, as `timeit` takes the best repeat: on a shared host, other processes only
    ever slow a window down, so the fastest one is closest to what the code itself costs.
    """
    latencies: list[float] = []
    best = (0, math.inf)
    for _ in range(windows):
        calls, begun = 0, time.perf_counter()
        while time.perf_counter() - begun < seconds / windows or calls < 2:
            started = time.perf_counter()
            step()
            latencies.append(time.perf_counter() - started)
            calls += 1
        elapsed = time.perf_counter() - begun
        if calls / elapsed > best[0] / best[1]:
            best = (calls, elapsed)
    return best[0], best[1], latencies


def loop_result(
    label: str,
    calls: int,
    elapsed: float,
    latencies: list[float],
    *,
    images_per_call: int,
    pixels_per_image: int,
    extra: dict[str, Any],
) -> LoadResult:
    """A `LoadResult` for an in-process loop: rates from its calls, percentiles from its latencies."""
    ms = np.array(latencies) * 1000
    images = calls * images_per_call
    return LoadResult(
        label=label,
        concurrency=1,
        requests=len(latencies),
        errors=0,
        seconds=round(elapsed, 3),
        requests_per_s=calls / elapsed,
        images_per_s=images / elapsed,
        megapixels_per_s=images * pixels_per_image / elapsed / 1e6,
        p50_ms=float(np.percentile(ms, 50)),
        p95_ms=float(np.percentile(ms, 95)),
        p99_ms=float(np.percentile(ms, 99)),
        extra=extra,
    )


def raw_session(path: Path, device: str) -> Any:
    """A plain onnxruntime session on `device`, with none of the service's session options."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    providers: list[Any] = ["CPUExecutionProvider"]
    if device == "cuda":
        cuda_options = {"cudnn_conv_algo_search": "HEURISTIC", "prefer_nhwc": "1"}
        providers.insert(0, ("CUDAExecutionProvider", cuda_options))
    return ort.InferenceSession(str(path), options, providers=providers)


def raw_onnxruntime(
    repo: Path, name: str, device: str, batch: int, seconds: float, encode: str | None
) -> LoadResult:
    """The same model file, batch and device, in a plain loop: session.run (+ encoding each image)."""

    from service.card import read_card
    from service.encode import encode_image
    from service.labels import generator_input_width
    from service.pixels import to_uint8

    card = read_card(repo / name)
    session = raw_session(repo / name / card.file, device)
    assert card.height and card.width
    # Conditional graphs take the one-hot class after the latent; random values there time the same.
    width = generator_input_width(card)
    rng = np.random.default_rng(0)

    def step() -> None:
        latents = rng.standard_normal((batch, width), dtype=np.float32)
        out = session.run([card.output_name], {card.input_name: latents})[0]
        if encode is not None:
            pixels = to_uint8(out.reshape(batch, card.height, card.width, card.channels), card.output_range)
            for image in pixels:
                encode_image(image, encode, png_compress_level=1, quality=90)  # type: ignore[arg-type]

    for _ in range(3):
        step()
    label = f"raw onnxruntime batch {batch}" + (f" + {encode} encode" if encode else "")
    return loop_result(
        label,
        *timed_loop(step, seconds),
        images_per_call=batch,
        pixels_per_image=card.height * card.width,
        extra={"kind": "raw", "n": batch, "format": encode or "array", "providers": session.get_providers()},
    )


def raw_upscale(repo: Path, name: str, device: str, edge: int, seconds: float, encode: bool) -> LoadResult:
    """The upscaler's model file on one edge x edge image in a plain loop: session.run (+ PNG encode)."""

    from service.card import read_card
    from service.encode import encode_image
    from service.pixels import from_uint8, to_uint8

    card = read_card(repo / name)
    assert card.scale and card.input_range and card.input_channels
    input_range = card.input_range
    session = raw_session(repo / name / card.file, device)
    pixels = np.random.default_rng(0).integers(0, 256, (1, edge, edge, card.input_channels), dtype=np.uint8)

    def step() -> None:
        out = session.run([card.output_name], {card.input_name: from_uint8(pixels, input_range)})[0]
        if encode:
            encode_image(to_uint8(out[0], card.output_range), "png", png_compress_level=1, quality=90)

    step()
    return loop_result(
        f"raw onnxruntime upscale {edge}²" + (" + png encode" if encode else ""),
        *timed_loop(step, seconds),
        images_per_call=1,
        pixels_per_image=(edge * card.scale) ** 2,
        extra={"kind": "raw-upscale", "edge": edge, "format": "png" if encode else "array"},
    )


def runner_throughput(plan: Plan, repo: Path, generator: str, batch: int) -> list[LoadResult]:
    """The service's own runners (SessionRunner: its session options, I/O binding on CUDA), in-process.

    The same model files and batch as the raw loops above, so the ratio shows what the service's
    session settings cost or gain before any HTTP is involved.
    """
    from concurrent.futures import ThreadPoolExecutor

    from service.labels import generator_input_width
    from service.repository import ModelRepository
    from service.settings import Settings

    settings = Settings.model_validate(
        {
            "models_dir": repo,
            "device": plan.device,
            "batching": False,
            "warmup_batch_sizes": [1, batch],
            "tile_size": plan.upscale_edge,
            "tile_overlap": 0,
            "log_level": "WARNING",
        }
    )
    results = []
    with ThreadPoolExecutor(1) as pool:
        repository = ModelRepository.load(settings, pool)
        jobs: list[tuple[str, Any, np.ndarray, int, dict[str, Any]]] = []
        model = repository.models[generator]
        providers = {name: m.provider for name, m in repository.models.items()}
        assert model.card.height and model.card.width
        width = generator_input_width(model.card)
        latents = np.random.default_rng(0).standard_normal((batch, width), dtype=np.float32)
        gen_pixels = model.card.height * model.card.width
        jobs.append(
            (
                f"service runner batch {batch}",
                model.runner,
                latents,
                gen_pixels,
                {"n": batch, "provider": providers[generator]},
            )
        )
        if plan.upscaler is not None:
            up = repository.models[plan.upscaler]
            assert up.card.scale and up.card.input_channels
            edge = plan.upscale_edge
            tile = np.random.default_rng(0).random((1, edge, edge, up.card.input_channels), dtype=np.float32)
            label = f"service runner upscale {edge}²"
            extra = {"edge": edge, "provider": providers[plan.upscaler]}
            jobs.append((label, up.runner, tile, (edge * up.card.scale) ** 2, extra))
        for label, runner, inputs, pixels, extra in jobs:
            results.append(
                loop_result(
                    label,
                    *timed_loop(functools.partial(runner.run_sync, inputs), plan.raw_seconds),
                    images_per_call=len(inputs),
                    pixels_per_image=pixels,
                    extra={"kind": "runner", **extra},
                )
            )
    return results


# -- servers ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def peak_rss_bytes(pid: int) -> int:
    """Peak resident set (VmHWM) of `pid` and its child processes, from /proc (psutil is not needed)."""
    total = 0
    pids = [pid]
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            children = (task / "children").read_text().split()
            pids.extend(int(c) for c in children)
    for p in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) * 1024
    return total


@contextlib.contextmanager
def server(
    command: list[str], env: dict[str, str], ready_url: str, log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server subprocess, wait until `ready_url` answers 200, stop it (SIGTERM) afterwards."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
        )
        try:
            deadline = time.monotonic() + 180
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"{command[0]} exited with {process.returncode}; see {log_path}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(ready_url, timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{ready_url} not ready after 180 s; see {log_path}")
                time.sleep(0.25)
            yield process
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def generate_call(port: int, model: str, n: int, image_format: str, pixels: int) -> Call:
    def check(content: bytes) -> None:
        if n > 1 and image_format != "npy":
            with zipfile.ZipFile(io.BytesIO(content)) as archive:
                if len(archive.namelist()) != n:
                    raise RuntimeError(f"zip holds {len(archive.namelist())} files, asked for {n}")

    return Call(
        method="POST",
        url=f"http://127.0.0.1:{port}/generate",
        images=n,
        pixels_per_image=pixels,
        json={"model": model, "n": n, "format": image_format},
        check=check,
    )


def measure(plan: Plan, label: str, call: Call, concurrency: int, extra: dict[str, Any]) -> LoadResult:
    result = run_load(
        label,
        call,
        concurrency=concurrency,
        max_requests=plan.max_requests,
        max_seconds=plan.seconds,
        warmup=2 * concurrency,
        client=plan.client,
    )
    result.extra.update(extra)
    plan.results.append(result)
    print(
        f"  {label:<44} c={concurrency:<4} {result.images_per_s:9.1f} img/s  p50 {result.p50_ms:8.1f} ms"
        f"  p99 {result.p99_ms:8.1f} ms  errors {result.errors}",
        flush=True,
    )
    if result.errors:
        print(f"    first error: {result.error_sample}", flush=True)
    return result


def upscale_call(port: int, model: str, edge: int, scale: int) -> Call:
    from PIL import Image

    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 256, (edge, edge, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, "PNG")
    return Call(
        method="POST",
        url=f"http://127.0.0.1:{port}/upscale?model={model}&format=png",
        images=1,
        pixels_per_image=(edge * scale) ** 2,
        content=buffer.getvalue(),
        headers={"Content-Type": "image/png"},
    )


def run_service(
    plan: Plan,
    repo: Path,
    name: str,
    pixels: int,
    batching: bool,
    work: Path,
    upscaler: tuple[str, int] | None,
) -> dict[str, Any]:
    """Start gan-serve with batching on or off and measure every service point for that mode."""
    port = free_port()
    env = {
        "GAN_SERVE_MODELS_DIR": str(repo),
        "GAN_SERVE_HOST": "127.0.0.1",
        "GAN_SERVE_PORT": str(port),
        "GAN_SERVE_DEVICE": plan.device,
        "GAN_SERVE_BATCHING": "true" if batching else "false",
        "GAN_SERVE_LOG_LEVEL": "WARNING",
        "GAN_SERVE_MAX_N": str(max(64, plan.n_large)),
        "GAN_SERVE_MAX_BATCH_SIZE": str(max(64, plan.n_large)),
    }
    mode = "on" if batching else "off"
    # `-m` from the checkout root serves this checkout's code, whatever the venv was installed from.
    command = [sys.executable, "-m", "service.cli"]
    print(f"gan-serve, batching {mode} (port {port})", flush=True)
    with server(
        command, env, f"http://127.0.0.1:{port}/ping", work / f"gan-serve-batching-{mode}.log"
    ) as process:
        for c in plan.concurrency:
            measure(
                plan,
                f"service n=1 jpeg, batching {mode}",
                generate_call(port, name, 1, "jpeg", pixels),
                c,
                {"kind": "service", "batching": batching, "n": 1, "format": "jpeg"},
            )
        if batching:
            for image_format in ("png", "jpeg", "npy"):
                measure(
                    plan,
                    f"service n={plan.formats_n} {image_format}",
                    generate_call(port, name, plan.formats_n, image_format, pixels),
                    plan.formats_concurrency,
                    {"kind": "service", "batching": True, "n": plan.formats_n, "format": image_format},
                )
            measure(
                plan,
                f"service n={plan.n_large} npy",
                generate_call(port, name, plan.n_large, "npy", pixels),
                2,
                {"kind": "service", "batching": True, "n": plan.n_large, "format": "npy"},
            )
            if upscaler is not None:
                up_name, scale = upscaler
                measure(
                    plan,
                    f"service /upscale {plan.upscale_edge}² png",
                    upscale_call(port, up_name, plan.upscale_edge, scale),
                    2,
                    {"kind": "service-upscale", "edge": plan.upscale_edge, "format": "png"},
                )
        rss = peak_rss_bytes(process.pid)
    return {"batching": batching, "peak_rss_bytes": rss}


def run_baseline(plan: Plan, keras_file: Path, pixels: int, work: Path) -> dict[str, Any]:
    """Start the Flask baseline (always CPU: it is what the users ran) and measure it at n=1."""
    port = free_port()
    command = [
        sys.executable,
        str(BENCH / "baseline_flask.py"),
        "--model",
        str(keras_file),
        "--port",
        str(port),
    ]
    print(f"baseline (Flask + keras predict, port {port})", flush=True)
    env = {"TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    with server(command, env, f"http://127.0.0.1:{port}/ping", work / "baseline.log") as process:
        call = Call(
            "GET", f"http://127.0.0.1:{port}/generate", images=1, pixels_per_image=pixels, params={"n": 1}
        )
        for c in plan.baseline_concurrency:
            measure(
                plan,
                "baseline n=1 jpeg (Flask + predict)",
                call,
                c,
                {"kind": "baseline", "n": 1, "format": "jpeg"},
            )
        rss = peak_rss_bytes(process.pid)
    return {"peak_rss_bytes": rss}


# -- main ---------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    import onnxruntime as ort

    info: dict[str, Any] = {
        "cpu_cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "providers_available": ort.get_available_providers(),
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        gpu = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        info["gpu"] = gpu.stdout.strip()
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--quick", action="store_true", help="short points (a few minutes on 2 CPU cores)")
    parser.add_argument(
        "--architecture",
        default=None,
        help="built-in generator (default: dcgan-cifar10 on CPU, dcgan-faces64 on CUDA)",
    )
    parser.add_argument(
        "--client",
        choices=["raw", "httpx"],
        default="raw",
        help="load generator HTTP client: raw (lean, the default) or httpx (~20x its CPU per request)",
    )
    parser.add_argument("--no-upscale", action="store_true", help="skip the srgan-x4 /upscale points")
    parser.add_argument("--no-baseline", action="store_true", help="skip the Flask + Keras baseline")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/performance.md")
    args = parser.parse_args(argv)

    architecture = args.architecture or ("dcgan-faces64" if args.device == "cuda" else "dcgan-cifar10")
    if args.device == "cuda":
        plan = Plan(
            "cuda",
            architecture,
            seconds=10,
            max_requests=200_000,
            concurrency=[1, 16, 64, 256],
            baseline_concurrency=[1, 16],
            n_large=256,
            raw_seconds=5,
            upscale_edge=256,
            formats_n=64,
            formats_concurrency=16,
        )
    else:
        plan = Plan(
            "cpu",
            architecture,
            seconds=10,
            max_requests=50_000,
            concurrency=[1, 4, 16, 64],
            baseline_concurrency=[1, 4, 16],
            n_large=64,
            raw_seconds=5,
        )
    plan.client = args.client
    if args.no_upscale:
        plan.upscaler = None
    if args.quick:
        plan.seconds, plan.raw_seconds = 3, 2

    RESULTS.mkdir(parents=True, exist_ok=True)
    work = RESULTS / "work"
    work.mkdir(exist_ok=True)
    started = time.perf_counter()
    print(f"exporting {architecture}, {plan.upscaler} (random weights) with the export tool", flush=True)
    repo, keras_file = prepare_models(work, architecture, plan.upscaler)
    name = architecture
    from service.card import read_card

    card = read_card(repo / name)
    assert card.height and card.width
    pixels = card.height * card.width
    upscaler: tuple[str, int] | None = None
    if plan.upscaler is not None:
        scale = read_card(repo / plan.upscaler).scale
        assert scale is not None
        upscaler = (plan.upscaler, scale)

    print("raw onnxruntime (same model file, same device, in this process)", flush=True)
    raw: dict[str, LoadResult] = {}
    for batch, encode in ((1, None), (plan.formats_n, None), (plan.n_large, None), (plan.formats_n, "png")):
        result = raw_onnxruntime(repo, name, plan.device, batch, plan.raw_seconds, encode)
        raw[f"{batch}-{encode or 'array'}"] = result
        plan.results.append(result)
        print(
            f"  {result.label:<44}       {result.images_per_s:9.1f} img/s  p50 {result.p50_ms:8.1f} ms",
            flush=True,
        )
    if upscaler is not None:
        for encode_png in (False, True):
            result = raw_upscale(
                repo, upscaler[0], plan.device, plan.upscale_edge, plan.raw_seconds, encode_png
            )
            plan.results.append(result)
            print(f"  {result.label:<44}       {result.megapixels_per_s:9.2f} MP/s", flush=True)
    print("the service's runners, in this process (its session options; no HTTP)", flush=True)
    for result in runner_throughput(plan, repo, name, plan.n_large):
        plan.results.append(result)
        print(
            f"  {result.label:<44}       {result.images_per_s:9.1f} img/s  p50 {result.p50_ms:8.1f} ms",
            flush=True,
        )

    servers = {
        "service_batching_on": run_service(plan, repo, name, pixels, True, work, upscaler),
        "service_batching_off": run_service(plan, repo, name, pixels, False, work, None),
    }
    if not args.no_baseline:
        servers["baseline"] = run_baseline(plan, keras_file, pixels, work)

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    payload = {
        "created": stamp,
        "device": plan.device,
        "model": {
            "architecture": architecture,
            "height": card.height,
            "width": card.width,
            "weights": "random (seed 0)",
            "upscaler": plan.upscaler,
            "upscale_edge": plan.upscale_edge,
        },
        "formats_n": plan.formats_n,
        "quick": args.quick,
        "seconds_per_point": plan.seconds,
        "client": plan.client,
        "machine": machine(),
        "servers": servers,
        "results": [r.as_dict() for r in plan.results],
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    tables = render_tables(payload)
    payload["tables_markdown"] = tables
    json_path = RESULTS / f"{plan.device}-{stamp}.json"
    json_path.write_text(json.dumps(payload, indent=2) + "\n")
    plot_path = write_plot(payload, RESULTS / f"throughput-{plan.device}.png")
    print()
    print(tables)
    print(f"results: {json_path}\nplot: {plot_path}")
    if not args.no_docs:
        docs = write_docs(payload, plot_path, ROOT / "docs")
        print(f"docs: {docs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
