"""The SRGAN ×4 data: scikit-image's sample photographs, bicubic ×1/4 pairs and Y-channel PSNR.

Shared by the training script, the evaluation that writes docs/ and the tests, so the low-resolution
images and the metric are made exactly one way.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image

SCALE = 4


def _motorcycle_left() -> np.ndarray:
    from skimage import data

    return np.asarray(data.stereo_motorcycle()[0])  # type: ignore[no-untyped-call]


def _motorcycle_right() -> np.ndarray:
    from skimage import data

    return np.asarray(data.stereo_motorcycle()[1])  # type: ignore[no-untyped-call]


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from skimage import data

        return np.asarray(getattr(data, name)())

    return load


#: Training photographs: every RGB photograph scikit-image ships, minus the validation and test ones.
TRAIN_IMAGES: dict[str, Callable[[], np.ndarray]] = {
    "rocket": _skimage("rocket"),
    "immunohistochemistry": _skimage("immunohistochemistry"),
    "hubble_deep_field": _skimage("hubble_deep_field"),
    "retina": _skimage("retina"),
    "stereo_motorcycle[left]": _motorcycle_left,
    "stereo_motorcycle[right]": _motorcycle_right,
}
#: Picks the best checkpoint during training; never trained on.
VALIDATION_IMAGES: dict[str, Callable[[], np.ndarray]] = {"astronaut": _skimage("astronaut")}
#: Reported figures only: never trained on, never used to pick a checkpoint.
TEST_IMAGES: dict[str, Callable[[], np.ndarray]] = {
    "chelsea": _skimage("chelsea"),
    "coffee": _skimage("coffee"),
}


def load_rgb(loader: Callable[[], np.ndarray]) -> np.ndarray:
    """An RGB uint8 image cropped to a multiple of the scale, so LR × 4 is exactly HR."""
    image = loader()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    image = image[..., :3].astype(np.uint8)
    h, w = (image.shape[0] // SCALE) * SCALE, (image.shape[1] // SCALE) * SCALE
    return image[:h, :w]


def downscale(hr: np.ndarray, scale: int = SCALE) -> np.ndarray:
    """Bicubic ×1/scale with Pillow: how every low-resolution input here is made."""
    h, w = hr.shape[:2]
    return np.asarray(Image.fromarray(hr).resize((w // scale, h // scale), Image.Resampling.BICUBIC))


def upscale_bicubic(lr: np.ndarray, scale: int = SCALE) -> np.ndarray:
    """The baseline the model must beat: Pillow bicubic ×scale."""
    h, w = lr.shape[:2]
    return np.asarray(Image.fromarray(lr).resize((w * scale, h * scale), Image.Resampling.BICUBIC))


def y_channel(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of uint8 RGB, in [16, 235] (as in the super-resolution literature)."""
    x = rgb.astype(np.float64) / 255.0
    return 16.0 + 65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]


def psnr_y(reference: np.ndarray, estimate: np.ndarray, border: int = SCALE) -> float:
    """PSNR in dB on the Y channel, `border` pixels cropped from every side."""
    a = y_channel(reference)[border:-border, border:-border]
    b = y_channel(estimate)[border:-border, border:-border]
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def to_uint8(tanh_output: np.ndarray) -> np.ndarray:
    """The model's tanh output in [-1, 1] as uint8 pixels."""
    return np.clip(np.rint((tanh_output + 1.0) * 127.5), 0, 255).astype(np.uint8)
