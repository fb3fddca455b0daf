"""Encoding result pixels: PNG, JPEG, WebP or a NumPy `.npy` array, animations, zipping several files.

Every encoder here is deterministic: the same pixels and settings give the same bytes.

PNG at the fast compression levels (1-3, the default is 1) comes from `encode_png`'s own writer:
every row Up-filtered at once in numpy and deflated by ISA-L (`isal`): several times faster than
Pillow at level 1, for files of about the same size on the service's images (bench/codecs.py;
docs/performance.md, "Codecs"). Level 0 (stored) and the small-file levels 4-9 stay with Pillow,
whose per-row adaptive filters make the smallest files. JPEG, WebP and animations are Pillow's: no
library measured paid for itself there.
"""

from __future__ import annotations

import io
import struct
import zipfile
from typing import Literal

import numpy as np
from isal import isal_zlib
from PIL import Image

#: Formats of one still image (or array) per file.
OutputFormat = Literal["png", "jpeg", "webp", "npy"]
#: Formats of one animated image (`layout=animation` on /generate).
AnimationFormat = Literal["webp", "gif"]
#: Every format /generate writes: the still formats, and GIF for animations only.
GenerateFormat = Literal["png", "jpeg", "webp", "npy", "gif"]
ANIMATION_FORMATS: tuple[AnimationFormat, ...] = ("webp", "gif")

MEDIA_TYPES: dict[str, str] = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
    "npy": "application/x-npy",
}
FILE_EXTENSIONS: dict[str, str] = {"png": "png", "jpeg": "jpg", "webp": "webp", "gif": "gif", "npy": "npy"}
#: Zip entries carry this timestamp (the earliest a zip can hold), so a zip's bytes depend only on its files.
ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)
#: PNG compression levels the ISA-L writer serves (ISA-L's own levels 1-3); the others are Pillow's.
FAST_PNG_LEVELS = (1, 2, 3)

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: PNG colour type by channel count: grayscale, grayscale + alpha, RGB, RGBA.
_PNG_COLOR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}
_PNG_FILTER_UP = 2


def encode_image(
    pixels: np.ndarray, image_format: OutputFormat, *, png_compress_level: int, quality: int
) -> bytes:
    """Encode (H, W, C) uint8 pixels, C in 1..4, as one file of `image_format`."""
    if image_format == "npy":
        return encode_npy(pixels)
    if image_format == "png":
        return encode_png(pixels, png_compress_level)
    image = _image(pixels)
    buffer = io.BytesIO()
    if image_format == "jpeg":
        image.save(buffer, "JPEG", quality=quality)
    else:
        image.save(buffer, "WEBP", quality=quality)
    return buffer.getvalue()


def encode_animation(frames: np.ndarray, image_format: AnimationFormat, *, frame_ms: int) -> bytes:
    """One animated image of (N, H, W, C) uint8 frames, `frame_ms` each, looping forever.

    WebP is written lossless, so every frame holds the exact pixels (about the size of the frames as
    PNGs); GIF holds at most 256 colours per frame (grayscale is exact) and counts time in hundredths
    of a second. Both encoders fold a frame identical to the one before into it, lengthening it.
    """
    images = [_image(frame) for frame in frames]
    buffer = io.BytesIO()
    options: dict[str, object] = {"lossless": True} if image_format == "webp" else {}
    images[0].save(
        buffer,
        image_format.upper(),
        save_all=True,
        append_images=images[1:],
        duration=frame_ms,
        loop=0,
        **options,
    )
    return buffer.getvalue()


def encode_png(pixels: np.ndarray, compress_level: int) -> bytes:
    """PNG of (H, W, C) uint8 pixels, C in 1..4: the ISA-L writer at levels 1-3, Pillow at 0 and 4-9."""
    if compress_level not in FAST_PNG_LEVELS:
        buffer = io.BytesIO()
        _image(pixels).save(buffer, "PNG", compress_level=compress_level)
        return buffer.getvalue()
    height, width, channels = pixels.shape
    rows = np.ascontiguousarray(pixels).reshape(height, width * channels)
    # Up filter on every row (the first row's "above" is zero): one vectorised subtraction. On the
    # service's images it compresses as well as Pillow's per-row adaptive choice at these levels.
    filtered = np.empty((height, width * channels + 1), np.uint8)
    filtered[:, 0] = _PNG_FILTER_UP
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
    header = struct.pack(">IIBBBBB", width, height, 8, _PNG_COLOR_TYPES[channels], 0, 0, 0)
    return b"".join(
        (
            _PNG_SIGNATURE,
            _png_chunk(b"IHDR", header),
            _png_chunk(b"IDAT", isal_zlib.compress(filtered, compress_level)),
            _png_chunk(b"IEND", b""),
        )
    )


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC-32 of type and data."""
    crc = isal_zlib.crc32(data, isal_zlib.crc32(kind))
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _image(pixels: np.ndarray) -> Image.Image:
    """(H, W, C) uint8 pixels as a Pillow image: L, LA, RGB or RGBA by the channel count."""
    return Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)


def encode_npy(array: np.ndarray) -> bytes:
    """The `.npy` file of `array` (load it with `numpy.load(io.BytesIO(data))`)."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def zip_files(files: list[tuple[str, bytes]]) -> bytes:
    """A zip archive of `(name, data)` files, stored uncompressed: the images are compressed already."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in files:
            entry = zipfile.ZipInfo(name, date_time=ZIP_DATE_TIME)
            entry.external_attr = 0o644 << 16  # a plain file, readable by all, when unpacked
            archive.writestr(entry, data)
    return buffer.getvalue()


def supports_alpha(image_format: OutputFormat) -> bool:
    """Whether `image_format` can carry an alpha channel."""
    return image_format != "jpeg"
