"""Peer 1: the FastAPI + onnxruntime app someone writes in an afternoon.

One onnxruntime session per model, loaded at import; plain `def` endpoints, which FastAPI runs in
its thread pool (onnxruntime and Pillow release the GIL, so requests overlap); no batching, no
queue. Same requests and responses as the product's `/generate` (JSON body: model, n, seed, format)
and `/upscale` (raw image body; query model, format, tile).

    PYTHONPATH=bench PEER_MODELS=DIR python -m uvicorn peers.naive_app:app --port 8001
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Body, FastAPI, HTTPException, Response
from peers.common import (
    decode_rgb,
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

cards = load_cards()
sessions = {name: new_session(card) for name, card in cards.items()}

app = FastAPI(title="naive GAN server")


class GenerateRequest(BaseModel):
    model: str = "faces64"
    n: int = 1
    seed: int | None = None
    format: str = "png"


@app.get("/ping")
def ping() -> Response:
    return Response(status_code=200)


@app.post("/generate")
def generate(request: GenerateRequest) -> Response:
    card = cards.get(request.model)
    if card is None or card.kind != "generator" or card.latent_size is None:
        raise HTTPException(404, f"no generator named {request.model}")
    if request.format != "png" or not 1 <= request.n <= 64:
        raise HTTPException(422, "png only, n from 1 to 64")
    seed = request.seed if request.seed is not None else secrets.randbelow(2**53)
    latents = draw_latents(seed, request.n, card.latent_size)
    images = generated_images(run_generator(sessions[card.name], card, latents), card)
    body, media_type = png_response_body(images)
    return Response(body, media_type=media_type, headers={"X-Seed": str(seed)})


@app.post("/upscale")
def upscale(
    data: Annotated[bytes, Body(media_type="image/png")],
    model: str = "srgan-x4",
    format: str = "png",
    tile: int = 0,
) -> Response:
    card = cards.get(model)
    if card is None or card.kind != "upscaler":
        raise HTTPException(404, f"no upscaler named {model}")
    if format != "png":
        raise HTTPException(422, "png only")
    pixels = decode_rgb(data)
    raw = sessions[card.name].run([card.output_name], {card.input_name: upscale_input(pixels, card)})[0]
    return Response(encode_png(upscaled_image(raw[0], card)), media_type="image/png")
