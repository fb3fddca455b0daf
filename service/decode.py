"""Decoding uploaded images safely: format and pixel count are checked from the header first.

`Image.open` only reads the header, so a decompression bomb is refused before any pixel is
decoded. After decoding, the image is turned upright (EXIF orientation) and split into colour
(1 or 3 channels, 8-bit) and an optional alpha plane:

- grayscale (L, 1-bit) stays one channel; LA keeps its alpha;
- palette images become RGB, or RGBA when the palette has transparency;
- 16-bit grayscale PNGs are rounded to 8-bit (value / 257); Pillow already reduces 16-bit colour
  PNGs to 8 bits per channel. Models see 8-bit precision and the output is 8-bit;
- CMYK, YCbCr and other colour spaces become RGB.

Baseline and progressive 8-bit JPEGs (grayscale or colour, upright) are decoded by `simplejpeg`:
the same libjpeg-turbo decode as Pillow's, the same pixels, without Pillow's overhead (2-5x faster,
bench/codecs.py). Anything else, and any JPEG simplejpeg refuses, is Pillow's.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Literal

import numpy as np
import simplejpeg
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from service.errors import ImageTooLarge, InvalidImage, TruncatedImage, UnsupportedMediaType

#: Content-Types /upscale accepts, and the Pillow format each one names.
IMAGE_MEDIA_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}
#: Content-Types that say nothing about the format: the bytes decide.
GENERIC_MEDIA_TYPES = {"application/octet-stream", "application/x-image"}

ImageMode = Literal["L", "LA", "RGB", "RGBA"]

_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


@dataclass(frozen=True)
class DecodedImage:
    """An upright 8-bit image: colour (H, W, 1 or 3) and an optional alpha plane (H, W)."""

    color: np.ndarray
    alpha: np.ndarray | None
    format: str
    bit_depth: int

    @property
    def mode(self) -> ImageMode:
        """The Pillow mode family of the image (and of the upscaled result)."""
        gray = self.color.shape[2] == 1
        if self.alpha is None:
            return "L" if gray else "RGB"
        return "LA" if gray else "RGBA"

    @property
    def height(self) -> int:
        return int(self.color.shape[0])

    @property
    def width(self) -> int:
        return int(self.color.shape[1])


def media_type(content_type: str | None) -> str:
    """The bare, lower-case media type of a Content-Type header ('' when absent)."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def check_media_type(content_type: str | None) -> None:
    """Refuse a Content-Type that cannot carry a PNG, JPEG or WebP image."""
    kind = media_type(content_type)
    if kind and kind not in IMAGE_MEDIA_TYPES and kind not in GENERIC_MEDIA_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type {kind!r} is not supported: send image/png, image/jpeg or image/webp "
            "as the body, or a multipart/form-data upload with a 'file' field"
        )


def decode_image(data: bytes, max_pixels: int) -> DecodedImage:
    """Decode PNG, JPEG or WebP bytes into an upright `DecodedImage`, refusing oversized images early."""
    if not data:
        raise InvalidImage("the request carries no image: the body is empty")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        raise InvalidImage(
            "the body is not a PNG, JPEG or WebP image (its bytes are not recognised)"
        ) from exc
    except Image.DecompressionBombError as exc:
        raise _bomb(max_pixels) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise _broken(exc) from exc
    with image:
        # Phone cameras write multi-picture JPEGs (MPO): a JPEG whose first picture is the photo.
        image_format = "JPEG" if image.format == "MPO" else str(image.format)
        if image_format not in IMAGE_MEDIA_TYPES.values():
            raise UnsupportedMediaType(f"{image.format} images are not supported: send PNG, JPEG or WebP")
        if image_format == "JPEG" and not _jpeg_complete(data):
            # libjpeg fills missing scan data with grey and only warns: refuse before decoding.
            raise TruncatedImage("the JPEG data is truncated: it ends before its end-of-image marker")
        width, height = image.size
        if width * height > max_pixels:
            raise ImageTooLarge(
                f"the image is {width}x{height} = {width * height} pixels; the limit is {max_pixels} pixels"
            )
        fast = _decode_jpeg_fast(data, image) if image_format == "JPEG" else None
        if fast is not None:
            return DecodedImage(color=fast, alpha=None, format=image_format, bit_depth=8)
        try:
            image.load()
        except Image.DecompressionBombError as exc:
            raise _bomb(max_pixels) from exc
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise _broken(exc) from exc
        upright = _upright(image)
    return _split(upright, image_format)


def _jpeg_complete(data: bytes) -> bool:
    """True when an end-of-image marker follows the last start-of-scan (so the scan data is whole)."""
    start_of_scan = data.rfind(b"\xff\xda")
    return start_of_scan >= 0 and data.find(b"\xff\xd9", start_of_scan + 2) >= 0


def _decode_jpeg_fast(data: bytes, image: Image.Image) -> np.ndarray | None:
    """Pixels of an upright grayscale or colour JPEG, decoded by simplejpeg; None leaves it to Pillow."""
    if image.mode not in ("L", "RGB"):
        return None  # CMYK and the rest: Pillow converts them
    try:
        if image.getexif().get(ExifTags.Base.Orientation, 1) != 1:
            return None  # Pillow turns it upright
    except Exception:  # A malformed EXIF block: Pillow's path keeps the image as stored.
        return None
    try:
        pixels = simplejpeg.decode_jpeg(data, colorspace="GRAY" if image.mode == "L" else "RGB")
    except ValueError:
        return None  # corrupt or unusual data: Pillow decides (and words the error)
    if pixels.shape[:2] != (image.height, image.width):
        return None
    return pixels


def _bomb(max_pixels: int) -> ImageTooLarge:
    # Pillow's own limit (a backstop set at startup) fired while reading the header.
    return ImageTooLarge(f"the image has far more pixels than the limit of {max_pixels} pixels")


def _broken(exc: BaseException) -> InvalidImage:
    if "truncated" in str(exc).lower():
        return TruncatedImage("the image data is truncated: the file ends before all its pixels")
    return InvalidImage(f"the image is corrupt and cannot be decoded ({exc})")


def _upright(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image) or image
    except Exception:  # A malformed EXIF block should not cost the user the image: keep it as stored.
        return image


def _split(image: Image.Image, image_format: str) -> DecodedImage:
    bit_depth = 8
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        wide = np.asarray(image).astype(np.float32)
        color = np.rint(np.clip(wide / 257.0, 0, 255)).astype(np.uint8)[..., None]
        return DecodedImage(color=color, alpha=None, format=image_format, bit_depth=16)
    if mode == "F":
        color = np.rint(np.clip(np.asarray(image), 0, 255)).astype(np.uint8)[..., None]
        return DecodedImage(color=color, alpha=None, format=image_format, bit_depth=32)
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
    elif mode == "1":
        image = image.convert("L")
    elif mode == "La":
        image = image.convert("LA")
    elif mode == "RGBa":
        image = image.convert("RGBA")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        image = image.convert("RGB")
    pixels = np.asarray(image)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if image.mode in ("LA", "RGBA"):
        return DecodedImage(
            color=np.ascontiguousarray(pixels[..., :-1]),
            alpha=np.ascontiguousarray(pixels[..., -1]),
            format=image_format,
            bit_depth=bit_depth,
        )
    return DecodedImage(color=pixels, alpha=None, format=image_format, bit_depth=bit_depth)
