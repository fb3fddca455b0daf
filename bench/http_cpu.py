"""CPU HTTP benchmark: /generate and /upscale over real HTTP next to raw `session.run` on the same model.

    .venv/bin/python bench/http_cpu.py                  # builds a throwaway repository, ~2 minutes
    .venv/bin/python bench/http_cpu.py --repo models --generator dcgan-cifar10 --upscaler srgan-x4

It starts `gan-serve` as a subprocess on a free port, sends requests from one client (sequential:
latency) and from several threads (throughput), and times `session.run` on the same `model.onnx`,
same batch, in this process while the server is idle. The ratio column is HTTP p50 / raw p50: the
cost of HTTP, JSON parsing, latent drawing, pixel mapping and PNG encoding on top of the model.
Prints a Markdown table (docs/benchmark-cpu.md records one run). Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


@dataclass
class Timing:
    """Latencies (seconds) of one measured point and how many images each call produced."""

    latencies: list[float]
    images_per_call: int
    elapsed: float

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) * 1000

    @property
    def images_per_second(self) -> float:
        return len(self.latencies) * self.images_per_call / self.elapsed


def rate(value: float) -> str:
    """Images per second with enough digits to compare slow points too."""
    return f"{value:.0f}" if value >= 10 else f"{value:.2f}"


def percentiles(timing: Timing) -> str:
    """`p50 / p95 / p99` in milliseconds."""
    return " / ".join(f"{timing.percentile(q):.2f}" for q in (50, 95, 99))


def measure(call: Callable[[], None], seconds: float, images: int, threads: int = 1) -> Timing:
    """Call `call` in a closed loop from `threads` threads for `seconds` (after 3 warm-up calls)."""
    for _ in range(3):
        call()
    deadline = time.perf_counter() + seconds

    def loop() -> list[float]:
        latencies = []
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            call()
            latencies.append(time.perf_counter() - start)
        return latencies

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(lambda _: loop(), range(threads)))
    elapsed = time.perf_counter() - start
    return Timing([x for r in results for x in r], images, elapsed)


def build_repository(repo: Path, srgan_blocks: int) -> tuple[str, str]:
    """Export dcgan-cifar10 and srgan-x4 (random weights) with the real export tool."""
    from export.api import export_keras_model
    from export.architectures import build

    export_keras_model(
        build("dcgan-cifar10"), repo, "dcgan-cifar10", architecture="dcgan-cifar10", preview=False
    )
    export_keras_model(
        build("srgan-x4", blocks=srgan_blocks, filters=64),
        repo,
        "srgan-x4",
        architecture="srgan-x4",
        preview=False,
    )
    return "dcgan-cifar10", "srgan-x4"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(repo: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "GAN_SERVE_LOG_LEVEL": "WARNING", "GAN_SERVE_DEVICE": "cpu", "GAN_SERVE_MAX_N": "64"}
    command = [
        str(Path(sys.executable).parent / "gan-serve"),
        "serve",
        "--models",
        str(repo),
        "--port",
        str(port),
    ]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/ready").status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("gan-serve did not become ready within 120 s")


def png_of(pixels: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repo", type=Path, help="existing repository (default: build a throwaway one)")
    parser.add_argument("--generator", default="dcgan-cifar10")
    parser.add_argument("--upscaler", default="srgan-x4")
    parser.add_argument("--srgan-blocks", type=int, default=4, help="residual blocks when building srgan-x4")
    parser.add_argument("--upscale-size", type=int, default=64, help="input edge for /upscale (one tile)")
    parser.add_argument("--seconds", type=float, default=5.0, help="per measured point")
    parser.add_argument("--threads", type=int, default=4, help="client threads for the throughput rows")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        repo = args.repo
        if repo is None:
            repo = Path(scratch) / "models"
            print("building a throwaway repository with the export tool...", file=sys.stderr, flush=True)
            args.generator, args.upscaler = build_repository(repo, args.srgan_blocks)
        run(repo, args)


def run(repo: Path, args: argparse.Namespace) -> None:
    generator = ort.InferenceSession(
        str(repo / args.generator / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    upscaler = ort.InferenceSession(
        str(repo / args.upscaler / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    g_in, g_out = generator.get_inputs()[0], generator.get_outputs()[0].name
    u_in, u_out = upscaler.get_inputs()[0], upscaler.get_outputs()[0].name
    latent_size = int(g_in.shape[1])
    edge = args.upscale_size
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (edge, edge, 3), dtype=np.uint8)
    upload = png_of(image)

    rows: list[tuple[str, Timing, Timing, Timing]] = []
    load = os.getloadavg()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(repo, port)
    try:
        with httpx.Client(base_url=url, timeout=120) as http:
            for n in (1, 16, 64):
                latents = rng.standard_normal((n, latent_size), dtype=np.float32)

                def raw(latents: np.ndarray = latents) -> None:
                    generator.run([g_out], {g_in.name: latents})

                def over_http(n: int = n) -> None:
                    response = http.post("/generate", json={"model": args.generator, "n": n, "seed": 1})
                    response.raise_for_status()

                raw_timing = measure(raw, args.seconds, n)
                http_timing = measure(over_http, args.seconds, n)
                http_parallel = measure(over_http, args.seconds, n, threads=args.threads)
                rows.append(
                    (
                        f"/generate n={n} (png{', zip' if n > 1 else ''})",
                        raw_timing,
                        http_timing,
                        http_parallel,
                    )
                )

            tile = (image.astype(np.float32) / 255.0)[None]

            def raw_upscale() -> None:
                upscaler.run([u_out], {u_in.name: tile})

            def http_upscale() -> None:
                response = http.post(
                    "/upscale",
                    content=upload,
                    headers={"content-type": "image/png"},
                    params={"model": args.upscaler},
                )
                response.raise_for_status()

            rows.append(
                (
                    f"/upscale {edge}x{edge} -> {4 * edge}x{4 * edge} (png)",
                    measure(raw_upscale, args.seconds, 1),
                    measure(http_upscale, args.seconds, 1),
                    measure(http_upscale, args.seconds, 1, threads=args.threads),
                )
            )
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)

    print(
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"onnxruntime {ort.__version__} (CPUExecutionProvider); load average before the run "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min)"
    )
    print(
        f"Models: {args.generator}, {args.upscaler} ({repo}); {args.seconds:.0f} s per point, "
        f"throughput rows with {args.threads} client threads\n"
    )
    print(
        "| request | raw p50 / p95 / p99 ms | raw img/s | HTTP p50 / p95 / p99 ms | HTTP img/s (1 client) "
        f"| HTTP img/s ({args.threads} clients) | HTTP p50 / raw p50 |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, raw_t, http_t, parallel_t in rows:
        print(
            f"| {name} | {percentiles(raw_t)} | {rate(raw_t.images_per_second)} | {percentiles(http_t)} "
            f"| {rate(http_t.images_per_second)} | {rate(parallel_t.images_per_second)} "
            f"| {http_t.percentile(50) / raw_t.percentile(50):.1f}x |"
        )


if __name__ == "__main__":
    main()
