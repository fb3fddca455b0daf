"""Load on a public host: many clients on a mix of /generate and /upscale, and what the service keeps.

Starts `gan-serve` on CPU (the default repository unless `--models`), warms it, then runs
`--clients` closed-loop clients for `--seconds`, each picking at random a `/generate` of n in
{1, 2, 4, 8, 16} or an `/upscale` of a 64² to 1024² image, while a prober asks `/health/ready`
five times a second and the server's RSS is sampled every second. The prober runs in a process of
its own: in the clients' event loop, 64 httpx clients' CPU would delay its own timing. Reports,
per request kind: answers by status, latency of the served ones, the slowest answer of any kind;
then the checks a public host needs:

- server errors (5xx other than 503): 0;
- no answer later than the request deadline (plus one running batch): work that cannot finish in
  time gets an early 503 with Retry-After instead;
- RSS at the end within +20 % of RSS after warm-up;
- `/health/ready` p99 under 0.5 s while the service is saturated.

A script, not a test: it prints figures and PASS/FAIL per check, and exits 1 when a check fails.

    .venv/bin/python bench/public_load.py                 # 64 clients, 60 s, models/
    .venv/bin/python bench/public_load.py --clients 16 --seconds 20
    .venv/bin/python bench/public_load.py --tree /tmp/before   # the service/ of another source tree
"""

from __future__ import annotations

import argparse
import asyncio
import io
import multiprocessing
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
GENERATE_N = (1, 2, 4, 8, 16)
UPSCALE_SIDES = (64, 128, 256, 512, 1024)
#: Seconds of quiet before each RSS figure: above the service's 2-s idle release, plus its 1-s poll.
SETTLE_S = 5.0


@dataclass(frozen=True)
class Answer:
    """One request's outcome."""

    kind: str
    status: int
    seconds: float
    code: str
    retry_after: str | None


def _natural_png(side: int, seed: int) -> bytes:
    """A smooth, photo-like test image (gradients and blobs compress and upscale like real ones)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side] / side
    channels = []
    for _ in range(3):
        phase = rng.uniform(0, 6.28, 3)
        plane = np.sin(6 * x + phase[0]) + np.cos(5 * y + phase[1]) + np.sin(9 * (x + y) + phase[2])
        channels.append(plane)
    pixels = np.stack(channels, axis=-1)
    pixels = (pixels - pixels.min()) / (np.ptp(pixels) + 1e-9) * 255
    pixels += rng.normal(0, 4, pixels.shape)
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(out, "PNG")
    return out.getvalue()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def start_server(
    models: Path, port: int, tree: Path | None, log_level: str, log: Path
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "GAN_SERVE_LOG_LEVEL": log_level}
    if tree is not None:
        # That tree's `service` package ahead of the editable install of this checkout.
        env["PYTHONPATH"] = str(tree)
    command = [sys.executable, "-m", "service.cli", "--models", str(models), "--port", str(port)]
    command += ["--device", "cpu"]
    with log.open("wb") as stderr:
        return subprocess.Popen(
            command,
            env=env,
            cwd=tree or ROOT,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def wait_ready(base: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"gan-serve exited with {server.returncode}")
        try:
            if httpx.get(f"{base}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit("gan-serve was not ready within 300 s")


async def _send(client: httpx.AsyncClient, kind: str, images: dict[int, bytes]) -> httpx.Response:
    name, _, value = kind.partition(" ")
    if name == "generate":
        return await client.post("/generate", json={"n": int(value)})
    side = int(value.split("x")[0])
    return await client.post("/upscale", content=images[side], headers={"content-type": "image/png"})


async def _client(
    base: str, kinds: list[str], images: dict[int, bytes], end: float, answers: list[Answer], seed: int
) -> None:
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=base, timeout=180) as client:
        while time.monotonic() < end:
            kind = rng.choice(kinds)
            started = time.monotonic()
            try:
                response = await _send(client, kind, images)
                code = ""
                if response.status_code >= 400:
                    try:
                        code = str(response.json()["error"]["code"])
                    except (ValueError, KeyError, TypeError):
                        code = "not-json"
                answers.append(
                    Answer(
                        kind,
                        response.status_code,
                        time.monotonic() - started,
                        code,
                        response.headers.get("retry-after"),
                    )
                )
            except httpx.HTTPError as exc:
                answers.append(Answer(kind, 0, time.monotonic() - started, type(exc).__name__, None))


def _probe(base: str, seconds: float, results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """Ask /health/ready five times a second for `seconds`; put (latencies, failed statuses) on `results`."""
    latencies: list[float] = []
    failures: list[int] = []
    end = time.monotonic() + seconds
    with httpx.Client(base_url=base, timeout=10) as client:
        while time.monotonic() < end:
            started = time.monotonic()
            try:
                response = client.get("/health/ready")
                latencies.append(time.monotonic() - started)
                if response.status_code != 200:
                    failures.append(response.status_code)
            except httpx.HTTPError:
                latencies.append(time.monotonic() - started)
                failures.append(0)
            time.sleep(max(0.0, 0.2 - (time.monotonic() - started)))
    results.put((latencies, failures))


async def run(
    base: str, clients: int, seconds: float, images: dict[int, bytes]
) -> tuple[list[Answer], list[float], list[int]]:
    kinds = [f"generate {n}" for n in GENERATE_N] + [f"upscale {s}x{s}" for s in UPSCALE_SIDES]
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    prober = context.Process(target=_probe, args=(base, seconds, results), daemon=True)
    prober.start()
    end = time.monotonic() + seconds
    answers: list[Answer] = []
    await asyncio.gather(*(_client(base, kinds, images, end, answers, seed) for seed in range(clients)))
    health, failures = await asyncio.to_thread(results.get, True, 60)
    prober.join(10)
    return answers, health, failures


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument(
        "--deadline",
        type=float,
        default=50,
        help="the server's request deadline (GAN_SERVE_REQUEST_TIMEOUT_S)",
    )
    parser.add_argument(
        "--grace", type=float, default=5, help="seconds past the deadline one running batch may take"
    )
    parser.add_argument(
        "--tree", type=Path, help="serve the service/ package of this source tree (default: this checkout)"
    )
    parser.add_argument(
        "--log-level", default="WARNING", help="the server's log level (INFO: an access line per request)"
    )
    args = parser.parse_args()
    if not (args.models / "faces64").exists() and args.models == ROOT / "models":
        raise SystemExit("build the default repository first: make models")

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = ROOT / "bench" / "results" / "public_load-server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    server = start_server(args.models, port, args.tree, args.log_level, log)
    try:
        wait_ready(base, server)
        images = {side: _natural_png(side, side) for side in UPSCALE_SIDES}
        # Warm-up: each kind once, so RSS after warm-up includes every shape's arena.
        for side in UPSCALE_SIDES:
            httpx.post(
                f"{base}/upscale", content=images[side], headers={"content-type": "image/png"}, timeout=300
            )
        for n in GENERATE_N:
            httpx.post(f"{base}/generate", json={"n": n}, timeout=60)
        # Both RSS figures are taken once the service has been quiet SETTLE_S: what it holds, not a
        # run's working set that an idle session hands back (GAN_SERVE_ARENA_IDLE_RELEASE_S).
        time.sleep(SETTLE_S)
        rss_start = _rss_mib(server.pid)
        samples: list[float] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(1.0):
                samples.append(_rss_mib(server.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        load_before = os.getloadavg()
        started = time.monotonic()
        answers, health, failures = asyncio.run(run(base, args.clients, args.seconds, images))
        wall = time.monotonic() - started
        time.sleep(SETTLE_S)
        stop.set()
        rss_end = _rss_mib(server.pid)
        load_after = os.getloadavg()
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()

    print(
        f"{args.clients} clients for {args.seconds:g} s ({wall:.0f} s until the last answer) on "
        f"{os.cpu_count()} cores; 1-min load {load_before[0]:.2f} before, {load_after[0]:.2f} after; "
        f"service/ from {args.tree or ROOT}, log level {args.log_level}"
    )
    print(f"\n{'request':<16} {'answers':>7}  {'by status':<34} {'served p50':>10} {'p99':>7} {'slowest':>8}")
    by_kind: dict[str, list[Answer]] = defaultdict(list)
    for answer in answers:
        by_kind[answer.kind].append(answer)
    for kind in sorted(by_kind, key=lambda k: (k.split()[0], int(k.split()[1].split("x")[0]))):
        group = by_kind[kind]
        statuses = Counter(a.status for a in group)
        latencies = [a.seconds for a in group if a.status == 200]
        shown = ", ".join(f"{status}: {count}" for status, count in sorted(statuses.items()))
        print(
            f"{kind:<16} {len(group):>7}  {shown:<34} {_percentile(latencies, 50):>9.2f}s "
            f"{_percentile(latencies, 99):>6.2f}s {max(a.seconds for a in group):>7.2f}s"
        )
    codes = Counter(a.code for a in answers if a.code)
    print(
        "\nrefusals by code: "
        + (", ".join(f"{code}: {count}" for code, count in codes.most_common()) or "none")
    )

    server_errors = [a for a in answers if (a.status >= 500 and a.status != 503) or a.status == 0]
    late = [a for a in answers if a.seconds > args.deadline + args.grace]
    shed = [a for a in answers if a.status == 503]
    shed_without_retry = [a for a in shed if not a.retry_after]
    served = sum(a.status == 200 for a in answers)
    generated = sum(
        int(a.kind.split()[1]) for a in answers if a.status == 200 and a.kind.startswith("generate")
    )
    rss_peak = max(samples, default=rss_end)
    health_p99 = _percentile(health, 99)
    print(
        f"served {served} of {len(answers)} ({served / max(len(answers), 1):.0%}); 503 {len(shed)} "
        f"(without Retry-After: {len(shed_without_retry)}); generated images/s {generated / wall:.1f}"
    )
    print(
        f"RSS after warm-up {rss_start:.0f} MiB, peak {rss_peak:.0f} MiB, end {rss_end:.0f} MiB "
        f"({rss_end / rss_start - 1:+.1%})"
    )
    print(
        f"/health/ready: {len(health)} probes, p50 {_percentile(health, 50) * 1000:.1f} ms, "
        f"p99 {health_p99 * 1000:.1f} ms, max {max(health, default=0) * 1000:.1f} ms, "
        f"not 200: {len(failures)}"
    )
    checks = {
        "no server errors (5xx but 503, or no answer)": not server_errors,
        f"no answer later than the deadline + {args.grace:g} s": not late,
        "every 503 carries Retry-After": not shed_without_retry,
        "RSS at the end within +20 % of after warm-up": rss_end <= rss_start * 1.2,
        "/health/ready p99 under 0.5 s": health_p99 < 0.5 and not failures,
    }
    print()
    for check, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {check}")
    if server_errors:
        print("server errors:", Counter((a.kind, a.status, a.code) for a in server_errors).most_common(5))
    if late:
        print("late:", sorted(round(a.seconds, 1) for a in late)[-5:], Counter(a.kind for a in late))
    median = statistics.median([a.seconds for a in answers if a.status == 200] or [0])
    print(f"(median served latency over all kinds: {median:.2f} s)")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
