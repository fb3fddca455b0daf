"""What the protocol guards cost: the product's guarded httptools protocol beside plain uvicorn servers.

Three servers run the same app (the product's `create_app`, the same models) and differ only in
the HTTP protocol under it:

- `guarded`: `service.http_protocol.GuardedHttpToolsProtocol`, what `gan-serve` runs (header size,
  count and time limits, body time and streamed size limits, JSON protocol errors);
- `httptools`: uvicorn's httptools protocol as it ships (none of those limits);
- `h11`: uvicorn's pure-Python h11 protocol, whose only limit is `h11_max_incomplete_event_size`.

A closed-loop client (`bench.load`) drives each in turn, in short windows alternated over several
rounds, on `GET /health/live` (protocol and framework only) and `POST /generate` of one small image.
Prints requests/s per server and the ratios guarded ÷ httptools and h11 ÷ httptools (median and
min–max over rounds), with the machine's load. A script, not a test: timings are never asserted.

    .venv/bin/python bench/protocol_guard.py --rounds 5 --seconds 3 --clients 16
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.load import Call, run_load  # noqa: E402

VARIANTS = ("guarded", "httptools", "h11")


def serve(variant: str, models: Path, port: int) -> None:
    """Run one server in this process (the `--serve` mode the benchmark starts in subprocesses)."""
    import uvicorn

    from service.app import create_app
    from service.cli import connection_limits
    from service.http_protocol import protocol_with
    from service.settings import Settings

    settings = Settings(models_dir=models, device="cpu", log_level="WARNING")
    app = create_app(settings)
    http: object = {"guarded": protocol_with(connection_limits(settings)), "httptools": "httptools"}.get(
        variant, "h11"
    )
    uvicorn.run(app, host="127.0.0.1", port=port, http=http, log_level="warning", access_log=False)  # type: ignore[arg-type]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"a server exited with {process.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/ready").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise SystemExit("a server did not get ready in 120 s")


def _models(path: str | None) -> Path:
    if path:
        return Path(path)
    from tests.service.conftest import build_repository

    repo = Path(tempfile.mkdtemp(prefix="protocol-guard-"))
    build_repository(repo)
    return repo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="model repository (default: the tests' small ONNX models)")
    parser.add_argument("--model", default="rgb-gen", help="generator for the /generate windows")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--serve", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    models = _models(args.models)
    if args.serve:
        serve(args.serve, models, args.port)
        return

    ports = {variant: _free_port() for variant in VARIANTS}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    servers = {
        variant: subprocess.Popen(
            [sys.executable, __file__, "--serve", variant, "--port", str(port), "--models", str(models)],
            env=env,
        )
        for variant, port in ports.items()
    }
    try:
        for variant, port in ports.items():
            _wait_ready(port, servers[variant])
        calls = {
            "GET /health/live": lambda port: Call("GET", f"http://127.0.0.1:{port}/health/live", 0, 0),
            "POST /generate": lambda port: Call(
                "POST", f"http://127.0.0.1:{port}/generate", 1, 0, json={"model": args.model, "seed": 1}
            ),
        }
        rates: dict[tuple[str, str], list[float]] = {}
        loads: list[float] = []
        for round_index in range(args.rounds):
            order = VARIANTS if round_index % 2 == 0 else VARIANTS[::-1]
            for label, make in calls.items():
                for variant in order:
                    result = run_load(
                        variant,
                        make(ports[variant]),
                        concurrency=args.clients,
                        max_requests=10**9,
                        max_seconds=args.seconds,
                        warmup=args.clients,
                    )
                    if result.errors:
                        raise SystemExit(f"{variant} {label}: {result.errors} errors ({result.error_sample})")
                    rates.setdefault((label, variant), []).append(result.requests_per_s)
                    loads.append(os.getloadavg()[0])
        print(
            f"{args.rounds} rounds of {args.seconds:g}-s windows, {args.clients} clients, "
            f"{os.cpu_count()} cores; 1-min load during the run {min(loads):.2f}–{max(loads):.2f}"
        )
        for label in calls:
            print(f"\n{label}")
            print(f"  {'server':<10} {'req/s median':>13} {'min–max':>17}   ÷ httptools (median, min–max)")
            base = rates[(label, "httptools")]
            for variant in VARIANTS:
                values = rates[(label, variant)]
                ratios = [v / b for v, b in zip(values, base, strict=True)]
                print(
                    f"  {variant:<10} {statistics.median(values):>13.0f} "
                    f"{min(values):>8.0f}–{max(values):<8.0f}   "
                    f"{statistics.median(ratios):.3f} ({min(ratios):.3f}–{max(ratios):.3f})"
                )
    finally:
        for process in servers.values():
            process.terminate()
        for process in servers.values():
            process.wait(30)


if __name__ == "__main__":
    main()
