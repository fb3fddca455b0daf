"""The figures and table in docs/, made from the default repository's exported ONNX models.

    python -m zoo.figures --repo models --docs docs

Writes `faces-grid.png` (4×4 faces64 samples, fixed seed) and `upscale-comparison.png` (held-out
photographs: input, bicubic, srgan-x4, original), and prints the Y-channel PSNR table in Markdown.
Everything runs through onnxruntime, the way the service runs the models.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from zoo import srgan_data

GRID_SEED = 1
# (top, left, size) of the high-resolution crop shown for each held-out photograph.
COMPARISON_CROPS = {"chelsea": (50, 110, 128), "coffee": (190, 290, 128)}
ZOOM = 2


def _session(repo: Path, name: str) -> tuple[Any, dict[str, Any]]:
    import onnxruntime as ort

    card = json.loads((repo / name / "model.json").read_text())
    session = ort.InferenceSession(str(repo / name / card["file"]), providers=["CPUExecutionProvider"])
    return session, card


def faces_grid(repo: Path, out: Path, seed: int = GRID_SEED, gap: int = 2) -> Path:
    """A 4×4 grid of faces64 samples for N(0, 1) latents from `seed`, each face shown at ×2."""
    session, card = _session(repo, "faces64")
    latents = np.random.default_rng(seed).standard_normal((16, card["latent_size"])).astype(np.float32)
    (images,) = session.run(None, {card["input_name"]: latents})
    faces = srgan_data.to_uint8(images)
    side = 64 * ZOOM
    grid = Image.new("RGB", (4 * side + 5 * gap, 4 * side + 5 * gap), "white")
    for i, face in enumerate(faces):
        tile = Image.fromarray(face).resize((side, side), Image.Resampling.NEAREST)
        grid.paste(tile, (gap + (i % 4) * (side + gap), gap + (i // 4) * (side + gap)))
    grid.save(out, optimize=True)
    return out


def upscale_onnx(session: Any, card: dict[str, Any], lr: np.ndarray) -> np.ndarray:
    """srgan-x4 through onnxruntime on one uint8 image; uint8 ×4 result."""
    (out,) = session.run(None, {card["input_name"]: lr[None].astype(np.float32) / 255.0})
    return srgan_data.to_uint8(out[0])


def psnr_table(repo: Path) -> list[dict[str, Any]]:
    """Y-channel PSNR of bicubic and of the exported srgan-x4 on the validation and test photographs."""
    session, card = _session(repo, "srgan-x4")
    rows = []
    for role, images in (
        ("held-out test", srgan_data.TEST_IMAGES),
        ("validation", srgan_data.VALIDATION_IMAGES),
    ):
        for name, loader in images.items():
            hr = srgan_data.load_rgb(loader)
            lr = srgan_data.downscale(hr)
            bicubic = srgan_data.psnr_y(hr, srgan_data.upscale_bicubic(lr))
            model = srgan_data.psnr_y(hr, upscale_onnx(session, card, lr))
            size = f"{lr.shape[1]}×{lr.shape[0]} → {hr.shape[1]}×{hr.shape[0]}"
            rows.append({"image": name, "role": role, "size": size, "bicubic": bicubic, "srgan": model})
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The PSNR rows as a Markdown table."""
    lines = [
        "| photograph | used for | LR → HR | bicubic (dB) | srgan-x4 (dB) | gain (dB) |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        gain = r["srgan"] - r["bicubic"]
        figures = f"{r['bicubic']:.2f} | {r['srgan']:.2f} | {gain:+.2f}"
        lines.append(f"| `{r['image']}` | {r['role']} | {r['size']} | {figures} |")
    return "\n".join(lines)


def upscale_comparison(repo: Path, out: Path, gap: int = 4) -> Path:
    """Crops of the held-out photographs: LR input (nearest), bicubic, srgan-x4, original; labelled."""
    session, card = _session(repo, "srgan-x4")
    labels = ("input x1/4 (nearest)", "bicubic x4", "srgan-x4", "original")  # the default font has no ×
    side = max(size for _, _, size in COMPARISON_CROPS.values()) * ZOOM
    label_h = 18
    width = len(labels) * (side + gap) + gap
    height = len(COMPARISON_CROPS) * (side + label_h + gap) + gap
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for row, (name, (top, left, size)) in enumerate(COMPARISON_CROPS.items()):
        hr = srgan_data.load_rgb(srgan_data.TEST_IMAGES[name])
        lr = srgan_data.downscale(hr)
        nearest = np.asarray(Image.fromarray(lr).resize((hr.shape[1], hr.shape[0]), Image.Resampling.NEAREST))
        panels = (nearest, srgan_data.upscale_bicubic(lr), upscale_onnx(session, card, lr), hr)
        y = gap + row * (side + label_h + gap)
        for col, (label, image) in enumerate(zip(labels, panels, strict=True)):
            x = gap + col * (side + gap)
            crop = Image.fromarray(image[top : top + size, left : left + size])
            canvas.paste(crop.resize((side, side), Image.Resampling.NEAREST), (x, y + label_h))
            draw.text((x + 2, y + 3), f"{name}: {label}", fill="black")
    canvas.save(out, optimize=True)
    return out


def main(argv: list[str] | None = None) -> None:
    """Command line: write both figures into --docs and print the PSNR table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repo", type=Path, default=Path("models"))
    p.add_argument("--docs", type=Path, default=Path("docs"))
    args = p.parse_args(argv)
    args.docs.mkdir(parents=True, exist_ok=True)
    print(faces_grid(args.repo, args.docs / "faces-grid.png"))
    print(upscale_comparison(args.repo, args.docs / "upscale-comparison.png"))
    print(markdown_table(psnr_table(args.repo)))


if __name__ == "__main__":
    main()
