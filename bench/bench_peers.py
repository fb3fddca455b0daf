"""The product beside the servers users would pick instead, on the same ONNX files: `make bench-peers`.

    make bench-peers                                   # CPU: builds the peers' venvs, then the full run
    .venv/bin/python bench/bench_peers.py --quick      # one short round (a smoke run)
    .venv/bin/python bench/bench_peers.py --device cuda

The peers (bench/peers/): a naive FastAPI + onnxruntime app, BentoML with adaptive batching and Ray
Serve with `@serve.batch`, each from its own virtual environment under `.bench-venvs/<device>/`
(built by the Makefile from bench/peers/requirements/; built on demand here when missing), each
serving the model repository's faces64 and srgan-x4 files. Every server is started once, checked
to answer with the product's bytes, measured idle, then driven point by point by one closed-loop
client process (bench/peers/client.py) in short windows: in each round, every point runs once on
every server, back to back, in an order that rotates, so each product ÷ peer ratio compares
windows a few seconds apart. The whole run happens inside a private network namespace (Ray binds
internal servers to every interface), client included.

Prints Markdown tables and writes `bench/results/peers-<device>-<time>.json` (every window) and
`.md` (the tables).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT))

from peers.procstat import tree_cpu, tree_memory  # noqa: E402
from peers.report import render  # noqa: E402
from peers.servers import (  # noqa: E402
    PEER_EXECUTABLES,
    PEERS,
    Server,
    peer_server,
    pip_freeze,
    product_server,
    product_source,
    request,
)
from peers.verify import Probe, Verdict, verify  # noqa: E402

RESULTS = BENCH / "results"
GENERATOR = "faces64"
UPSCALER = "srgan-x4"
NETNS_MARK = "BENCH_PEERS_IN_NETNS"


@dataclass(frozen=True)
class Point:
    """One load point: a request and how many clients send it."""

    key: str
    label: str
    images_per_request: int
    clients: int


def points() -> list[Point]:
    """/generate faces64 n=1 and n=16, /upscale srgan-x4 64→256, each at 1, 16 and 64 clients (every
    request with seed 1); and one client asking for random samples (n=1, no seed), where the
    product may answer with images made ahead (`GAN_SERVE_READY_IMAGES`) and every peer draws a seed."""
    found = []
    for key, label, images in (
        ("gen1", "/generate n=1", 1),
        ("gen16", "/generate n=16", 16),
        ("upscale", "/upscale 64→256", 1),
    ):
        for clients in (1, 16, 64):
            found.append(Point(f"{key}-c{clients}", label, images, clients))
    found.append(Point("random1-c1", "/generate n=1 random sample (no seed)", 1, 1))
    return found


def http_request(method: str, target: str, port: int, body: bytes, content_type: str) -> bytes:
    """The whole HTTP/1.1 request the client sends, as bytes."""
    head = (
        f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


def generate_body(n: int, seed: int | None) -> bytes:
    body = {"model": GENERATOR, "n": n, "format": "png"}
    return json.dumps(body if seed is None else {**body, "seed": seed}).encode()


UPSCALE_TARGET = f"/upscale?model={UPSCALER}&format=png"


# -- setting up -----------------------------------------------------------------------------------


def enter_private_netns(argv: list[str]) -> None:
    """Re-run this script in a new network namespace with loopback up; return if that is not possible."""
    if os.environ.get(NETNS_MARK) or shutil.which("unshare") is None:
        return
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        print("unshare --net is not permitted here: running on the host's network", flush=True)
        return
    script = 'ip link set lo up && exec "$@"'
    command = ["unshare", "--net", "--", "sh", "-c", script, "sh", sys.executable, __file__, *argv]
    os.environ[NETNS_MARK] = "1"
    os.execvp(command[0], command)


def repository_view(models: Path, work: Path) -> Path:
    """A repository of just faces64 and srgan-x4 (links into `models`), served by every server alike."""
    view = work / "repo"
    shutil.rmtree(view, ignore_errors=True)
    view.mkdir(parents=True)
    for name in (GENERATOR, UPSCALER):
        entry = (models / name).resolve()
        if not (entry / "model.json").is_file():
            raise SystemExit(f"{entry} is missing: build the default repository first (`make models`)")
        (view / name).symlink_to(entry)
    return view


def ensure_venvs(venvs: Path, device: str, peers: list[str]) -> None:
    """Build missing peer environments with the Makefile's rules (it pins what they install)."""
    missing = [p for p in peers if not (venvs / p / PEER_EXECUTABLES[p]).exists()]
    if not missing:
        return
    default = ROOT / ".bench-venvs" / device
    if venvs != default:
        raise SystemExit(f"{venvs}: no environment for {', '.join(missing)} (make builds them in {default})")
    print(f"building peer environments: {', '.join(missing)}", flush=True)
    stamps = [f".bench-venvs/{device}/{p}/.installed" for p in missing]
    subprocess.run(["make", f"PEER_DEVICE={device}", *stamps], cwd=ROOT, check=True)


def machine_info(device: str) -> dict[str, Any]:
    """CPU, cores, memory, kernel, GPU (if any) and the product's onnxruntime."""
    from suite import machine

    info = machine()
    info["device"] = device
    meminfo = Path("/proc/meminfo").read_text().split()
    info["memory_gib"] = round(int(meminfo[meminfo.index("MemTotal:") + 1]) / 2**20, 1)
    return info


def uncommitted_service_changes() -> str:
    """`git status` of service/ in the checkout (what a run from the checkout adds to its commit)."""
    done = subprocess.run(
        ["git", "status", "--porcelain", "--", "service"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip()


# -- measuring ------------------------------------------------------------------------------------


def idle_state(servers: list[Server], seconds: float) -> dict[str, dict[str, Any]]:
    """Each server's memory, and its CPU while nothing is sent to any server, over `seconds`."""
    before = {s.name: tree_cpu(s.pid) for s in servers}
    time.sleep(seconds)
    state = {}
    for server in servers:
        memory = tree_memory(server.pid)
        state[server.name] = {
            "rss_bytes": memory.rss_bytes,
            "pss_bytes": memory.pss_bytes,
            "processes": memory.processes,
            "idle_cores": tree_cpu(server.pid).seconds_since(before[server.name]) / seconds,
            "started_in_s": round(server.started_in_s, 1),
        }
    return state


def run_window(
    server: Server, point: Point, request_file: Path, warmup: float, window: float
) -> dict[str, Any]:
    """One measured window of `point` on `server`, by the client process."""
    spec = {
        "host": "127.0.0.1",
        "port": server.port,
        "request_file": str(request_file),
        "images_per_request": point.images_per_request,
        "concurrency": point.clients,
        "warmup_s": warmup,
        "window_s": window,
        "server_pid": server.pid,
    }
    done = subprocess.run(
        [sys.executable, "-m", "peers.client"],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        cwd=BENCH,
        env={**os.environ, "PYTHONPATH": str(BENCH)},
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the client failed on {server.label}, {point.key}:\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def settle(server: Server, idle_cores: float, limit: float = 120.0) -> float:
    """Wait until `server` is back to its idle CPU (requests cut off by the client may still run)."""
    threshold = max(0.25, 2 * idle_cores)
    begun = time.monotonic()
    while time.monotonic() - begun < limit:
        before = tree_cpu(server.pid)
        time.sleep(0.5)
        if tree_cpu(server.pid).seconds_since(before) / 0.5 < threshold:
            break
    return time.monotonic() - begun


def full_repository_rss(models: Path, device: str, work: Path, source: Path) -> dict[str, Any] | None:
    """The product's idle memory when it serves the whole default repository (every entry of `models`)."""
    entries = sorted(d.name for d in models.iterdir() if (d / "model.json").is_file())
    if entries == sorted([GENERATOR, UPSCALER]):
        return None
    server = product_server(models.resolve(), device, work, source, name="product-full-repository")
    server.start()
    try:
        time.sleep(3)
        memory = tree_memory(server.pid)
    finally:
        server.stop()
    return {"entries": entries, "rss_bytes": memory.rss_bytes, "pss_bytes": memory.pss_bytes}


@dataclass(frozen=True)
class Plan:
    """What one run measures, and with what."""

    device: str
    quick: bool
    rounds: int
    window: float
    warmup: float
    models: Path
    venvs: Path
    peers: list[str]
    schedule: list[Point]
    product_ref: str | None


def parse_plan(argv: list[str]) -> tuple[Plan, bool]:
    """The plan from the command line, and whether to stay on the host's network."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--quick", action="store_true", help="one round of short windows (a smoke run)")
    parser.add_argument("--rounds", type=int, help="rounds (default 5; --quick: 1)")
    parser.add_argument("--window", type=float, help="measured seconds per window (default 10; --quick: 3)")
    parser.add_argument("--warmup", type=float, help="unmeasured seconds before each window (default 3; 1)")
    parser.add_argument("--models", type=Path, default=ROOT / "models", help="the default repository")
    parser.add_argument("--venvs", type=Path, help="peer environments (default .bench-venvs/<device>)")
    parser.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated subset of {PEERS}")
    parser.add_argument("--points", help="comma-separated subset of point keys (e.g. gen1-c16)")
    parser.add_argument(
        "--product-ref",
        help="run the product's service/ from this git ref (e.g. HEAD) instead of the checkout's files",
    )
    parser.add_argument("--no-netns", action="store_true", help="stay on the host's network namespace")
    args = parser.parse_args(argv)
    plan = Plan(
        device=args.device,
        quick=args.quick,
        rounds=args.rounds or (1 if args.quick else 5),
        window=args.window or (3.0 if args.quick else 10.0),
        warmup=args.warmup or (1.0 if args.quick else 3.0),
        models=args.models.resolve(),
        venvs=(args.venvs or ROOT / ".bench-venvs" / args.device).resolve(),
        peers=[p for p in args.peers.split(",") if p],
        schedule=[p for p in points() if not args.points or p.key in args.points.split(",")],
        product_ref=args.product_ref,
    )
    return plan, args.no_netns


def check_identity(servers: list[Server]) -> tuple[bytes, dict[str, list[Verdict]]]:
    """A face from the product (the /upscale input), and each peer's verdicts on the probes."""
    product = servers[0]
    json_type = {"Content-Type": "application/json"}
    status, _, face = request(product.port, "POST", "/generate", generate_body(1, 0), json_type)
    if status != 200:
        raise RuntimeError(f"the product answered {status} to /generate")
    probes = [
        Probe("/generate n=1", "POST", "/generate", generate_body(1, 7), "application/json"),
        Probe("/generate n=16", "POST", "/generate", generate_body(16, 7), "application/json"),
        Probe("/upscale 64→256", "POST", UPSCALE_TARGET, face, "image/png"),
    ]
    verdicts = verify(product, servers[1:], probes)
    for peer, found in verdicts.items():
        for verdict in found:
            print(f"  {peer:<8} {verdict.probe:<16} {verdict.detail}", flush=True)
    return face, verdicts


def write_requests(servers: list[Server], face: bytes, work: Path) -> dict[tuple[str, str], Path]:
    """The request each server gets at each kind of point, as files of raw HTTP."""
    files = {}
    for server in servers:
        for key, target, body, kind in (
            ("gen1", "/generate", generate_body(1, 1), "application/json"),
            ("gen16", "/generate", generate_body(16, 1), "application/json"),
            ("random1", "/generate", generate_body(1, None), "application/json"),
            ("upscale", UPSCALE_TARGET, face, "image/png"),
        ):
            path = work / f"request-{server.name}-{key}.http"
            path.write_bytes(http_request("POST", target, server.port, body, kind))
            files[server.name, key] = path
    return files


def run_rounds(
    plan: Plan,
    servers: list[Server],
    requests: dict[tuple[str, str], Path],
    idle: dict[str, dict[str, Any]],
) -> list[dict[str, Any]]:
    """Every point on every server, round after round; the servers' order rotates per round and point."""
    windows = []
    print(f"{plan.rounds * len(plan.schedule) * len(servers)} windows of {plan.warmup:g} + {plan.window:g} s")
    for round_index in range(plan.rounds):
        for point_index, point in enumerate(plan.schedule):
            shift = (round_index + point_index) % len(servers)
            for server in servers[shift:] + servers[:shift]:
                kind = point.key.split("-")[0]
                result = run_window(server, point, requests[server.name, kind], plan.warmup, plan.window)
                result.update({"round": round_index, "point": point.key, "server": server.name})
                result["at"] = time.time()
                result["settle_s"] = settle(server, idle[server.name]["idle_cores"])
                windows.append(result)
                errors = (
                    f"  errors {result['errors']}: {result['error_sample'][:80]!r}"
                    if result["errors"]
                    else ""
                )
                print(
                    f"  round {round_index + 1} {point.key:<11} {server.name:<8}"
                    f" {result['images_per_s']:8.1f} img/s  p50 {result['p50_ms']:8.1f} ms"
                    f"  cpu {result['server_cpu_ms_per_image'] or 0:6.2f} ms/img"
                    f"  busy {result['machine_busy'] * 100:3.0f}%  load {result['loadavg_end']:.2f}{errors}",
                    flush=True,
                )
    return windows


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    plan, host_network = parse_plan(argv)
    if not host_network:
        enter_private_netns(argv)
    started = time.perf_counter()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    work = RESULTS / "work" / "peers"
    work.mkdir(parents=True, exist_ok=True)
    ensure_venvs(plan.venvs, plan.device, plan.peers)
    repo = repository_view(plan.models, work)
    versions = {"product": pip_freeze(Path(sys.executable))}
    versions.update({peer: pip_freeze(plan.venvs / peer / "bin/python") for peer in plan.peers})

    print("idle memory of the product on the whole default repository", flush=True)
    source, commit = product_source(plan.product_ref, work)
    changes = "" if plan.product_ref else uncommitted_service_changes()
    full_repo = full_repository_rss(plan.models, plan.device, work, source)

    servers = [product_server(repo, plan.device, work, source)]
    servers += [peer_server(p, plan.venvs / p, repo, plan.device, work) for p in plan.peers]
    try:
        for server in servers:
            print(f"starting {server.label}", flush=True)
            server.start()
        face, verdicts = check_identity(servers)
        print("idle state (nothing sent for 5 s)", flush=True)
        idle = idle_state(servers, 5.0)
        windows = run_rounds(plan, servers, write_requests(servers, face, work), idle)
        after = {s.name: tree_memory(s.pid).rss_bytes for s in servers}
    finally:
        for server in servers:
            server.stop()

    wall_seconds = round(time.perf_counter() - started, 1)
    payload: dict[str, Any] = {
        "created": stamp,
        "device": plan.device,
        "quick": plan.quick,
        "rounds": plan.rounds,
        "window_s": plan.window,
        "warmup_s": plan.warmup,
        "netns": bool(os.environ.get(NETNS_MARK)),
        "machine": machine_info(plan.device),
        "git": {"commit": commit, "service_changes": changes},
        "versions": versions,
        "servers": {s.name: {"label": s.label, "command": s.command} for s in servers},
        "points": [p.__dict__ for p in plan.schedule],
        "identity": {peer: [v.as_dict() for v in found] for peer, found in verdicts.items()},
        "idle": idle,
        "rss_after_bytes": after,
        "full_repository": full_repo,
        "windows": windows,
        "wall_seconds": wall_seconds,
    }
    tables = render(payload)
    json_path = RESULTS / f"peers-{plan.device}-{stamp}.json"
    json_path.write_text(json.dumps(payload, indent=1) + "\n")
    json_path.with_suffix(".md").write_text(tables + "\n")
    print()
    print(tables)
    print(f"\nresults: {json_path} (and .md); {wall_seconds / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
