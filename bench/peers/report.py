"""Markdown tables from a `bench_peers.py` run: ratios with their spread, every point, idle state, load."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

from peers.servers import LABELS

Window = dict[str, Any]
MIB = 2**20
#: Packages whose versions the header names, per environment.
KEY_PACKAGES = ("onnxruntime", "onnxruntime-gpu", "fastapi", "uvicorn", "bentoml", "ray", "numpy", "pillow")


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _num(value: float | None, digits: int = 3) -> str:
    if value is None or value != value:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}" if abs(value) < 100 else f"{value:.0f}"


def _spread(values: list[float], fmt: Callable[[float], str] = _num, bold: bool = False) -> str:
    """`median (min–max)`; the median alone when there is one value."""
    values = [v for v in values if v is not None and v == v]
    if not values:
        return "-"
    middle = fmt(statistics.median(values))
    middle = f"**{middle}**" if bold else middle
    if len(values) == 1:
        return middle
    return f"{middle} ({fmt(min(values))}–{fmt(max(values))})"


def _ratio(value: float) -> str:
    return f"{value:.2f}×"


class Run:
    """A run's windows, indexed by (point, server) and by (round, point)."""

    def __init__(self, payload: dict[str, Any]) -> None:
        self.payload = payload
        self.servers: list[str] = list(payload["servers"])
        self.peers = [s for s in self.servers if s != "product"]
        self.points: list[dict[str, Any]] = payload["points"]
        self.cells: dict[tuple[str, str], list[Window]] = {}
        self.rounds: dict[tuple[int, str], dict[str, Window]] = {}
        for window in payload["windows"]:
            self.cells.setdefault((window["point"], window["server"]), []).append(window)
            self.rounds.setdefault((window["round"], window["point"]), {})[window["server"]] = window

    def values(self, point: str, server: str, key: str) -> list[float]:
        return [w[key] for w in self.cells.get((point, server), []) if w.get(key) is not None]

    def ratios(self, point: str, peer: str | None) -> list[float]:
        """Product ÷ `peer` images/s per round (None: ÷ the round's best peer)."""
        found = []
        for (_, key), by_server in sorted(self.rounds.items()):
            if key != point or "product" not in by_server:
                continue
            rivals = [
                by_server[p]["images_per_s"] for p in ([peer] if peer else self.peers) if p in by_server
            ]
            if rivals and max(rivals) > 0:
                found.append(by_server["product"]["images_per_s"] / max(rivals))
        return found


def _point_name(point: dict[str, Any]) -> str:
    return f"{point['label']}, {point['clients']} client{'s' if point['clients'] > 1 else ''}"


def ratio_table(run: Run) -> str:
    header = ["point", *(f"÷ {LABELS[p]}" for p in run.peers), "÷ best peer"]
    rows = []
    for point in run.points:
        key = point["key"]
        cells = [_spread(run.ratios(key, peer), _ratio, bold=True) for peer in [*run.peers, None]]
        rows.append([_point_name(point), *cells])
    return _table(header, rows)


def point_table(run: Run) -> str:
    header = [
        "point",
        "server",
        "images/s",
        "CPU ms/image",
        "cores used",
        "p50 ms",
        "p99 ms",
        "RSS MiB",
        "machine busy %",
        "other load, cores",
        "loadavg 1 min",
        "errors",
    ]
    cores = run.payload["machine"].get("cpu_cores") or 1
    rows = []
    for point in run.points:
        for server in run.servers:
            cell = run.cells.get((point["key"], server), [])
            if not cell:
                continue
            others = [w["machine_busy"] * cores - w["server_cores"] - w["client_cores"] for w in cell]
            rows.append(
                [
                    _point_name(point),
                    LABELS[server],
                    _spread(run.values(point["key"], server, "images_per_s")),
                    _spread(run.values(point["key"], server, "server_cpu_ms_per_image")),
                    _spread(run.values(point["key"], server, "server_cores"), lambda v: f"{v:.2f}"),
                    _spread(run.values(point["key"], server, "p50_ms")),
                    _spread(run.values(point["key"], server, "p99_ms")),
                    _num(statistics.median(w["server_rss_bytes"] for w in cell) / MIB),
                    _spread([w["machine_busy"] * 100 for w in cell], lambda v: f"{v:.0f}"),
                    _spread(others, lambda v: f"{max(v, 0.0):.2f}"),
                    _spread([w["loadavg_end"] for w in cell], lambda v: f"{v:.1f}"),
                    str(sum(w["errors"] for w in cell)),
                ]
            )
    return _table(header, rows)


def idle_table(run: Run) -> str:
    rows = []
    after = run.payload.get("rss_after_bytes", {})
    for server in run.servers:
        idle = run.payload["idle"][server]
        rows.append(
            [
                LABELS[server],
                _num(idle["rss_bytes"] / MIB),
                _num(idle["pss_bytes"] / MIB),
                str(idle["processes"]),
                f"{idle['idle_cores']:.3f}",
                _num(after[server] / MIB) if server in after else "-",
                f"{idle['started_in_s']:.0f}",
            ]
        )
    full = run.payload.get("full_repository")
    if full:
        rows.append(
            [
                f"gan-serve, whole default repository ({len(full['entries'])} entries)",
                _num(full["rss_bytes"] / MIB),
                _num(full["pss_bytes"] / MIB),
                "-",
                "-",
                "-",
                "-",
            ]
        )
    header = [
        "server",
        "idle RSS MiB",
        "idle PSS MiB",
        "processes",
        "idle cores",
        "RSS after run MiB",
        "start s",
    ]
    return _table(header, rows)


def _same(verdict: dict[str, Any]) -> str:
    """A verdict's level: bytes, pixels or no (runs before pixel checks stored a boolean `identical`)."""
    if "same" in verdict:
        return str(verdict["same"])
    return "bytes" if verdict.get("identical") else "no"


def identity_table(run: Run) -> str:
    rows = []
    for peer, verdicts in run.payload["identity"].items():
        cells = [("yes: " if _same(v) != "no" else "**no**: ") + v["detail"] for v in verdicts]
        rows.append([LABELS[peer], *cells])
    probes = [v["probe"] for v in next(iter(run.payload["identity"].values()), [])]
    return _table(["peer", *(f"{p} same as product" for p in probes)], rows)


def target_table(run: Run) -> str:
    """Issue 12's measurable targets, each with what this run measured (median, spread)."""
    rows = []

    def ratio_row(key: str, target: float) -> None:
        point = next((p for p in run.points if p["key"] == key), None)
        values = run.ratios(key, None)
        if point is None or not values:
            return
        median = statistics.median(values)
        rows.append(
            [
                f"product ÷ best peer, {_point_name(point)}",
                _spread(values, _ratio),
                f"≥ {target:g}×",
                "yes" if median >= target else "**no**",
            ]
        )

    for key in ("gen1-c1", "gen1-c16", "gen1-c64", "gen16-c1", "gen16-c16", "gen16-c64"):
        ratio_row(key, 1.5 if key in ("gen1-c16", "gen1-c64") else 1.2)
    for key in ("upscale-c1", "upscale-c16", "upscale-c64"):
        ratio_row(key, 1.05)
    cpu = run.values("gen1-c16", "product", "server_cpu_ms_per_image")
    if cpu:
        met = statistics.median(cpu) <= 3.3
        rows.append(
            [
                "product CPU per image, /generate n=1, 16 clients (ms)",
                _spread(cpu),
                "≤ 3.3",
                "yes" if met else "**no**",
            ]
        )
    ours, naive = run.values("gen1-c1", "product", "p50_ms"), run.values("gen1-c1", "naive", "p50_ms")
    if ours and naive:
        met = statistics.median(ours) < statistics.median(naive)
        rows.append(
            [
                "single-client /generate n=1 p50 (ms): product vs naive",
                f"{_spread(ours)} vs {_spread(naive)}",
                "below naive",
                "yes" if met else "**no**",
            ]
        )
    full = run.payload.get("full_repository")
    rss = full["rss_bytes"] if full else run.payload["idle"]["product"]["rss_bytes"]
    rows.append(
        [
            "product idle RSS, default repository (MiB)",
            _num(rss / MIB),
            "≤ 400",
            "yes" if rss <= 400 * MIB else "**no**",
        ]
    )
    return _table(["target (issue 12)", "measured: median (min–max)", "target", "met"], rows)


def header(run: Run) -> str:
    p = run.payload
    m = p["machine"]
    versions = []
    for env, packages in p["versions"].items():
        named = [f"{k} {packages[k]}" for k in KEY_PACKAGES if k in packages]
        versions.append(f"{LABELS.get(env, env)}: {', '.join(named)}")
    client = [w["client_cores"] for w in p["windows"]]
    # Per request only where requests are many: a slow window's cost is its fixed /proc sampling.
    per_request = [w["client_cpu_ms_per_request"] for w in p["windows"] if w["requests_per_s"] >= 50]
    busy = [w["machine_busy"] * 100 for w in p["windows"]]
    load = [w["loadavg_end"] for w in p["windows"]]
    cut_off = sum(1 for w in p["windows"] if w.get("unfinished_after_drain"))
    lines = [
        f"Machine: {m.get('cpu', 'unknown CPU')}, {m.get('cpu_cores')} cores, {m.get('memory_gib')} GiB"
        + (f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU")
        + f"; device `{p['device']}`; {m.get('platform')}; Python {m.get('python')}.",
        f"Run {p['created']}: {p['rounds']} round(s), each point on every server in turn for "
        f"{p['warmup_s']:g} s warm-up + {p['window_s']:g} s measured; {len(p['windows'])} windows; "
        f"{p['wall_seconds'] / 60:.0f} min in all{' (--quick)' if p['quick'] else ''}; "
        f"{'in a private network namespace' if p['netns'] else 'on the host network'}; "
        f"product at commit {p['git']['commit']}"
        + (" with uncommitted changes under service/" if p["git"].get("service_changes") else "")
        + ".",
        f"Machine load over all windows: all-CPU busy {_spread(busy, lambda v: f'{v:.0f}')} %, "
        f"1-min loadavg {_spread(load, lambda v: f'{v:.1f}')}.",
        f"Load client (one process, epoll, keep-alive): {_spread(client, lambda v: f'{v:.3f}')} cores, "
        f"{_spread(per_request, lambda v: f'{v:.2f}')} ms CPU per request at ≥ 50 requests/s; "
        f"{cut_off} window(s) with "
        "requests still unanswered 60 s after the window.",
        "",
        *(f"- {v}" for v in versions),
    ]
    return "\n".join(lines)


def render(payload: dict[str, Any]) -> str:
    """Every table of a run, in Markdown."""
    run = Run(payload)
    return "\n".join(
        [
            header(run),
            "",
            "**Product ÷ peer, images/s** (median over rounds, min–max; each ratio within one round)",
            "",
            ratio_table(run),
            "",
            "**Issue 12's targets**",
            "",
            target_table(run),
            "",
            "**Every point** (median over rounds, min–max; CPU is the server's whole process tree; "
            "other load = busy cores − server − client)",
            "",
            point_table(run),
            "",
            "**Idle** (after start-up and the identity check; idle cores over 5 s with no requests anywhere)",
            "",
            idle_table(run),
            "",
            "**Same answers** (checked at the start of the run)",
            "",
            identity_table(run),
        ]
    )
