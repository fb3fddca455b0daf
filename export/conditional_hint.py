"""The hint for a generator whose latent size looks like noise plus a one-hot class (no heavy imports)."""

from __future__ import annotations

#: Noise sizes seen in public GAN code; a latent of one of these plus a class count looks conditional.
COMMON_NOISE = (32, 50, 62, 64, 96, 100, 110, 120, 128, 256, 512)
COMMON_CLASSES = (10, 100)


def latent_hint(latent_size: int) -> str | None:
    """Say so when `latent_size` = a common noise size + a common class count (keras-io's 128 + 10)."""
    for classes in COMMON_CLASSES:
        noise = latent_size - classes
        if noise in COMMON_NOISE:
            return (
                f"hint: latent size {latent_size} = {noise} + {classes}. If the model takes noise with a "
                f"one-hot class concatenated to it, export with --condition onehot:{classes}; otherwise the "
                "service fills those values with noise and the class control is lost"
            )
    return None
