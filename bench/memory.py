"""The service's memory: `python bench/memory.py [--before-ref REF] [--sections idle options throughput]`.

Three sections, each printed as a Markdown table with the load average it ran under:

- **idle**: `gan-serve` (`python -m service.cli`) on the default repository (`make models`), as
  bench/bench_peers.py measures it: resident (RSS) and proportional (PSS) memory 3 s after
  /health/ready, each model's `memory_mib` from /models, then RSS again after one /upscale of a 256²
  image (one full 288² tile) and one /generate n=16, i.e. after use. Configurations: the service as
  it was at `--before-ref` (its `service/` unpacked from git), the checkout with its defaults, and the
  checkout with each CPU arena setting off.
- **options**: one process per onnxruntime option, loading and warming every model of the default
  repository as the service does (generators at batch 1 and 8, the upscaler on one 288² tile), and
  the RSS each model added: what each option the issue named does to the idle footprint.
- **throughput**: what the memory settings cost, in one process, alternating short windows: srgan-x4
  (288² × 1, 64² × 1, 32² × 16 tiles) and faces64 (batch 1 and 16) with the CPU arena on (the
  service's sessions, `service.sessions.open_session`), off, and on but shrunk after every run.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT))

from peers.procstat import tree_memory  # noqa: E402
from peers.servers import product_server, product_source, request  # noqa: E402

MIB = 2**20
GENERATOR = "faces64"
UPSCALER = "srgan-x4"
#: The service's default warm-up tile: tile_size 256 + 2 x tile_overlap 16.
TILE = 288


def rss_mib() -> float:
    """This process's resident set size."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB


def load() -> float:
    return os.getloadavg()[0]


# -- idle: the real server ------------------------------------------------------------------------


def upscale_body() -> bytes:
    """A 256×256 PNG (smooth, photo-like): /upscale runs it as one 288² tile with the default settings."""
    from PIL import Image

    y, x = np.mgrid[0:256, 0:256].astype(np.float32)
    pixels = np.stack([(x + y) / 2, x, 255 - y], axis=-1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def idle_configurations(before_ref: str | None) -> list[tuple[str, str | None, dict[str, str]]]:
    """(label, git ref or None for the checkout, extra environment) of every server measured."""
    configurations: list[tuple[str, str | None, dict[str, str]]] = []
    if before_ref:
        configurations.append((f"before ({before_ref})", before_ref, {}))
    configurations += [
        ("after: defaults", None, {}),
        ("after: CPU_MEM_ARENA_UPSCALER=false", None, {"GAN_SERVE_CPU_MEM_ARENA_UPSCALER": "false"}),
        (
            "after: both CPU arenas off",
            None,
            {"GAN_SERVE_CPU_MEM_ARENA_UPSCALER": "false", "GAN_SERVE_CPU_MEM_ARENA_GENERATOR": "false"},
        ),
        (
            # glibc keeps freed blocks below its (self-raising) mmap threshold: a fixed threshold
            # makes every large block an mmap of its own, unmapped when freed.
            "after: CPU_MEM_ARENA_UPSCALER=false, MALLOC_MMAP_THRESHOLD_=131072",
            None,
            {"GAN_SERVE_CPU_MEM_ARENA_UPSCALER": "false", "MALLOC_MMAP_THRESHOLD_": "131072"},
        ),
    ]
    return configurations


def measure_idle(models: Path, before_ref: str | None) -> list[dict[str, Any]]:
    """Each configuration's server: idle memory, per-model memory, memory after one use."""
    results: list[dict[str, Any]] = []
    body = upscale_body()
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as work_dir:
        work = Path(work_dir)
        for label, ref, env in idle_configurations(before_ref):
            source, commit = product_source(ref, work)
            server = product_server(models.resolve(), "cpu", work, source, name=f"memory-{len(results)}")
            server.env.update(env)
            server.start()
            try:
                time.sleep(3)
                idle = tree_memory(server.pid)
                threads = len(list(Path(f"/proc/{server.pid}/task").iterdir()))
                listed = json.loads(request(server.port, "GET", "/models")[2])["models"]
                per_model = {m["name"]: m.get("memory_mib") for m in listed}
                upscaled = request(
                    server.port, "POST", f"/upscale?model={UPSCALER}", body, {"Content-Type": "image/png"}
                )[0]
                generated = request(
                    server.port,
                    "POST",
                    "/generate",
                    json.dumps({"model": GENERATOR, "n": 16, "seed": 1}).encode(),
                    {"Content-Type": "application/json"},
                )[0]
                time.sleep(2)
                used = tree_memory(server.pid)
            finally:
                server.stop()
            results.append(
                {
                    "label": label,
                    "commit": commit,
                    "env": env,
                    "started_in_s": round(server.started_in_s, 1),
                    "idle_rss_mib": idle.rss_bytes / MIB,
                    "idle_pss_mib": idle.pss_bytes / MIB,
                    "threads": threads,
                    "per_model_mib": per_model,
                    "after_use_rss_mib": used.rss_bytes / MIB,
                    "statuses": [upscaled, generated],
                    "load": load(),
                }
            )
            print(f"  {label}: idle {idle.rss_bytes / MIB:,.0f} MiB", flush=True)
    return results


def idle_table(results: list[dict[str, Any]]) -> str:
    names = sorted({name for r in results for name in r["per_model_mib"]})
    lines = [
        "| server | idle RSS MiB | idle PSS MiB | threads | after one upscale + generate, RSS MiB | "
        + " | ".join(f"{n} MiB" for n in names)
        + " | load |",
        "|---|---|---|---|---|" + "---|" * len(names) + "---|",
    ]
    for r in results:
        cells = ["-" if r["per_model_mib"].get(n) is None else f"{r['per_model_mib'][n]:,.1f}" for n in names]
        lines.append(
            f"| {r['label']} | {r['idle_rss_mib']:,.0f} | {r['idle_pss_mib']:,.0f} | {r['threads']} | "
            f"{r['after_use_rss_mib']:,.0f} | " + " | ".join(cells) + f" | {r['load']:.1f} |"
        )
    return "\n".join(lines)


IMPORT_STAGES = ("numpy", "onnxruntime", "PIL.Image", "fastapi", "pydantic_settings", "service.cli")


def import_footprint() -> dict[str, float]:
    """RSS after importing what gan-serve imports, stage by stage, in a fresh process."""
    script = (
        "import json, os, importlib\n"
        "rss = lambda: int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20\n"
        "stages = {'python': rss()}\n"
        f"for name in {IMPORT_STAGES!r}:\n"
        "    importlib.import_module(name)\n"
        "    stages[name] = rss()\n"
        "print(json.dumps(stages))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT
    )
    stages: dict[str, float] = json.loads(done.stdout)
    return stages


# -- options: one process per onnxruntime option ---------------------------------------------------

OPTIONS = {
    "defaults, arena kept (before)": "the service's session options; the warm-up's memory stays",
    "shrink after warm-up (after)": "one run with memory.enable_memory_arena_shrinkage=cpu:0",
    "upscaler arena off": "enable_cpu_mem_arena=False for the upscaler",
    "every arena off": "enable_cpu_mem_arena=False for every model",
    "memory pattern off": "enable_mem_pattern=False for every model",
    "initializers from the device allocator": "session.use_device_allocator_for_initializers=1",
    "shared arena, kSameAsRequested": "one env allocator for all sessions (session.use_env_allocators)",
    "64² warm-up tile": "the upscaler warmed on 64² instead of 288²",
    "arena off + malloc_trim": "upscaler arena off, then glibc malloc_trim(0)",
}


def options_child(option: str, models: Path) -> dict[str, Any]:
    """In a fresh process: load and warm every entry with `option`; the RSS each one added."""
    import onnxruntime as ort

    from service.entries import scan_repository
    from service.labels import generator_input_width

    start = rss_mib()
    if option == "shared arena, kSameAsRequested":
        info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        ort.create_and_register_allocator(info, ort.OrtArenaCfg({"arena_extend_strategy": 1}))
    added: dict[str, float] = {}
    sessions = []
    for entry in scan_repository(models):
        card = entry.card
        upscaler = card.kind == "upscaler"
        before = rss_mib()
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if option == "every arena off" or (
            option in ("upscaler arena off", "arena off + malloc_trim") and upscaler
        ):
            options.enable_cpu_mem_arena = False
        if option == "memory pattern off":
            options.enable_mem_pattern = False
        if option == "initializers from the device allocator":
            options.add_session_config_entry("session.use_device_allocator_for_initializers", "1")
        if option == "shared arena, kSameAsRequested":
            options.add_session_config_entry("session.use_env_allocators", "1")
        session = ort.InferenceSession(str(entry.model_path), options, providers=["CPUExecutionProvider"])
        if upscaler:
            assert card.input_channels is not None
            edge = 64 if option == "64² warm-up tile" else TILE
            inputs = [np.zeros((1, edge, edge, card.input_channels), np.float32)]
            smallest = np.zeros((1, 16, 16, card.input_channels), np.float32)
        else:
            width = generator_input_width(card)
            inputs = [np.zeros((b, width), np.float32) for b in (1, 8)]
            smallest = inputs[0]
        for array in inputs:
            session.run([card.output_name], {card.input_name: array})
        if option == "shrink after warm-up (after)":
            run_options = ort.RunOptions()
            run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
            session.run([card.output_name], {card.input_name: smallest}, run_options)
        gc.collect()
        if option == "arena off + malloc_trim":
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        added[card.name] = rss_mib() - before
        sessions.append(session)
    return {"option": option, "start_mib": start, "added_mib": added, "end_mib": rss_mib()}


def measure_options(models: Path) -> list[dict[str, Any]]:
    results = []
    for option in OPTIONS:
        done = subprocess.run(
            [sys.executable, __file__, "--child", option, "--models", str(models)],
            capture_output=True,
            text=True,
            check=True,
        )
        results.append({**json.loads(done.stdout.strip().splitlines()[-1]), "load": load()})
    return results


def options_table(results: list[dict[str, Any]]) -> str:
    names = sorted({name for r in results for name in r["added_mib"]})
    lines = [
        "| option | what | RSS after all MiB | " + " | ".join(f"+{n}" for n in names) + " | load |",
        "|---|---|---|" + "---|" * len(names) + "---|",
    ]
    for r in results:
        cells = [f"{r['added_mib'][n]:,.0f}" for n in names]
        lines.append(
            f"| {r['option']} | {OPTIONS[r['option']]} | {r['end_mib']:,.0f} | "
            + " | ".join(cells)
            + f" | {r['load']:.1f} |"
        )
    return "\n".join(lines)


# -- throughput: what the settings cost -------------------------------------------------------------


def measure_throughput(models: Path, rounds: int, seconds: float) -> list[dict[str, Any]]:
    """ms per run of each point with the arena on, off and shrunk after every run; alternated windows."""
    import onnxruntime as ort

    from service.entries import scan_repository
    from service.sessions import open_session
    from service.settings import Settings

    entries = {entry.card.name: entry for entry in scan_repository(models)}
    on = Settings(models_dir=models, device="cpu")
    off = Settings(
        models_dir=models, device="cpu", cpu_mem_arena_upscaler=False, cpu_mem_arena_generator=False
    )
    shrink = ort.RunOptions()
    shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    rng = np.random.default_rng(0)
    points = [
        (UPSCALER, f"{TILE}² × 1", rng.random((1, TILE, TILE, 3), np.float32)),
        (UPSCALER, "64² × 1", rng.random((1, 64, 64, 3), np.float32)),
        (UPSCALER, "32² × 16", rng.random((16, 32, 32, 3), np.float32)),
        (GENERATOR, "batch 1", rng.standard_normal((1, 100), np.float32)),
        (GENERATOR, "batch 16", rng.standard_normal((16, 100), np.float32)),
    ]
    results = []
    for name, label, inputs in points:
        card = entries[name].card
        sessions = {
            "arena on": (open_session(entries[name], on, cuda=False).session, None),
            "arena off": (open_session(entries[name], off, cuda=False).session, None),
            "on, shrunk after every run": (open_session(entries[name], on, cuda=False).session, shrink),
        }
        feeds = {card.input_name: inputs}
        times: dict[str, list[float]] = {variant: [] for variant in sessions}
        load_before = load()
        for round_index in range(rounds):
            order = list(sessions)
            order = order[round_index % len(order) :] + order[: round_index % len(order)]
            for variant in order:
                session, run_options = sessions[variant]
                session.run([card.output_name], feeds, run_options)
                calls, begun = 0, time.perf_counter()
                while True:
                    session.run([card.output_name], feeds, run_options)
                    calls += 1
                    elapsed = time.perf_counter() - begun
                    if calls >= 2 and elapsed >= seconds:
                        break
                times[variant].append(elapsed / calls * 1000)
        results.append({"model": name, "point": label, "ms": times, "load": [load_before, load()]})
        base = statistics.median(times["arena on"])
        summary = ", ".join(f"{v} {base / statistics.median(t):.2f}×" for v, t in times.items())
        print(f"  {name} {label}: {summary}", flush=True)
        del sessions
        gc.collect()
    return results


def throughput_table(results: list[dict[str, Any]]) -> str:
    variants = list(results[0]["ms"])
    lines = [
        "| model, input | "
        + " | ".join(f"{v}: ms/run median (min–max)" for v in variants)
        + " | "
        + " | ".join(f"{v} ÷ on" for v in variants[1:])
        + " | load |",
        "|---|" + "---|" * (2 * len(variants) - 1) + "---|",
    ]
    for r in results:
        base = statistics.median(r["ms"]["arena on"])
        cells = [
            f"{statistics.median(r['ms'][v]):,.1f} ({min(r['ms'][v]):,.1f}–{max(r['ms'][v]):,.1f})"
            for v in variants
        ]
        ratios = [f"{base / statistics.median(r['ms'][v]):.2f}×" for v in variants[1:]]
        lines.append(
            f"| {r['model']} {r['point']} | "
            + " | ".join(cells + ratios)
            + f" | {r['load'][0]:.1f} → {r['load'][1]:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--models", type=Path, default=ROOT / "models", help="the default repository")
    parser.add_argument(
        "--before-ref",
        help="git ref whose service/ is measured as 'before' in the idle section (e.g. HEAD~3)",
    )
    parser.add_argument(
        "--sections",
        nargs="+",
        default=["idle", "options", "throughput"],
        choices=["idle", "options", "throughput"],
    )
    parser.add_argument("--rounds", type=int, default=5, help="throughput: windows per variant and point")
    parser.add_argument("--window", type=float, default=0.5, help="throughput: seconds per window (≥ 2 runs)")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(options_child(args.child, args.models)))
        return
    if not (args.models / UPSCALER / "model.json").is_file():
        raise SystemExit(
            f"{args.models}/{UPSCALER} is missing: build the default repository first (`make models`)"
        )
    started = time.time()
    print(f"{os.cpu_count()} cores, load average {load():.1f}\n", flush=True)
    figures: dict[str, Any] = {}
    if "idle" in args.sections:
        figures["imports"] = import_footprint()
        steps = ", ".join(f"{name} {mib:,.0f}" for name, mib in figures["imports"].items())
        print(f"RSS after each import, MiB (cumulative): {steps}", flush=True)
        figures["idle"] = measure_idle(args.models, args.before_ref)
        print(
            "\n**gan-serve on the default repository**\n\n" + idle_table(figures["idle"]) + "\n", flush=True
        )
    if "options" in args.sections:
        figures["options"] = measure_options(args.models)
        print(
            "**Each onnxruntime option, in-process**\n\n" + options_table(figures["options"]) + "\n",
            flush=True,
        )
    if "throughput" in args.sections:
        figures["throughput"] = measure_throughput(args.models, args.rounds, args.window)
        print("\n**What the settings cost**\n\n" + throughput_table(figures["throughput"]) + "\n", flush=True)
    print(f"{time.time() - started:.0f} s", flush=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
