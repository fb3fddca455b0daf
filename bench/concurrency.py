"""Streams x intra-op threads on the CPU: the sweep behind `GAN_SERVE_CONCURRENT_BATCHES` defaults.

    .venv/bin/python bench/concurrency.py                        # in-process, then HTTP; 3 rounds
    .venv/bin/python bench/concurrency.py --quick                # 3 rounds of 2-s windows
    .venv/bin/python bench/concurrency.py --baseline-ref 7d42804 # HTTP also runs that commit's service/
    .venv/bin/python bench/concurrency.py --only http --streams 1,2 --threads 1,2

A setting is `streams x threads`: batches of one model in flight at once (`concurrent_batches`)
times onnxruntime intra-op threads per run (`intra_op_threads`); where the threads are fewer than
the cores, a request that finds the model idle runs on its session with a thread per core
(`lone_runs_all_cores`; `--lone-off` adds each such setting without it, "no lone"). Two parts, each
over every setting of the grid (streams 1-4, threads 1-2 by default):

* **in-process**: the service's own runners (`service.sessions.load_model`: session options,
  `BatchingRunner`, admission, warm-up) over faces64 and srgan-x4, driven by C closed-loop
  callers awaiting `runner.run` on one event loop: the model and the batcher, no HTTP;
* **HTTP**: one `gan-serve` per setting (plus, with `--baseline-ref`, the service/ of that commit
  with its own defaults) on a two-entry view of the repository, driven by bench/load.py's lean
  closed-loop client: /generate n=1 and n=16 PNG, /upscale 64x64 -> 256x256 PNG.

Within a round every point runs once on every setting, back to back, in an order that rotates per
round and point, so a ratio between settings compares windows seconds apart; over >= 3 rounds
the tables give the median and min-max of images/s, the median ratio to the reference setting
(the old default 1x(cores), or the baseline), CPU ms per image (this process in-process, the
server's process tree over HTTP), cores used, p50, and the machine's load: the 1-minute load
average and the cores busy with work that was neither the server nor the client ("other"). The
load client runs in this process and shares the cores; its CPU is reported too. On a machine
shared with other jobs, each window waits (up to `--quiet-wait` s) for a moment when fewer than
`--quiet-below` cores are busy before it starts.

Writes `bench/results/concurrency-<time>.json` (every window) and `.md` (the tables).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT))

from load import Call, run_load  # noqa: E402
from peers.procstat import busy_fraction, loadavg, machine_cpu, tree_cpu  # noqa: E402
from peers.servers import Server, product_server, product_source  # noqa: E402

from service.entries import scan_repository  # noqa: E402
from service.runner import ModelRunner  # noqa: E402
from service.sessions import load_model  # noqa: E402
from service.settings import Settings, cpu_cores  # noqa: E402

RESULTS = BENCH / "results"
GENERATOR = "faces64"
UPSCALER = "srgan-x4"


@dataclass(frozen=True)
class Setting:
    """One point of the grid (`streams x threads`), or the baseline commit's own defaults."""

    streams: int
    threads: int
    ref: str | None = None
    #: Lone requests on the model's session with a thread per core (`lone_runs_all_cores`).
    lone: bool = True

    @property
    def label(self) -> str:
        if self.ref:
            return f"before ({self.ref})"
        return f"{self.streams}x{self.threads}" + (
            "" if self.lone or self.threads >= cpu_cores() else " no lone"
        )


@dataclass(frozen=True)
class Point:
    """A load point: what each request asks for and how many callers send it at once."""

    key: str
    kind: str  # gen1, gen16 or upscale
    images: int
    callers: int


IN_PROCESS_POINTS = ("gen1-c1", "gen1-c16", "gen16-c1", "gen16-c4", "upscale-c1", "upscale-c8")
HTTP_POINTS = ("gen1-c1", "gen1-c16", "gen1-c64", "gen16-c1", "gen16-c16", "upscale-c1", "upscale-c16")


def parse_point(key: str) -> Point:
    kind, _, callers = key.partition("-c")
    images = {"gen1": 1, "gen16": 16, "upscale": 1}[kind]
    return Point(key, kind, images, int(callers))


# -- the machine ----------------------------------------------------------------------------------


class Sample:
    """CPU of this process, of a server's tree (if any) and of the machine, at one moment."""

    def __init__(self, server_pid: int | None = None) -> None:
        self.at = time.perf_counter()
        self.own = time.process_time()
        self.server = tree_cpu(server_pid) if server_pid is not None else None
        self.machine = machine_cpu()

    def since(self, before: Sample, images: int, server: bool) -> dict[str, Any]:
        """Cores and CPU per image between `before` and now, and the machine's load."""
        seconds = self.at - before.at
        own = self.own - before.own
        subject = (
            self.server.seconds_since(before.server)
            if server and self.server is not None and before.server is not None
            else own
        )
        busy_cores = busy_fraction(before.machine, self.machine) * cpu_cores()
        other = busy_cores - (subject + (own if server else 0.0)) / seconds
        return {
            "seconds": seconds,
            "images_per_s": images / seconds if seconds > 0 else 0.0,
            "cpu_ms_per_image": subject * 1000 / images if images else None,
            "cores": subject / seconds,
            "client_cores": own / seconds if server else None,
            "busy_cores": busy_cores,
            "other_cores": max(0.0, other),
            "loadavg": loadavg(),
        }


# -- in-process -----------------------------------------------------------------------------------


def repository_view(models: Path, work: Path) -> Path:
    """faces64 and srgan-x4 only (links into `models`): what both parts load."""
    view = work / "repo"
    shutil.rmtree(view, ignore_errors=True)
    view.mkdir(parents=True)
    for name in (GENERATOR, UPSCALER):
        entry = (models / name).resolve()
        if not (entry / "model.json").is_file():
            raise SystemExit(f"{entry} is missing: build the default repository first (`make models`)")
        (view / name).symlink_to(entry)
    return view


def load_runners(setting: Setting, repo: Path, pool: ThreadPoolExecutor) -> dict[str, ModelRunner]:
    """The service's runners for both models under `setting`, loaded and warmed as gan-serve does."""
    settings = Settings(
        models_dir=repo,
        device="cpu",
        concurrent_batches=setting.streams,
        intra_op_threads=setting.threads,
        lone_runs_all_cores=setting.lone,
    )
    return {
        entry.card.name: load_model(entry, settings, pool, None, cuda=False).runner
        for entry in scan_repository(repo)
    }


def request_inputs(point: Point, runner: ModelRunner) -> np.ndarray:
    """What one request hands its runner: n latents, or one 64x64 tile in the card's layout."""
    card = runner.card
    rng = np.random.default_rng(0)
    if point.kind != "upscale":
        assert card.latent_size is not None
        return rng.standard_normal((point.images, card.latent_size), dtype=np.float32)
    channels = card.input_channels or 3
    shape = (1, 64, 64, channels) if card.layout == "NHWC" else (1, channels, 64, 64)
    return rng.uniform(0.0, 1.0, shape).astype(np.float32)


async def drive(runner: ModelRunner, inputs: np.ndarray, callers: int, seconds: float) -> list[float]:
    """`callers` closed-loop callers of `runner.run` for `seconds`: each request's latency."""
    latencies: list[float] = []
    end = time.perf_counter() + seconds

    async def caller() -> None:
        while time.perf_counter() < end:
            begun = time.perf_counter()
            await runner.run(inputs)
            latencies.append(time.perf_counter() - begun)

    await asyncio.gather(*(caller() for _ in range(callers)))
    return latencies


def in_process_window(
    loop: asyncio.AbstractEventLoop, runner: ModelRunner, point: Point, warmup: float, window: float
) -> dict[str, Any]:
    inputs = request_inputs(point, runner)
    loop.run_until_complete(drive(runner, inputs, point.callers, warmup))
    before = Sample()
    latencies = loop.run_until_complete(drive(runner, inputs, point.callers, window))
    result = Sample().since(before, len(latencies) * point.images, server=False)
    result["p50_ms"] = float(np.percentile(latencies, 50) * 1000) if latencies else None
    result["errors"] = 0
    return result


# -- HTTP -----------------------------------------------------------------------------------------


def start_servers(
    settings: list[Setting], repo: Path, work: Path, baseline_ref: str | None
) -> dict[Setting, Server]:
    """One gan-serve per setting (the checkout's service/), and the baseline commit's if asked."""
    servers: dict[Setting, Server] = {}
    for setting in settings:
        server = product_server(repo, "cpu", work, ROOT, name=f"product-{setting.label}")
        server.env["GAN_SERVE_CONCURRENT_BATCHES"] = str(setting.streams)
        server.env["GAN_SERVE_INTRA_OP_THREADS"] = str(setting.threads)
        server.env["GAN_SERVE_LONE_RUNS_ALL_CORES"] = "true" if setting.lone else "false"
        servers[setting] = server
    if baseline_ref is not None:
        source, commit = product_source(baseline_ref, work)
        baseline = Setting(0, 0, ref=commit)
        servers[baseline] = product_server(repo, "cpu", work, source, name=f"before-{commit}")
    try:
        for setting, server in servers.items():
            print(f"starting gan-serve {setting.label}", flush=True)
            server.env["GAN_SERVE_LOG_LEVEL"] = "WARNING"
            server.start()
    except BaseException:
        for server in servers.values():
            server.stop()
        raise
    return servers


def face_png() -> bytes:
    """A smooth 64x64 RGB PNG (the /upscale input)."""
    from PIL import Image

    y, x = np.mgrid[0:64, 0:64]
    pixels = np.stack([x * 4, y * 4, (x + y) * 2], axis=-1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def http_call(point: Point, port: int, face: bytes) -> Call:
    url = f"http://127.0.0.1:{port}"
    if point.kind == "upscale":
        return Call(
            "POST",
            f"{url}/upscale",
            images=1,
            pixels_per_image=256 * 256,
            params={"model": UPSCALER, "format": "png"},
            content=face,
            headers={"Content-Type": "image/png"},
        )
    body = {"model": GENERATOR, "n": point.images, "seed": 1, "format": "png"}
    return Call("POST", f"{url}/generate", images=point.images, pixels_per_image=64 * 64, json=body)


def http_window(server: Server, point: Point, face: bytes, warmup: float, window: float) -> dict[str, Any]:
    call = http_call(point, server.port, face)
    run_load("warm-up", call, concurrency=point.callers, max_requests=10**9, max_seconds=warmup)
    before = Sample(server.pid)
    measured = run_load("window", call, concurrency=point.callers, max_requests=10**9, max_seconds=window)
    result = Sample(server.pid).since(before, measured.requests * point.images, server=True)
    result["p50_ms"] = measured.p50_ms
    result["errors"] = measured.errors
    if measured.errors:
        result["error_sample"] = measured.error_sample
    return result


# -- the schedule and the tables ------------------------------------------------------------------


def wait_for_quiet(below: float, limit: float) -> float:
    """Wait (at most `limit` s) until the machine's busy cores over half a second fall under `below`.

    Other people's jobs share this machine in bursts; a window that starts in a gap measures the
    settings rather than the neighbours. Returns the seconds waited (the window runs anyway after
    `limit`; its "other cores" column says what it shared the machine with).
    """
    begun = time.perf_counter()
    while True:
        before = machine_cpu()
        time.sleep(0.5)
        busy = busy_fraction(before, machine_cpu()) * cpu_cores()
        waited = time.perf_counter() - begun
        if busy < below or waited >= limit:
            return waited


def rounds(
    part: str,
    settings: list[Setting],
    points: list[Point],
    n_rounds: int,
    measure: Callable[[Setting, Point], dict[str, Any]],
    quiet: tuple[float, float] | None = None,
) -> list[dict[str, Any]]:
    """Every point on every setting, round after round, the settings' order rotating."""
    windows = []
    for round_index in range(n_rounds):
        for point_index, point in enumerate(points):
            shift = (round_index + point_index) % len(settings)
            for setting in settings[shift:] + settings[:shift]:
                waited = wait_for_quiet(*quiet) if quiet else 0.0
                result = measure(setting, point)
                result["waited_s"] = waited
                result.update({"part": part, "round": round_index, "point": point.key})
                result["setting"] = setting.label
                windows.append(result)
                errors = f"  errors {result['errors']}" if result["errors"] else ""
                print(
                    f"  {part} round {round_index + 1} {point.key:<11} {setting.label:<14}"
                    f" {result['images_per_s']:8.1f} img/s  {result['cpu_ms_per_image'] or 0:6.2f} ms/img"
                    f"  cores {result['cores']:.2f}  other {result['other_cores']:.2f}"
                    f"  load {result['loadavg']:.2f}  waited {waited:.0f} s{errors}",
                    flush=True,
                )
    return windows


def spread(values: list[float], digits: int = 1) -> str:
    if not values:
        return "-"
    median = statistics.median(values)
    return f"{median:,.{digits}f} ({min(values):,.{digits}f}-{max(values):,.{digits}f})"


def table(windows: list[dict[str, Any]], part: str, reference: str) -> str:
    """One Markdown table per part: a row per point and setting, ratios to `reference` per round."""
    mine = [w for w in windows if w["part"] == part]
    if not mine:
        return ""
    points = list(dict.fromkeys(w["point"] for w in mine))
    labels = list(dict.fromkeys(w["setting"] for w in mine))
    client = part == "http"
    head = "| point | setting | images/s, median (min-max) | ÷ " + reference + " | CPU ms/image | cores |"
    head += " client cores |" if client else ""
    head += " p50 ms | other cores | loadavg |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for point in points:
        at = [w for w in mine if w["point"] == point]
        best = max(
            labels,
            key=lambda s: statistics.median([w["images_per_s"] for w in at if w["setting"] == s] or [0]),
        )
        for label in labels:
            own = [w for w in at if w["setting"] == label]
            ratios = []
            for w in own:
                ref = [r for r in at if r["setting"] == reference and r["round"] == w["round"]]
                if ref and ref[0]["images_per_s"]:
                    ratios.append(w["images_per_s"] / ref[0]["images_per_s"])
            rate = spread([w["images_per_s"] for w in own])
            rate = f"**{rate}**" if label == best else rate
            row = f"| {point} | {label} | {rate} | {spread(ratios, 2)} |"
            row += f" {spread([w['cpu_ms_per_image'] for w in own if w['cpu_ms_per_image']], 2)} |"
            row += f" {spread([w['cores'] for w in own], 2)} |"
            if client:
                row += f" {spread([w['client_cores'] for w in own], 2)} |"
            row += f" {spread([w['p50_ms'] for w in own if w['p50_ms'] is not None], 1)} |"
            row += (
                f" {spread([w['other_cores'] for w in own], 2)} | {spread([w['loadavg'] for w in own], 2)} |"
            )
            lines.append(row)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=Path, default=ROOT / "models", help="the default repository")
    parser.add_argument("--streams", default="1,2,3,4", help="concurrent batches per model to try")
    parser.add_argument("--threads", default="1,2", help="intra-op threads per run to try")
    parser.add_argument("--only", choices=["in-process", "http"], help="run one part only")
    parser.add_argument("--in-process-points", default=",".join(IN_PROCESS_POINTS))
    parser.add_argument("--http-points", default=",".join(HTTP_POINTS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=float, help="measured seconds per window (default 4; --quick 2)")
    parser.add_argument(
        "--warmup", type=float, help="unmeasured seconds before each (default 1; --quick 0.5)"
    )
    parser.add_argument("--quick", action="store_true", help="2-s windows")
    parser.add_argument(
        "--lone-off",
        action="store_true",
        help="also each setting with fewer threads than cores, lone runs off",
    )
    parser.add_argument(
        "--quiet-below",
        type=float,
        default=0.3,
        help="before each window wait until fewer busy cores than this (0: never wait)",
    )
    parser.add_argument("--quiet-wait", type=float, default=30.0, help="longest wait for a quiet machine (s)")
    parser.add_argument("--baseline-ref", help="also serve this commit's service/ (its defaults) over HTTP")
    args = parser.parse_args(argv)
    window = args.window or (2.0 if args.quick else 4.0)
    quiet = (args.quiet_below, args.quiet_wait) if args.quiet_below > 0 else None
    warmup = args.warmup or (0.5 if args.quick else 1.0)
    grid = [
        Setting(s, t) for s in map(int, args.streams.split(",")) for t in map(int, args.threads.split(","))
    ]
    if args.lone_off:
        grid += [Setting(g.streams, g.threads, lone=False) for g in grid if g.threads < cpu_cores()]
    old_default = f"1x{cpu_cores()}"
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    work = RESULTS / "work" / "concurrency"
    work.mkdir(parents=True, exist_ok=True)
    repo = repository_view(args.models, work)
    windows: list[dict[str, Any]] = []
    begun = time.perf_counter()

    if args.only in (None, "in-process"):
        print(f"in-process: loading {len(grid)} settings x 2 models", flush=True)
        loop = asyncio.new_event_loop()
        pool = ThreadPoolExecutor(64, thread_name_prefix="inference")
        runners = {setting: load_runners(setting, repo, pool) for setting in grid}

        def in_process(setting: Setting, point: Point) -> dict[str, Any]:
            runner = runners[setting][UPSCALER if point.kind == "upscale" else GENERATOR]
            return in_process_window(loop, runner, point, warmup, window)

        points = [parse_point(k) for k in args.in_process_points.split(",") if k]
        windows += rounds("in-process", grid, points, args.rounds, in_process, quiet)
        for loaded in runners.values():
            for runner in loaded.values():
                close = getattr(runner, "close", None)
                if close is not None:
                    loop.run_until_complete(close())
        pool.shutdown()
        loop.close()

    if args.only in (None, "http"):
        servers = start_servers(grid, repo, work, args.baseline_ref)
        face = face_png()
        try:

            def over_http(setting: Setting, point: Point) -> dict[str, Any]:
                return http_window(servers[setting], point, face, warmup, window)

            points = [parse_point(k) for k in args.http_points.split(",") if k]
            windows += rounds("http", list(servers), points, args.rounds, over_http, quiet)
        finally:
            for server in servers.values():
                server.stop()

    baseline = next((w["setting"] for w in windows if w["setting"].startswith("before")), None)
    tables = [
        f"Sweep {stamp}: {cpu_cores()} cores, {args.rounds} rounds of {warmup:g} + {window:g} s windows, "
        f"{(time.perf_counter() - begun) / 60:.1f} min. Bold: the highest median at that point.",
        "",
        f"**In-process** (the service's runners, no HTTP; ÷ {old_default}, the old default)",
        "",
        table(windows, "in-process", old_default),
        "",
        f"**HTTP** (gan-serve, bench/load.py's client; ÷ {baseline or old_default})",
        "",
        table(windows, "http", baseline or old_default),
    ]
    text = "\n".join(tables)
    json_path = RESULTS / f"concurrency-{stamp}.json"
    json_path.write_text(json.dumps({"created": stamp, "cores": cpu_cores(), "windows": windows}, indent=1))
    json_path.with_suffix(".md").write_text(text + "\n")
    print()
    print(text)
    print(f"\nresults: {json_path} (and .md)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
