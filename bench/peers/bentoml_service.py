"""Peer 2: BentoML 1.4 with adaptive batching, laid out as its docs lay out model composition.

`GanModels` holds the onnxruntime sessions and exposes two batchable APIs (arrays in, arrays out):
BentoML's adaptive batching dispatcher merges concurrent calls along axis 0 (generator latents,
up to 64 images a run as the product's CPU default; upscaler images of one size, up to 4 a run as
the product's tile batch). `GanApi` is the HTTP front: it depends on `GanModels`
(`bentoml.depends`), draws latents, calls the batched API and encodes PNGs in a thread. `/generate`
is a BentoML API taking the product's JSON body; `/upscale` takes a raw image body with query
parameters, which BentoML APIs cannot, so it is a FastAPI route mounted on the service (BentoML's
ASGI integration).

The front calls `GanModels` through BentoML's client, which by default closes its connection pool
every 100 requests (`runner_connection.max_requests`): under load that churns connections, so the
dependency raises it, as the BentoML maintainers advise.

    cd bench && PEER_MODELS=DIR bentoml serve peers.bentoml_service:GanApi --port 8002
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Annotated, Any

import bentoml
import numpy as np
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

GENERATOR = "faces64"
UPSCALER = "srgan-x4"
#: Connections to the dependency are kept for this many requests (BentoML's default: 100).
RUNNER_CONNECTION_MAX_REQUESTS = 1_000_000_000

upscale_app = FastAPI()


@bentoml.service(
    name="gan_models",
    runner_connection={"max_requests": RUNNER_CONNECTION_MAX_REQUESTS},
    **({"resources": {"gpu": 1}} if device() == "cuda" else {}),
)
class GanModels:
    """The two models behind adaptive batching."""

    def __init__(self) -> None:
        cards = load_cards()
        self.generator = cards[GENERATOR]
        self.upscaler = cards[UPSCALER]
        self.generator_session = new_session(self.generator)
        self.upscaler_session = new_session(self.upscaler)

    @bentoml.api(batchable=True, batch_dim=0, max_batch_size=MAX_RUN_IMAGES)
    def generate(self, latents: np.ndarray) -> np.ndarray:
        return run_generator(self.generator_session, self.generator, latents)

    @bentoml.api(batchable=True, batch_dim=0, max_batch_size=4)
    def upscale(self, images: np.ndarray) -> np.ndarray:
        card = self.upscaler
        return self.upscaler_session.run([card.output_name], {card.input_name: images})[0]


@bentoml.asgi_app(upscale_app, path="/")
@bentoml.service(name="gan_api", runner_connection={"max_requests": RUNNER_CONNECTION_MAX_REQUESTS})
class GanApi:
    """The HTTP front: the product's request and response shapes."""

    models = bentoml.depends(GanModels)

    def __init__(self) -> None:
        cards = load_cards()
        self.generator = cards[GENERATOR]
        self.upscaler = cards[UPSCALER]

    @bentoml.api(route="/generate")
    async def generate(
        self, model: str = GENERATOR, n: int = 1, seed: int | None = None, format: str = "png"
    ) -> Any:
        card = self.generator
        if model != card.name or format != "png" or not 1 <= n <= 64:
            return Response(f"this peer serves {card.name} as png, n from 1 to 64", status_code=422)
        assert card.latent_size is not None
        latents = draw_latents(seed if seed is not None else secrets.randbelow(2**53), n, card.latent_size)
        raw = await self.models.to_async.generate(latents)
        body, media_type = await asyncio.to_thread(png_response_body, generated_images(raw, card))
        return Response(body, media_type=media_type)

    @upscale_app.post("/upscale")
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
        raw = await self.models.to_async.upscale(upscale_input(pixels, card))
        body = await asyncio.to_thread(encode_png, upscaled_image(raw[0], card))
        return Response(body, media_type="image/png")
