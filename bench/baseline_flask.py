"""BASELINE, not the product: the users' previous deployment, rebuilt for the benchmark.

What they ran (../shared/BRIEF.md): a Flask app that loads the Keras generator once, takes a
number of images N, runs the model on N fresh N(0,1) latent vectors per request and returns one
JPEG showing the images in a grid. This keeps exactly that shape: Flask's own threaded server,
Keras ``model.predict`` per request, one JPEG of a square grid. It is kinder to the baseline than
the original in one respect: the grid is pasted with Pillow instead of drawn as a matplotlib
figure, so the comparison measures serving, not plotting.

    python bench/baseline_flask.py --model gen.keras --port 5000
    curl -o grid.jpg 'http://127.0.0.1:5000/generate?n=4'
"""

from __future__ import annotations

import argparse
import io
import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
from flask import Flask, Response, request
from PIL import Image

import export.architectures  # noqa: F401  (registers PixelShuffle for load_model)


def grid_jpeg(images: np.ndarray, quality: int = 90) -> bytes:
    """Tile (N, H, W, C) images in [-1, 1] into a square grid and encode one JPEG, as the old app did."""
    n, h, w, c = images.shape
    side = math.ceil(math.sqrt(n))
    rows = math.ceil(n / side)
    pixels = np.clip((images + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    canvas = np.zeros((rows * h, side * w, c), dtype=np.uint8)
    for i, image in enumerate(pixels):
        r, col = divmod(i, side)
        canvas[r * h : (r + 1) * h, col * w : (col + 1) * w] = image
    picture = Image.fromarray(canvas[..., 0] if c == 1 else canvas)
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def create_baseline_app(model: keras.Model, latent_size: int, max_n: int = 16) -> Flask:
    """The previous deployment's app: one route, `predict` per request, one JPEG grid out."""
    app = Flask("baseline")

    @app.get("/ping")
    def ping() -> Response:
        return Response(status=200)

    @app.route("/generate", methods=["GET", "POST"])
    def generate() -> Response:
        n = int(request.values.get("n", 1))
        if not 1 <= n <= max_n:
            return Response(f"n must be 1..{max_n}\n", status=400)
        latents = np.random.standard_normal((n, latent_size)).astype(np.float32)
        images = model.predict(latents, verbose=0)
        if images.ndim == 2:  # the MLP generator's flat output
            side = math.isqrt(images.shape[1] // 3)
            images = images.reshape(n, side, side, 3)
        return Response(grid_jpeg(images), mimetype="image/jpeg")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="Keras model file (.keras or .h5)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args()
    model = keras.models.load_model(args.model, compile=False)
    latent_size = int(model.inputs[0].shape[-1])
    app = create_baseline_app(model, latent_size)
    # Flask's built-in threaded server, as `app.run()` in the original deployment.
    app.run(host=args.host, port=args.port, threaded=True)


if __name__ == "__main__":
    main()
