"""Where a request's CPU goes in gan-serve: a py-spy profile of the server under closed-loop load.

Starts `gan-serve` on CPU (the default repository unless `--models`), then drives it with
`bench/load.py`'s closed-loop client (in this process, so its CPU is not in the profile) through
windows of one workload each: `/generate` faces64 n=1 (64x64 PNG) and `/upscale` 64x64 -> 256x256
PNG by default. During each window py-spy (the `bench` extra) samples every thread of the server
(`--rate` per second); samples of a thread waiting (a lock, a work queue, the event loop's poll:
IDLE_FRAMES) are left out. Each sample is charged to the innermost frame of its stack that belongs
to a known part: HTTP parsing, FastAPI/Starlette/pydantic, event loop and thread hand-offs, core
(latents, checks, admission), batching, session, conversion, decode, encode, logging, metrics. The
shares are scaled to the CPU the server process really used in the window (/proc), and divided by
the requests it answered 200 in it (its own `gan_serve_requests_total`). Threads only C++ knows
(onnxruntime's intra-op pool beyond the calling thread) are the process CPU py-spy did not see.

With `--tree LABEL=DIR` (repeatable) it profiles the server of other source trees (a copy of the
repository's `service/` at another commit: `git archive REV service | tar -x -C DIR`), one server
each, alternating them window by window so a shared host's load falls on each alike.

    .venv/bin/python bench/profile_requests.py                       # this tree, 16 clients, 15 s
    .venv/bin/python bench/profile_requests.py --tree before=/tmp/before --tree after=. --rounds 2
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

#: The parts a request's CPU is charged to, in the order the tables list them.
CATEGORIES = (
    "HTTP parsing",
    "FastAPI/Starlette/pydantic",
    "event loop and thread hand-offs",
    "core (latents, checks, admission)",
    "batching",
    "session",
    "conversion",
    "decode",
    "encode",
    "logging",
    "metrics",
    "other",
)

#: (path suffix or fragment, function names or None for all, category), first match wins.
RULES: tuple[tuple[str, frozenset[str] | None, str], ...] = (
    ("/logging/", None, "logging"),
    ("service/logs.py", None, "logging"),
    ("service/runner.py", None, "session"),
    ("/onnxruntime/", None, "session"),
    ("service/batching.py", None, "batching"),
    ("service/admission.py", None, "batching"),
    ("service/pixels.py", None, "conversion"),
    ("service/inference.py", frozenset({"image_values", "pixels"}), "conversion"),
    (
        "service/tiling.py",
        frozenset({"tile_image", "upscale_work", "_rows", "upscaled_size", "_all_or_first_error"}),
        "core (latents, checks, admission)",
    ),
    ("service/tiling.py", None, "conversion"),
    ("service/routes/upscale.py", frozenset({"header_size", "decode_within_limits"}), "decode"),
    ("service/decode.py", None, "decode"),
    ("service/encode.py", None, "encode"),
    ("service/rendering.py", None, "encode"),
    ("/zipfile.py", None, "encode"),
    ("service/metrics.py", None, "metrics"),
    ("/prometheus_client/", None, "metrics"),
    ("service/inference.py", None, "core (latents, checks, admission)"),
    ("service/latents.py", None, "core (latents, checks, admission)"),
    ("service/labels.py", None, "core (latents, checks, admission)"),
    ("service/repository.py", None, "core (latents, checks, admission)"),
    ("service/state.py", frozenset({"in_encode_pool"}), "event loop and thread hand-offs"),
    ("service/http_protocol.py", None, "HTTP parsing"),
    ("/uvicorn/", None, "HTTP parsing"),
    ("/httptools/", None, "HTTP parsing"),
    ("/h11/", None, "HTTP parsing"),
    ("/fastapi/", None, "FastAPI/Starlette/pydantic"),
    ("/starlette/", None, "FastAPI/Starlette/pydantic"),
    ("/pydantic/", None, "FastAPI/Starlette/pydantic"),
    ("/pydantic_core/", None, "FastAPI/Starlette/pydantic"),
    ("/anyio/", None, "FastAPI/Starlette/pydantic"),
    ("/service/", None, "FastAPI/Starlette/pydantic"),  # routes, app middleware, auth, deps, uploads
    ("/asyncio/", None, "event loop and thread hand-offs"),
    ("/concurrent/futures/", None, "event loop and thread hand-offs"),
    ("/threading.py", None, "event loop and thread hand-offs"),
    ("/selectors.py", None, "event loop and thread hand-offs"),
    ("/queue.py", None, "event loop and thread hand-offs"),
)

THREAD_KINDS = ("event loop", "inference pool", "encode pool", "other Python threads", "seen by no sample")
#: Innermost frames (function, path suffix) of a thread blocked in a wait: a work queue, a lock or
#: condition, uvloop's poll (`Runner.run` has no Python frame above it while uvloop waits), the
#: selector. py-spy counts a thread as busy while it is runnable, and under load a woken thread
#: stays runnable in these frames until it gets a core and the GIL: CPU it is not using.
IDLE_FRAMES = (
    ("_worker", "concurrent/futures/thread.py"),
    ("Condition.wait", "/threading.py"),
    ("Thread._wait_for_tstate_lock", "/threading.py"),
    ("Thread.run", "/threading.py"),
    ("Runner.run", "asyncio/runners.py"),
    ("EpollSelector.select", "/selectors.py"),
    ("QueueListener.dequeue", "logging/handlers.py"),
)
#: A frame in py-spy's raw output: `function (path:line)`.
FRAME = re.compile(r"^(?P<function>.*) \((?P<path>.*):(?P<line>\d+)\)$")


def _rule(filename: str, function: str) -> str | None:
    path = filename.replace("\\", "/")
    for fragment, functions, category in RULES:
        if fragment in path and (functions is None or function in functions):
            return category
    return None


def idle(frame: str) -> bool:
    """Whether `frame`, innermost, is a thread waiting (see IDLE_FRAMES)."""
    match = FRAME.match(frame)
    return match is not None and any(
        match["function"] == function and match["path"].endswith(path) for function, path in IDLE_FRAMES
    )


def classify(stack: list[str], categories: dict[str, str | None]) -> str:
    """The category of the innermost frame of `stack` (outermost first) that one belongs to."""
    for frame in reversed(stack):
        if frame not in categories:
            match = FRAME.match(frame)
            categories[frame] = _rule(match["path"], match["function"]) if match else None
        category = categories[frame]
        if category is not None:
            return category
    return "other"


def _thread_kind(name: str) -> str:
    if name == "MainThread":
        return "event loop"
    if name.startswith("inference"):
        return "inference pool"
    if name.startswith("encode"):
        return "encode pool"
    return "other Python threads"


# -- the driver -------------------------------------------------------------------------------------


@dataclass
class Server:
    """One gan-serve being profiled: its source tree, process, address and where its files go."""

    label: str
    tree: Path
    process: subprocess.Popen[bytes]
    base: str
    out_dir: Path
    windows: int = 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(label: str, tree: Path, models: Path, out_dir: Path, args: argparse.Namespace) -> Server:
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    port = _free_port()
    env = {
        **os.environ,
        # The tree's `service` package ahead of the editable install of this checkout.
        "PYTHONPATH": str(tree),
        "GAN_SERVE_LOG_LEVEL": args.log_level,
        "GAN_SERVE_LOG_FORMAT": args.log_format,
    }
    command = [sys.executable, "-m", "service.cli", "--models", str(models), "--port", str(port)]
    command += ["--device", "cpu"]
    log = (out_dir / "server.log").open("wb")
    process = subprocess.Popen(command, env=env, cwd=tree, stdout=log, stderr=log)
    return Server(label, tree, process, f"http://127.0.0.1:{port}", out_dir)


def wait_ready(server: Server) -> None:
    import httpx

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise SystemExit(f"{server.label}: gan-serve exited with {server.process.returncode}")
        try:
            if httpx.get(f"{server.base}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{server.label}: gan-serve was not ready within 300 s")


def served(base: str, route: str) -> int:
    """Requests to `route` answered 200 so far, from the server's own counter."""
    import httpx

    text = httpx.get(f"{base}/metrics", timeout=10).text
    pattern = re.compile(r"^gan_serve_requests_total\{(.*)\} ([0-9.e+]+)$", re.M)
    total = 0.0
    for labels, value in pattern.findall(text):
        if f'route="{route}"' in labels and 'status="200"' in labels:
            total += float(value)
    return int(total)


def png(side: int) -> bytes:
    """A smooth test image, as bench/public_load.py uses."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:side, 0:side] / side
    planes = [np.sin(6 * x + k) + np.cos(5 * y + 2 * k) for k in range(3)]
    pixels = (np.stack(planes, -1) + 2) / 4 * 255
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


WORKLOADS = {
    "generate1": ("/generate faces64 n=1 (64x64 PNG)", "/generate"),
    "upscale64": ("/upscale 64x64 -> 256x256 PNG", "/upscale"),
}


def window(server: Server, workload: str, args: argparse.Namespace) -> dict[str, Any]:
    """One profiled window of `workload` on `server`: py-spy's samples, the CPU used, the requests served."""
    from load import Call, run_load  # bench/load.py: this script's folder is on sys.path

    _, route = WORKLOADS[workload]
    if workload == "generate1":
        call = Call(
            "POST",
            f"{server.base}/generate",
            images=1,
            pixels_per_image=64 * 64,
            json={"model": "faces64", "n": 1},
        )
    else:
        call = Call(
            "POST",
            f"{server.base}/upscale",
            images=1,
            pixels_per_image=256 * 256,
            content=png(64),
            headers={"Content-Type": "image/png"},
        )
    before = served(server.base, route)
    load_before = os.getloadavg()[0]
    server.windows += 1
    raw = server.out_dir / f"window-{server.windows}.txt"
    cpu_before, started = process_cpu(server.process.pid), time.monotonic()
    record = [args.py_spy, "record", "--pid", str(server.process.pid), "--rate", str(args.rate)]
    record += ["--duration", str(round(args.seconds + 2)), "--format", "raw", "--threads"]
    record += ["--full-filenames", "--nonblocking", "--output", str(raw)]
    spy = subprocess.Popen(
        record,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(1)  # py-spy attaches
    result = run_load(workload, call, concurrency=args.clients, max_requests=10**9, max_seconds=args.seconds)
    _, errors = spy.communicate(timeout=60)
    cpu, wall = process_cpu(server.process.pid) - cpu_before, time.monotonic() - started
    if spy.returncode != 0 or not raw.exists():
        raise SystemExit(f"py-spy failed: {errors.decode(errors='replace')[-500:]}")
    samples: Counter[tuple[str, str]] = Counter()
    leaves: Counter[str] = Counter()
    categories: dict[str, str | None] = {}
    for line in raw.read_text().splitlines():
        stack_text, _, count = line.rpartition(" ")
        thread, *stack = stack_text.split(";")
        if not stack or idle(stack[-1]):
            continue
        category = classify(stack, categories)
        samples[(_thread_kind(thread.partition(": ")[2]), category)] += int(count)
        leaves[f"{category} | {stack[-1]}"] += int(count)
    return {
        "samples": [[kind, category, count] for (kind, category), count in samples.items()],
        "leaves": leaves.most_common(40),
        "process_cpu_s": cpu,
        "wall_s": wall,
        "rate": args.rate,
        "requests": served(server.base, route) - before,
        "errors": result.errors,
        "p50_ms": result.p50_ms,
        "load": (load_before + os.getloadavg()[0]) / 2,
    }


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) the process has used, all its threads together."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def warm(server: Server) -> None:
    import httpx

    for _ in range(3):
        httpx.post(f"{server.base}/generate", json={"model": "faces64", "n": 1}, timeout=60)
        httpx.post(
            f"{server.base}/upscale", content=png(64), headers={"Content-Type": "image/png"}, timeout=60
        )


def summarise(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """Windows of one tree and workload added up: CPU ms per request by thread and category.

    py-spy's samples give the split; the process's own CPU clock gives the total. Samples can
    exceed it (a runnable thread waiting for a core looks busy) or fall short of it (threads of
    C++ only, which py-spy does not see without --native): the shortfall is its own row.
    """
    requests = max(sum(w["requests"] for w in windows), 1)
    by: dict[tuple[str, str], float] = defaultdict(float)
    sampled_s = cpu_s = 0.0
    for w in windows:
        counts = {(kind, category): count for kind, category, count in w["samples"]}
        seen = sum(counts.values()) / w["rate"]
        scale = w["process_cpu_s"] / seen if seen > w["process_cpu_s"] else 1.0
        for key, count in counts.items():
            by[key] += count / w["rate"] * scale
        by[("seen by no sample", "session")] += max(0.0, w["process_cpu_s"] - seen)
        sampled_s += seen
        cpu_s += w["process_cpu_s"]
    leaves: Counter[str] = Counter()
    for w in windows:
        leaves.update(dict(w["leaves"]))
    wall = sum(w["wall_s"] for w in windows)
    return {
        "requests": requests,
        "per_second": requests / wall,
        "per_request": {key: seconds * 1000 / requests for key, seconds in by.items()},
        "process_ms": cpu_s * 1000 / requests,
        "cores": cpu_s / wall,
        "coverage": sampled_s / cpu_s if cpu_s else 0.0,
        "rates": [w["requests"] / w["wall_s"] for w in windows],
        "p50_ms": [w["p50_ms"] for w in windows],
        "load": [w["load"] for w in windows],
        "errors": sum(w["errors"] for w in windows),
        "leaves": leaves.most_common(12),
    }


def print_tables(workload: str, summaries: dict[str, dict[str, Any]], verbose: bool) -> None:
    title, _ = WORKLOADS[workload]
    labels = list(summaries)
    print(f"\n### {title}\n")
    for label, s in summaries.items():
        rates = ", ".join(f"{r:.0f}" for r in s["rates"])
        loads = ", ".join(f"{x:.2f}" for x in s["load"])
        print(
            f"- {label}: {s['requests']} requests, {s['per_second']:.0f}/s (windows: {rates}), "
            f"p50 {min(s['p50_ms']):.1f}-{max(s['p50_ms']):.1f} ms, {s['cores']:.2f} cores busy, "
            f"{s['process_ms']:.2f} ms CPU per request; errors {s['errors']}; 1-min load {loads}; "
            f"py-spy's busy samples {s['coverage']:.0%} of the process CPU"
        )
    header = "| CPU ms per request | " + " | ".join(
        f"{label}: event loop | {label}: all threads" for label in labels
    )
    print()
    print(header + " |")
    print("|---" * (1 + 2 * len(labels)) + "|")
    for category in CATEGORIES:
        cells = []
        for label in labels:
            per = summaries[label]["per_request"]
            loop = per.get(("event loop", category), 0.0)
            every = sum(v for (kind, cat), v in per.items() if cat == category)
            cells += [f"{loop:.3f}", f"{every:.3f}"]
        if any(float(c) for c in cells):
            print(f"| {category} | " + " | ".join(cells) + " |")
    totals = []
    for label in labels:
        per = summaries[label]["per_request"]
        totals += [
            f"**{sum(v for (kind, _), v in per.items() if kind == 'event loop'):.3f}**",
            f"**{sum(per.values()):.3f}**",
        ]
    print("| **total** | " + " | ".join(totals) + " |")
    print()
    print("| CPU ms per request, by thread | " + " | ".join(labels) + " |")
    print("|---" * (1 + len(labels)) + "|")
    for kind in THREAD_KINDS:
        cells = [
            f"{sum(v for (k, _), v in summaries[label]['per_request'].items() if k == kind):.3f}"
            for label in labels
        ]
        print(f"| {kind} | " + " | ".join(cells) + " |")
    if verbose:
        for label, s in summaries.items():
            print(f"\n{label}: the innermost frames sampled most (category | frame: samples)")
            for leaf, count in s["leaves"]:
                print(f"    {leaf}: {count}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument(
        "--tree",
        action="append",
        default=[],
        metavar="LABEL=DIR",
        help="profile the server of this source tree (repeatable; default: this checkout)",
    )
    parser.add_argument(
        "--workloads", default="generate1,upscale64", help="comma-separated: " + ", ".join(WORKLOADS)
    )
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=15, help="seconds per window")
    parser.add_argument("--rounds", type=int, default=1, help="windows per tree and workload, alternated")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument(
        "--py-spy",
        default=shutil.which("py-spy", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"),
        help="py-spy executable (the bench extra installs it)",
    )
    parser.add_argument("--verbose", action="store_true", help="also list the innermost frames sampled most")
    parser.add_argument(
        "--log-level", default="INFO", help="the server's log level (INFO: an access line per request)"
    )
    parser.add_argument("--log-format", default="json", choices=["json", "text"])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "profile")
    args = parser.parse_args()
    if not args.py_spy:
        raise SystemExit("py-spy not found: install the bench extra (make setup)")
    if not (args.models / "faces64").exists() and args.models == ROOT / "models":
        raise SystemExit("build the default repository first: make models")
    trees = [tuple(spec.split("=", 1)) for spec in args.tree] or [("this", str(ROOT))]
    workloads = args.workloads.split(",")
    servers = [
        start_server(label, Path(tree).resolve(), args.models.resolve(), args.out / label, args)
        for label, tree in trees
    ]
    results: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    try:
        for server in servers:
            wait_ready(server)
            warm(server)
        print(
            f"gan-serve on CPU, {os.cpu_count()} cores; {args.clients} closed-loop clients (bench/load.py, "
            f"in the driver's process); {args.seconds:g} s windows, {args.rounds} per tree and workload, "
            f"alternated; py-spy at {args.rate}/s; log level {args.log_level}, {args.log_format}"
        )
        for round_index in range(args.rounds):
            for workload in workloads:
                order = servers if round_index % 2 == 0 else servers[::-1]
                for server in order:
                    results[workload][server.label].append(window(server, workload, args))
    finally:
        for server in servers:
            server.process.terminate()
        for server in servers:
            try:
                server.process.wait(30)
            except subprocess.TimeoutExpired:
                server.process.kill()
    for workload in workloads:
        summaries = {label: summarise(results[workload][label]) for label, _ in trees}
        print_tables(workload, summaries, args.verbose)
    (args.out / "windows.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
