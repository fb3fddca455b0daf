"""Rendering: a core result in, the bytes the client asked for out — the one place that encodes.

Format negotiation (one `Accept` parser, two policies), image encoding, the zip / grid / animation /
JSON envelopes, the result headers (`X-Model`, `X-Seed`, ...), the Open Inference Protocol's tensor
responses and response size limits all live here. Every front door calls these functions with a
result of `service.inference` and sends back the `Rendered` they return; none reads a body back.

Two `Accept` policies, over the same parsed header:

- `prefers_json` (`/generate`, `/upscale`): the body or query picks the file format; JSON with
  base64 images only when Accept lists application/json at least as high as any concrete type.
- `choose_output` (SageMaker's `/invocations`, which cannot send query parameters): Accept picks
  the output itself (an image type, npy, JSON or zip); `406` when it names nothing we make.

Encoding is CPU work: callers run `render_*` in the encode pool, never on the event loop.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from fastapi import Response

from service.encode import (
    FILE_EXTENSIONS,
    MEDIA_TYPES,
    AnimationFormat,
    GenerateFormat,
    OutputFormat,
    encode_animation,
    encode_image,
    encode_npy,
    supports_alpha,
    zip_files,
)
from service.errors import InvalidRequest, NotAcceptable, ResponseTooLarge
from service.inference import GeneratedImages, UpscaledImage
from service.pixels import make_grid

JSON_MEDIA_TYPE = "application/json"
ZIP_MEDIA_TYPE = "application/zip"
#: The Open Inference Protocol's binary tensor data extension: a JSON header, then raw tensor bytes.
BINARY_TENSORS_MEDIA_TYPE = "application/octet-stream"
INFERENCE_HEADER_LENGTH = "Inference-Header-Content-Length"

#: `images`: one file per image; `grid`: one image; `animation`: one animated image, a frame per image.
GenerateLayout = Literal["images", "grid", "animation"]
#: Milliseconds each frame of an animation shows when the request does not say.
DEFAULT_FRAME_MS = 100
#: `auto`: one file as itself, several in a zip; `zip`: a zip even for one; `json`: base64 in JSON.
Envelope = Literal["auto", "zip", "json"]
#: What `choose_output` picks: a file format, an envelope, or None for the request's own format.
Output = GenerateFormat | Literal["json", "zip"] | None

#: `X-Labels` lists the labels only up to this many images; JSON `labels` always holds them all.
MAX_HEADER_LABELS = 64

#: Accept media types `choose_output` serves, and the output each selects.
ACCEPTED: dict[str, Output] = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/webp": "webp",
    "image/gif": "gif",
    MEDIA_TYPES["npy"]: "npy",
    JSON_MEDIA_TYPE: "json",
    ZIP_MEDIA_TYPE: "zip",
    "*/*": None,
    "image/*": None,
    "application/*": None,
}
_WILDCARDS = ("*/*", "application/*")


@dataclass(frozen=True)
class MediaRange:
    """One media range of an `Accept` header: its lower-case type, its q, and where it was listed."""

    media_type: str
    quality: float
    position: int


def parse_accept(accept: str | None) -> list[MediaRange]:
    """Every media range of `accept` in listed order; a malformed q counts as 0 (not acceptable)."""
    ranges = []
    for position, part in enumerate((accept or "").split(",")):
        media_type, *params = (piece.strip() for piece in part.split(";"))
        if not media_type:
            continue
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        ranges.append(MediaRange(media_type.lower(), quality, position))
    return ranges


def prefers_json(accept: str | None) -> bool:
    """True when Accept lists application/json (q > 0) at least as high as every concrete type."""
    ranges = parse_accept(accept)
    best_json = max((r.quality for r in ranges if r.media_type == JSON_MEDIA_TYPE), default=0.0)
    others = (r.quality for r in ranges if r.media_type not in (JSON_MEDIA_TYPE, *_WILDCARDS))
    return best_json > 0 and best_json >= max(others, default=0.0)


def choose_output(accept: str | None) -> Output:
    """The output Accept picks: the supported range with the highest q (ties: first listed)."""
    ranges = parse_accept(accept)
    if not ranges:
        return None
    served = [r for r in ranges if r.quality > 0 and r.media_type in ACCEPTED]
    if not served:
        supported = ", ".join(media for media in ACCEPTED if "*" not in media)
        raise NotAcceptable(f"cannot produce any of Accept: {accept!r}; supported: {supported}")
    return ACCEPTED[min(served, key=lambda r: (-r.quality, r.position)).media_type]


@dataclass(frozen=True)
class ResponseLimit:
    """The largest body a front door may return, and the refusal (`{size}` is the body's size)."""

    max_bytes: int
    refusal: str


@dataclass(frozen=True)
class Rendering:
    """How to render one result: file format, envelope, encoder settings, size limit."""

    format: GenerateFormat = "png"
    envelope: Envelope = "auto"
    png_compress_level: int = 1
    quality: int = 90
    limit: ResponseLimit | None = None


@dataclass(frozen=True)
class Rendered:
    """A rendered body with its media type and the result headers."""

    content: bytes
    media_type: str
    headers: dict[str, str] = field(default_factory=dict)

    def response(self) -> Response:
        return Response(content=self.content, media_type=self.media_type, headers=self.headers)


def check_still_format(image_format: GenerateFormat, has_alpha: bool) -> None:
    """Refuse, before any work, a format one still image cannot take: GIF, or one without alpha for alpha."""
    if not supports_alpha(still_format(image_format)) and has_alpha:
        raise InvalidRequest(
            f"format={image_format} cannot carry the image's alpha channel: ask for png or webp"
        )


def check_format(image_format: GenerateFormat, layout: GenerateLayout = "images") -> None:
    """Refuse, before any work, a format the layout cannot be written in (only animations are GIFs)."""
    if layout == "animation":
        animation_format(image_format)
    else:
        still_format(image_format)


def animation_format(image_format: GenerateFormat) -> AnimationFormat:
    """The format of an animation: WebP or GIF; the still-only formats are refused."""
    if image_format == "webp" or image_format == "gif":
        return image_format
    raise InvalidRequest(
        f"layout=animation makes one animated image: format=webp (the default) or gif; "
        f"{image_format} cannot be animated"
    )


def still_format(image_format: GenerateFormat) -> OutputFormat:
    """The format of still images: anything but GIF, which is written for animations only."""
    if image_format == "gif":
        raise InvalidRequest(
            "format=gif is for animations (layout=animation on /generate); "
            "still images are png, jpeg, webp or npy"
        )
    return image_format


def render_generated(
    result: GeneratedImages,
    rendering: Rendering,
    layout: GenerateLayout = "images",
    columns: int | None = None,
    frame_ms: int = DEFAULT_FRAME_MS,
) -> Rendered:
    """A generator's images as files, one grid or one animation, enveloped.

    Headers: X-Model, X-Images (images, or frames of the animation), X-Seed, X-Labels.
    """
    images = result.pixels
    stem = "images"
    if layout == "animation":
        files = [encode_animation(images, animation_format(rendering.format), frame_ms=frame_ms)]
        stem = "animation"
    else:
        if layout == "grid":
            images = make_grid(images, columns or _class_rows(result))[None]
        if rendering.format == "npy":
            files = [encode_npy(images[0] if layout == "grid" else images)]
        else:
            files = [_encode(image, rendering) for image in images]
    headers = {"X-Model": result.card.name, "X-Images": str(result.n)}
    if result.seed is not None:
        headers["X-Seed"] = str(result.seed)
    labels = None if result.labels is None else [int(label) for label in result.labels]
    if labels is not None and result.n <= MAX_HEADER_LABELS:
        headers["X-Labels"] = ",".join(map(str, labels))
    meta = {
        "model": result.card.name,
        "seed": result.seed,
        "n": result.n,
        "layout": layout,
        "labels": labels,
        "interpolate": _walk_meta(result),
    }
    return _envelope(files, rendering, headers, meta, stem=stem)


def render_upscaled(result: UpscaledImage, rendering: Rendering) -> Rendered:
    """The upscaled image as one file, enveloped; headers X-Model, X-Tiles, X-Input-Size, X-Output-Size."""
    (in_width, in_height), (width, height) = result.input_size, result.size
    headers = {
        "X-Model": result.card.name,
        "X-Tiles": str(result.tiles),
        "X-Input-Size": f"{in_width}x{in_height}",
        "X-Output-Size": f"{width}x{height}",
    }
    meta = {"model": result.card.name, "width": width, "height": height}
    return _envelope([_encode(result.pixels, rendering)], rendering, headers, meta, stem="upscaled")


def _walk_meta(result: GeneratedImages) -> dict[str, Any] | None:
    """What an interpolation's frames are: its ends' seeds (None for a latent), steps and method."""
    walk = result.interpolation
    if walk is None:
        return None
    start, end = walk.seeds
    return {"from": start, "to": end, "steps": walk.steps, "method": walk.method}


def _class_rows(result: GeneratedImages) -> int | None:
    """Grid columns that put one class per row, for a default class spread that fills whole rows."""
    condition = result.card.condition
    if condition is None or not result.spread_labels or result.n % condition.classes:
        return None
    return result.n // condition.classes


def _encode(pixels: np.ndarray, rendering: Rendering) -> bytes:
    return encode_image(
        pixels,
        still_format(rendering.format),
        png_compress_level=rendering.png_compress_level,
        quality=rendering.quality,
    )


def _envelope(
    files: list[bytes], rendering: Rendering, headers: dict[str, str], meta: dict[str, Any], *, stem: str
) -> Rendered:
    """One file as itself, several (or a zip asked for) as `stem`.zip, or JSON with base64 files."""
    image_format = rendering.format
    if rendering.envelope == "json":
        images = [
            {
                "index": i,
                "media_type": MEDIA_TYPES[image_format],
                "data": base64.b64encode(data).decode("ascii"),
            }
            for i, data in enumerate(files)
        ]
        rendered = Rendered(
            _json({**meta, "format": image_format, "images": images}), JSON_MEDIA_TYPE, headers
        )
    elif len(files) == 1 and rendering.envelope == "auto":
        rendered = Rendered(files[0], MEDIA_TYPES[image_format], headers)
    else:
        extension = FILE_EXTENSIONS[image_format]
        names = (
            [f"{stem}.{extension}"]
            if len(files) == 1
            else [f"{i:04d}.{extension}" for i in range(len(files))]
        )
        archive = zip_files(list(zip(names, files, strict=True)))
        disposition = {"Content-Disposition": f'attachment; filename="{stem}.zip"'}
        rendered = Rendered(archive, ZIP_MEDIA_TYPE, {**headers, **disposition})
    _check_size(rendered, rendering.limit)
    return rendered


def _json(content: object) -> bytes:
    # The same bytes as FastAPI's JSONResponse would send.
    return json.dumps(
        content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode()


def _check_size(rendered: Rendered, limit: ResponseLimit | None) -> None:
    if limit is not None and len(rendered.content) > limit.max_bytes:
        raise ResponseTooLarge(limit.refusal.format(size=len(rendered.content)))


# -- Open Inference Protocol tensors ---------------------------------------------------------------

#: numpy dtype → Open Inference Protocol datatype, for the tensors this service returns.
V2_DATATYPES: dict[str, str] = {"uint8": "UINT8", "float32": "FP32", "int64": "INT64"}


@dataclass(frozen=True)
class OutputTensor:
    """One output tensor of an inference response, and whether it travels as binary data."""

    name: str
    array: np.ndarray
    binary: bool


def render_tensors(
    model: str, version: str, request_id: str | None, outputs: list[OutputTensor], headers: Mapping[str, str]
) -> Rendered:
    """An inference response: JSON tensors, or with binary outputs the JSON header then their bytes."""
    described: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for output in outputs:
        array = np.ascontiguousarray(output.array)
        tensor: dict[str, Any] = {
            "name": output.name,
            "datatype": V2_DATATYPES[array.dtype.name],
            "shape": list(array.shape),
        }
        if output.binary:
            data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
            tensor["parameters"] = {"binary_data_size": len(data)}
            blobs.append(data)
        else:
            tensor["data"] = array.ravel().tolist()
        described.append(tensor)
    response: dict[str, Any] = {"model_name": model, "model_version": version}
    if request_id:
        response["id"] = request_id
    response["outputs"] = described
    header = _json(response)
    if not blobs:
        return Rendered(header, JSON_MEDIA_TYPE, dict(headers))
    return Rendered(
        b"".join([header, *blobs]),
        BINARY_TENSORS_MEDIA_TYPE,
        {**headers, INFERENCE_HEADER_LENGTH: str(len(header))},
    )
