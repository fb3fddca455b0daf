"""Peer 3: Ray Serve with `@serve.batch`, a FastAPI ingress deployment as Ray Serve's docs build one.

One deployment (one replica) holds both sessions. Each route draws its latents or decodes its image,
awaits a `@serve.batch` method that Ray Serve fills with concurrent calls (up to 64 requests of
generator latents, run in pieces of at most 64 images; up to 4 same-size upscaler images) and
encodes the PNG in a thread. The model runs in a thread too, so the replica's event loop keeps
taking requests while a batch runs.

Ray binds internal servers (GCS, raylet, object manager, dashboard) to every interface: run it in
a private network namespace (`unshare --net`, loopback up); `bench_peers.py` does.

    PYTHONPATH=bench PEER_MODELS=DIR python -m peers.ray_app --port 8003
"""

# No `from __future__ import annotations`: Ray Serve's class views hand FastAPI the route
# signatures, whose string annotations it cannot resolve (a body model turns into a query field).
import argparse
import asyncio
import os
import secrets
import signal
import threading
from typing import Annotated

import numpy as np
import ray
from fastapi import Body, FastAPI, HTTPException, Response
from peers.common import (
    MAX_RUN_IMAGES,
    decode_rgb,
    device,
    draw_latents,
    encode_png,
    generated_images,
    load_cards,
    new_session,
    png_response_body,
    run_generator,
    upscale_input,
    upscaled_image,
)
from pydantic import BaseModel
from ray import serve

GENERATOR = "faces64"
UPSCALER = "srgan-x4"

app = FastAPI()


class GenerateRequest(BaseModel):
    model: str = GENERATOR
    n: int = 1
    seed: int | None = None
    format: str = "png"


@serve.deployment(ray_actor_options={"num_gpus": 1} if device() == "cuda" else {})
@serve.ingress(app)
class GanServer:
    """Both models behind `@serve.batch`, with the product's request and response shapes."""

    def __init__(self) -> None:
        cards = load_cards()
        self.generator = cards[GENERATOR]
        self.upscaler = cards[UPSCALER]
        self.generator_session = new_session(self.generator)
        self.upscaler_session = new_session(self.upscaler)

    @serve.batch(max_batch_size=MAX_RUN_IMAGES)
    async def generate_batch(self, requests: list[np.ndarray]) -> list[np.ndarray]:
        latents = np.concatenate(requests)
        raw = await asyncio.to_thread(run_generator, self.generator_session, self.generator, latents)
        return np.split(raw, np.cumsum([len(r) for r in requests])[:-1])

    @serve.batch(max_batch_size=4)
    async def upscale_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        card = self.upscaler
        batch = np.concatenate(images)
        raw = await asyncio.to_thread(self.upscaler_session.run, [card.output_name], {card.input_name: batch})
        return list(raw[0])

    @app.get("/ping")
    def ping(self) -> Response:
        return Response(status_code=200)

    @app.post("/generate")
    async def generate(self, request: GenerateRequest) -> Response:
        card = self.generator
        if request.model != card.name or request.format != "png" or not 1 <= request.n <= 64:
            raise HTTPException(422, f"this peer serves {card.name} as png, n from 1 to 64")
        assert card.latent_size is not None
        seed = request.seed if request.seed is not None else secrets.randbelow(2**53)
        raw = await self.generate_batch(draw_latents(seed, request.n, card.latent_size))
        body, media_type = await asyncio.to_thread(png_response_body, generated_images(raw, card))
        return Response(body, media_type=media_type)

    @app.post("/upscale")
    async def upscale(
        self,
        data: Annotated[bytes, Body(media_type="image/png")],
        model: str = UPSCALER,
        format: str = "png",
        tile: int = 0,
    ) -> Response:
        card = self.upscaler
        if model != card.name or format != "png":
            raise HTTPException(422, f"this peer serves {card.name} as png")
        pixels = await asyncio.to_thread(decode_rgb, data)
        raw = await self.upscale_batch(upscale_input(pixels, card))
        body = await asyncio.to_thread(encode_png, upscaled_image(raw, card))
        return Response(body, media_type="image/png")


def main() -> int:
    """Start a local Ray, run the app on 127.0.0.1:`--port`, and stay up until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=os.cpu_count())
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    # `bind` comes from @serve.deployment, which mypy cannot see through.
    serve.run(GanServer.bind(), route_prefix="/")  # type: ignore[attr-defined]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()
    ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
