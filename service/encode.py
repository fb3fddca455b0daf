"""Encoding result pixels: PNG, JPEG, WebP or a NumPy `.npy` array, and zipping several files."""

from __future__ import annotations

import io
import zipfile
from typing import Literal

import numpy as np
from PIL import Image

OutputFormat = Literal["png", "jpeg", "webp", "npy"]

MEDIA_TYPES: dict[str, str] = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "npy": "application/x-npy",
}
FILE_EXTENSIONS: dict[str, str] = {"png": "png", "jpeg": "jpg", "webp": "webp", "npy": "npy"}


def encode_image(
    pixels: np.ndarray, image_format: OutputFormat, *, png_compress_level: int, quality: int
) -> bytes:
    """Encode (H, W, C) uint8 pixels, C in 1..4, as one file of `image_format`."""
    if image_format == "npy":
        return encode_npy(pixels)
    channels = pixels.shape[2]
    image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels)
    buffer = io.BytesIO()
    if image_format == "png":
        image.save(buffer, "PNG", compress_level=png_compress_level)
    elif image_format == "jpeg":
        image.save(buffer, "JPEG", quality=quality)
    else:
        image.save(buffer, "WEBP", quality=quality)
    return buffer.getvalue()


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
            archive.writestr(name, data)
    return buffer.getvalue()


def supports_alpha(image_format: OutputFormat) -> bool:
    """Whether `image_format` can carry an alpha channel."""
    return image_format != "jpeg"
