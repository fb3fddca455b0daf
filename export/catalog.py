"""The built-in architectures' catalogue: names, kinds and card facts, without importing Keras.

`gan-export architectures` and argument checks read this; `export.architectures` holds the
builders, imported only when a model is actually built.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from service.card import ModelKind


@dataclass(frozen=True)
class Architecture:
    """A built-in architecture and what its model card records about its I/O."""

    name: str
    builder: str  # function in export.architectures; imported only when a model is built
    kind: ModelKind
    description: str
    output_range: tuple[float, float] = (-1.0, 1.0)
    input_range: tuple[float, float] | None = None
    scale: int | None = None
    image_shape: tuple[int, int, int] | None = None  # (H, W, C) of a generator's image
    flat_output: bool = False
    options: dict[str, int] = field(default_factory=dict)  # builder keyword arguments and defaults


ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture(
            "mlp-cifar10",
            "mlp_cifar10",
            "generator",
            "MLP generator, CIFAR-10 32×32×3, flat tanh output",
            image_shape=(32, 32, 3),
            flat_output=True,
            options={"latent_size": 100},
        ),
        Architecture(
            "dcgan-cifar10",
            "dcgan_cifar10",
            "generator",
            "DCGAN generator, CIFAR-10 32×32×3 (kernel 5, stride 2)",
            image_shape=(32, 32, 3),
            options={"latent_size": 100},
        ),
        Architecture(
            "dcgan-mnist",
            "dcgan_mnist",
            "generator",
            "DCGAN generator, MNIST 28×28 grayscale",
            image_shape=(28, 28, 1),
            options={"latent_size": 100},
        ),
        Architecture(
            "dcgan-faces64",
            "dcgan_faces64",
            "generator",
            "DCGAN generator (PyTorch tutorial architecture), faces 64×64×3",
            image_shape=(64, 64, 3),
            options={"latent_size": 100, "ngf": 64},
        ),
        Architecture(
            "srgan-x4",
            "srgan_x4",
            "upscaler",
            "SRGAN ×4 generator: residual blocks, two pixel-shuffle ×2 stages",
            input_range=(0.0, 1.0),
            scale=4,
            options={"blocks": 16, "filters": 64, "channels": 3},
        ),
        Architecture(
            "cgan-digits",
            "cgan_digits",
            "generator",
            "Conditional generator (Keras-GAN cgan style: noise × label embedding), 8×8 grayscale digits",
            image_shape=(8, 8, 1),
            options={"latent_size": 32, "classes": 10},
        ),
    )
}
