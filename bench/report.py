"""Turning a suite run into tables (markdown), a throughput-vs-concurrency plot, and the docs section."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

Result = dict[str, Any]


def _find(results: list[Result], **want: Any) -> Result | None:
    """The first result whose `extra` (and concurrency) match every key in `want`."""
    for result in results:
        fields = {**result["extra"], "concurrency": result["concurrency"]}
        if all(fields.get(k) == v for k, v in want.items()):
            return result
    return None


def _figure(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _ratio_row(
    name: str, a: Result | None, b: Result | None, target: float | None, note: str = ""
) -> list[str]:
    if a is None or b is None or not b["images_per_s"]:
        return [name, "-", "-", "not measured", f"≥ {target:g}×" if target else "", ""]
    ratio = a["images_per_s"] / b["images_per_s"]
    met = "" if target is None else ("yes" if ratio >= target else "**no**")
    return [
        name,
        _figure(a["images_per_s"]),
        _figure(b["images_per_s"]),
        f"**{ratio:,.2f}×**",
        f"≥ {target:g}×{note}" if target else note,
        met,
    ]


def _mp(result: Result | None) -> Result | None:
    """A result whose `images_per_s` is its megapixels/s, so a ratio row compares output pixels."""
    return None if result is None else {**result, "images_per_s": result["megapixels_per_s"]}


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def ratio_rows(payload: dict[str, Any]) -> list[list[str]]:
    """The comparisons the issue asks for, each as A, B, A/B and its target."""
    results = payload["results"]
    n_formats = payload.get("formats_n", 16)
    n_large = max(
        (r["extra"].get("n", 0) for r in results if r["extra"].get("kind") == "service"), default=64
    )
    cuda = payload["device"] == "cuda"
    on = {"kind": "service", "batching": True, "n": 1, "format": "jpeg"}
    off = {"kind": "service", "batching": False, "n": 1, "format": "jpeg"}
    fmt: Callable[[str], Result | None] = lambda f: _find(  # noqa: E731
        results, kind="service", n=n_formats, format=f
    )
    rows = [
        _ratio_row(
            "service ÷ baseline (Flask + keras predict), n=1, 16 clients",
            _find(results, **on, concurrency=16),
            _find(results, kind="baseline", concurrency=16),
            None if cuda else 20,
            " (CPU)" if not cuda else "",
        ),
        _ratio_row(
            f"service ÷ raw onnxruntime + PNG encode, n={n_formats} PNG",
            fmt("png"),
            _find(results, kind="raw", n=n_formats, format="png"),
            None if cuda else 0.8,
            " (CPU)" if not cuda else "",
        ),
        _ratio_row(
            f"service ÷ raw onnxruntime (model only), n={n_large} npy",
            _find(results, kind="service", n=n_large, format="npy"),
            _find(results, kind="raw", n=n_large, format="array"),
            None,
        ),
        _ratio_row(
            "batching on ÷ off, n=1, 16 clients",
            _find(results, **on, concurrency=16),
            _find(results, **off, concurrency=16),
            None,
        ),
        _ratio_row(
            "batching on ÷ off, n=1, 64 clients",
            _find(results, **on, concurrency=64),
            _find(results, **off, concurrency=64),
            5 if cuda else None,
            " (GPU)" if cuda else "",
        ),
        _ratio_row(
            "service ÷ raw onnxruntime + PNG encode, /upscale (MP/s)",
            _mp(_find(results, kind="service-upscale")),
            _mp(_find(results, kind="raw-upscale", format="png")),
            None,
        ),
        _ratio_row(
            f"service runner ÷ raw onnxruntime, batch {n_large} (model only, no HTTP)",
            _find(results, kind="runner", n=n_large),
            _find(results, kind="raw", n=n_large, format="array"),
            None,
        ),
        _ratio_row(
            "service runner ÷ raw onnxruntime, upscale (model only, MP/s)",
            _mp(_find(results, kind="runner", edge=payload["model"].get("upscale_edge"))),
            _mp(_find(results, kind="raw-upscale", format="array")),
            None,
        ),
        _ratio_row(f"JPEG ÷ PNG, n={n_formats}", fmt("jpeg"), fmt("png"), None),
        _ratio_row(f"npy ÷ PNG, n={n_formats}", fmt("npy"), fmt("png"), None),
    ]
    return rows


def gpu_target_rows(payload: dict[str, Any]) -> list[list[str]]:
    """Issue 6's absolute GPU targets, each against what this run measured."""
    results = payload["results"]
    runner = _find(results, kind="runner", n=256)
    upscale = _find(results, kind="runner", edge=256)
    e2e = _find(results, kind="service", n=payload.get("formats_n"), format="png")
    rows = []
    targets: list[tuple[str, float | None, float, str]] = [
        (
            "face DCGAN batch 256 in the service runner, images/s",
            runner["images_per_s"] if runner else None,
            300_000,
            ">",
        ),
        ("SRGAN ×4 256→1024 in the service runner, p50 ms", upscale["p50_ms"] if upscale else None, 4.5, "<"),
        ("/generate 64×64 PNG n=64 over HTTP, images/s", e2e["images_per_s"] if e2e else None, 16_000, ">"),
    ]
    for name, value, target, better in targets:
        if value is None:
            rows.append([name, "not measured", f"{'≥' if better == '>' else '≤'} {target:,g}", ""])
            continue
        met = value >= target if better == ">" else value <= target
        rows.append(
            [
                name,
                f"{value:,.1f}",
                f"{'≥' if better == '>' else '≤'} {target:,g}",
                "yes" if met else "**no**",
            ]
        )
    return rows


def render_tables(payload: dict[str, Any]) -> str:
    """Markdown: ratios, every load point, peak memory, and the machine."""
    m = payload["machine"]
    model = payload["model"]
    parts = [
        f"Machine: {m.get('cpu', 'unknown CPU')}, {m['cpu_cores']} cores"
        + (f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU")
        + f"; device `{payload['device']}`; onnxruntime {m['onnxruntime']}; "
        f"model {model['architecture']} ({model['height']}×{model['width']}, {model['weights']}); "
        f"{payload['seconds_per_point']:g} s per point{' (--quick)' if payload['quick'] else ''}; "
        f"run {payload['created']}.",
        "",
        "**Ratios** (images/s of A ÷ images/s of B)",
        "",
        _table(["comparison", "A img/s", "B img/s", "A ÷ B", "target", "met"], ratio_rows(payload)),
        "",
        *(
            [
                "**GPU targets**",
                "",
                _table(["target", "measured", "target", "met"], gpu_target_rows(payload)),
                "",
            ]
            if payload["device"] == "cuda"
            else []
        ),
        "**Every point** (closed-loop clients; latency per request)",
        "",
    ]
    rows = []
    for r in payload["results"]:
        rows.append(
            [
                r["label"],
                str(r["concurrency"]),
                f"{r['images_per_s']:,.1f}",
                f"{r['megapixels_per_s']:,.2f}",
                f"{r['requests_per_s']:,.1f}",
                f"{r['p50_ms']:,.1f}",
                f"{r['p95_ms']:,.1f}",
                f"{r['p99_ms']:,.1f}",
                str(r["errors"]),
            ]
        )
    parts.append(
        _table(["what", "clients", "images/s", "MP/s", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors"], rows)
    )
    parts += ["", "**Peak RSS of each server process**", ""]
    rss_rows = [
        [name.replace("_", " "), f"{info['peak_rss_bytes'] / 2**20:,.0f} MiB"]
        for name, info in payload["servers"].items()
    ]
    parts.append(_table(["server", "peak RSS"], rss_rows))
    return "\n".join(parts)


def _curves(payload: dict[str, Any]) -> dict[str, list[tuple[int, float]]]:
    curves: dict[str, list[tuple[int, float]]] = {}
    for r in payload["results"]:
        extra = r["extra"]
        if extra.get("n") != 1:
            continue
        if extra.get("kind") == "service":
            name = f"service, batching {'on' if extra['batching'] else 'off'}"
        elif extra.get("kind") == "baseline":
            name = "baseline (Flask + keras predict)"
        else:
            continue
        curves.setdefault(name, []).append((r["concurrency"], r["images_per_s"]))
    return curves


def write_plot(payload: dict[str, Any], path: Path) -> Path:
    """Throughput vs concurrency at n=1 (log-log); matplotlib when installed, else drawn with Pillow."""
    curves = _curves(payload)
    title = f"/generate n=1 JPEG, {payload['model']['architecture']}, {payload['device']}"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return _pillow_plot(curves, title, path)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for name, points in curves.items():
        xs, ys = zip(*sorted(points), strict=True)
        ax.plot(xs, ys, marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ticks = sorted({c for points in curves.values() for c, _ in points})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("images / s")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _pillow_plot(curves: dict[str, list[tuple[int, float]]], title: str, path: Path) -> Path:
    import math

    from PIL import Image, ImageDraw

    width, height, margin = 760, 480, 70
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    points = [p for c in curves.values() for p in c if p[1] > 0]
    if not points:
        image.save(path)
        return path
    x_lo, x_hi = math.log2(min(p[0] for p in points)), math.log2(max(p[0] for p in points)) or 1
    y_lo, y_hi = math.log10(min(p[1] for p in points)), math.log10(max(p[1] for p in points))
    y_lo, y_hi = math.floor(y_lo), math.ceil(y_hi) if y_hi > y_lo else y_lo + 1

    def xy(c: int, v: float) -> tuple[float, float]:
        fx = (math.log2(c) - x_lo) / ((x_hi - x_lo) or 1)
        fy = (math.log10(max(v, 1e-9)) - y_lo) / (y_hi - y_lo)
        return margin + fx * (width - 2 * margin), height - margin - fy * (height - 2 * margin)

    for decade in range(int(y_lo), int(y_hi) + 1):
        _, y = xy(1 << int(x_lo), 10.0**decade)
        draw.line([margin, y, width - margin, y], fill=(220, 220, 220))
        draw.text((8, y - 6), f"{10**decade:g}", fill="black")
    draw.rectangle([margin, margin, width - margin, height - margin], outline="black")
    for c in sorted({p[0] for p in points}):
        x, _ = xy(c, 10.0**y_lo)
        draw.text((x - 6, height - margin + 8), str(c), fill="black")
    colours = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40)]
    for i, (name, curve) in enumerate(curves.items()):
        colour = colours[i % len(colours)]
        line = [xy(c, v) for c, v in sorted(curve)]
        if len(line) > 1:
            draw.line(line, fill=colour, width=2)
        for x, y in line:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        draw.text((margin + 10, margin + 10 + 16 * i), name, fill=colour)
    draw.text((margin, 20), title, fill="black")
    draw.text((width // 2 - 50, height - 30), "concurrent clients", fill="black")
    draw.text((8, margin - 20), "images/s", fill="black")
    image.save(path)
    return path


def write_docs(payload: dict[str, Any], plot: Path, docs: Path) -> Path:
    """Replace the generated section for this device in docs/performance.md, and copy the plot beside it."""
    device = payload["device"]
    image_dir = docs / "img"
    image_dir.mkdir(parents=True, exist_ok=True)
    image = image_dir / f"throughput-{device}.png"
    shutil.copyfile(plot, image)
    begin, end = f"<!-- bench:{device}:begin -->", f"<!-- bench:{device}:end -->"
    section = "\n".join(
        [
            begin,
            "<!-- Generated by bench/suite.py; edits between these markers are overwritten. -->",
            "",
            payload["tables_markdown"],
            "",
            f"![Throughput vs concurrency, {device}](img/{image.name})",
            "",
            end,
        ]
    )
    path = docs / "performance.md"
    text = path.read_text() if path.exists() else "# Performance\n"
    if begin in text and end in text:
        text = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: section, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)
    return path
