"""Make tests/zoo/data/faces64_reference.npz once, from the original PyTorch generator.

    .venv/bin/python tests/zoo/make_faces64_reference.py

Needs PyTorch (not a project dependency): it loads `gan_face_generate.models.Generator` with the
package's `weights.tar` exactly as the package's own inference script does, and stores four fixed
latents with the generator's outputs, so the port test runs without PyTorch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from gan_face_generate.models import Generator

from zoo import faces64

OUT = Path(__file__).parent / "data" / "faces64_reference.npz"
SEED = 20261122


def torch_generator() -> torch.nn.Module:
    """The package's generator with its trained weights, in eval mode."""
    net = Generator(ngpu=0, nc=3, nz=faces64.LATENT_SIZE, ngf=faces64.NGF)
    checkpoint = torch.load(faces64.checkpoint_path(), map_location="cpu", weights_only=True)
    net.load_state_dict(checkpoint[faces64.CHECKPOINT_KEY])
    return net.eval()


def torch_generate(net: torch.nn.Module, latents: np.ndarray) -> np.ndarray:
    """NHWC float32 faces for (N, 100) latents."""
    with torch.no_grad():
        out = net(torch.from_numpy(latents)[:, :, None, None])
    return out.numpy().transpose(0, 2, 3, 1).astype(np.float32)


def main() -> None:
    latents = np.random.default_rng(SEED).standard_normal((4, faces64.LATENT_SIZE)).astype(np.float32)
    images = torch_generate(torch_generator(), latents)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, latents=latents, images=images, torch_version=np.array(torch.__version__))
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes) with torch {torch.__version__}")


if __name__ == "__main__":
    main()
