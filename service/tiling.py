"""Upscaling an image in overlapping tiles so memory stays bounded whatever the input size.

Each tile is run with `overlap` pixels of context on every side that has neighbours; only the
tile's core is kept from the output, so seams vanish once the overlap covers the model's receptive
field (and stay below one grey level in practice with less). Up to `TILES_IN_FLIGHT` tiles of one
image are submitted at once, so a batching runner merges same-size tiles (of this image and of
concurrent ones) into one session run; a failing tile fails the whole request, with the tile named
in the message, and the image's other tiles are cancelled. Converting tiles to and from the
model's values and pasting them happens in a worker pool, one hop per tile, never on the event
loop (a 288x288 tile's x4 output is 4 million values). Errors that are not the model's (a full
queue, a shutdown) and cancellation (a deadline, a client that left) pass through unchanged, so
they keep their own status; cancelling the request takes its queued tiles out of the batcher.

`upscale_work` prices an upscale from the image's size alone, before any pixel is decoded: its
tiles, the input pixels they run (overlaps included) and the model input elements.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from service.admission import Work
from service.card import ModelCard
from service.errors import InferenceError, InvalidRequest
from service.pixels import from_uint8, to_uint8
from service.runner import ModelRunner, run_in_chunks

#: Tiles of one image queued or running at once: enough to fill a tile batch twice over, few
#: enough that one large image neither fills the batcher's queue nor holds many tiles in memory.
TILES_IN_FLIGHT = 8
#: Model output values converted to pixels at once when a tile is pasted (1 MiB of float32).
CHUNK_VALUES = 1 << 18


@dataclass(frozen=True)
class Tile:
    """One tile: its core [top, bottom) x [left, right) and the larger region run through the model."""

    top: int
    bottom: int
    left: int
    right: int
    context_top: int
    context_bottom: int
    context_left: int
    context_right: int


def tile_image(height: int, width: int, tile: int, overlap: int) -> list[Tile]:
    """Cover a height x width image with tiles of core size `tile` and `overlap` context (0: one tile)."""
    if tile <= 0 or (height <= tile and width <= tile):
        return [Tile(0, height, 0, width, 0, height, 0, width)]
    tiles = []
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            bottom, right = min(top + tile, height), min(left + tile, width)
            tiles.append(
                Tile(
                    top,
                    bottom,
                    left,
                    right,
                    max(0, top - overlap),
                    min(height, bottom + overlap),
                    max(0, left - overlap),
                    min(width, right + overlap),
                )
            )
    return tiles


@dataclass(frozen=True)
class UpscaleWork:
    """What upscaling one image costs: tiles, input pixels run (overlaps included), model work."""

    tiles: int
    padded_pixels: int
    work: Work


def upscale_work(
    card: ModelCard, height: int, width: int, channels: int, tile: int, overlap: int
) -> UpscaleWork:
    """The cost of upscaling a height x width image of `channels` colour channels with this tiling."""
    assert card.input_channels is not None
    tiles = tile_image(height, width, tile, overlap)
    padded = sum(
        (piece.context_bottom - piece.context_top) * (piece.context_right - piece.context_left)
        for piece in tiles
    )
    return UpscaleWork(
        tiles=len(tiles),
        padded_pixels=padded,
        work=Work(elements=padded * _rows(card, channels) * card.input_channels, runs=len(tiles)),
    )


def _rows(card: ModelCard, channels: int) -> int:
    """Batch rows per tile: a 1-channel model runs each channel of an RGB image as its own row."""
    return channels if card.input_channels == 1 else 1


def upscaled_size(card: ModelCard, height: int, width: int) -> tuple[int, int]:
    """Output height and width of `card`'s upscaler on a height x width input."""
    assert card.scale is not None
    return height * card.scale, width * card.scale


async def upscale_color(
    color: np.ndarray,
    runner: ModelRunner,
    executor: Executor,
    *,
    tile: int,
    overlap: int,
    on_tile: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, int]:
    """Upscale (H, W, 1 or 3) uint8 pixels tile by tile; return the pixels and the number of tiles.

    A 3-channel model given a grayscale image sees it replicated to RGB and its output is turned
    back to gray (ITU-R 601 luma, as Pillow does); a 1-channel model given an RGB image upscales
    each channel as its own image. `on_tile` hears the model input elements of each tile done.

    Pixel work never runs on the event loop: one hop to `executor` converts the first tiles'
    inputs, then each tile takes one hop that converts its output, pastes its core into the image
    and converts the input of the tile that takes its place in flight. The tiles run in
    `TILES_IN_FLIGHT` lanes, lane k taking tiles k, k + TILES_IN_FLIGHT, ...
    """
    card = runner.card
    assert card.scale is not None and card.input_channels is not None
    height, width, channels = color.shape
    if channels not in (card.input_channels, 1, 3) or card.input_channels not in (channels, 1, 3):
        raise InvalidRequest(
            f"model {card.name} takes {card.input_channels}-channel images; this image has {channels}"
        )
    out = np.empty((height * card.scale, width * card.scale, channels), np.uint8)
    tiles = tile_image(height, width, tile, overlap)
    values_per_pixel = _rows(card, channels) * card.input_channels
    loop = asyncio.get_running_loop()

    def region(index: int) -> np.ndarray:
        piece = tiles[index]
        return color[piece.context_top : piece.context_bottom, piece.context_left : piece.context_right]

    first = await loop.run_in_executor(
        executor, _tile_inputs_of, [region(i) for i in range(min(TILES_IN_FLIGHT, len(tiles)))], card
    )

    async def lane(index: int, inputs: np.ndarray) -> None:
        while True:
            piece = tiles[index]
            following = index + TILES_IN_FLIGHT
            after = region(following) if following < len(tiles) else None
            try:
                outputs = await run_in_chunks(runner, inputs)
                next_inputs = await loop.run_in_executor(
                    executor, _finish_tile, outputs, card, channels, piece, out, after
                )
            except InferenceError as exc:
                # Only the model's own failures are named after the tile; a full queue or a
                # shutdown keeps its 503, and cancellation is not an Exception at all.
                raise InferenceError(
                    f"tile {index + 1} of {len(tiles)} (input rows {piece.top}-{piece.bottom}, "
                    f"columns {piece.left}-{piece.right}) failed: {exc.message}"
                ) from exc
            if on_tile is not None:
                area = (piece.context_bottom - piece.context_top) * (piece.context_right - piece.context_left)
                on_tile(area * values_per_pixel)
            if next_inputs is None:
                return
            index, inputs = following, next_inputs

    await _all_or_first_error([lane(i, inputs) for i, inputs in enumerate(first)])
    return out, len(tiles)


async def _all_or_first_error(jobs: list[Coroutine[Any, Any, None]]) -> None:
    """Run `jobs` concurrently; on the first failure cancel the rest and raise that failure."""
    tasks = [asyncio.ensure_future(job) for job in jobs]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in tasks:
            error = task.exception() if task in done else None
            if error is not None:
                raise error
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _tile_inputs_of(regions: list[np.ndarray], card: ModelCard) -> list[np.ndarray]:
    """`tile_inputs` of several regions, in one hop."""
    return [tile_inputs(region, card) for region in regions]


def tile_inputs(region: np.ndarray, card: ModelCard) -> np.ndarray:
    """The model input of one (h, w, c) uint8 region: values in the card's range, its layout and channels.

    A 1-channel model given an RGB region runs each channel as a row of its own.
    """
    assert card.input_range is not None and card.input_channels is not None
    channels = region.shape[2]
    if card.input_channels == channels:
        batch = region[None]
    elif card.input_channels == 3:
        batch = np.repeat(region, 3, axis=2)[None]
    else:
        batch = np.moveaxis(region, 2, 0)[..., None]
    inputs = from_uint8(batch, card.input_range)
    if card.layout == "NCHW":
        inputs = np.ascontiguousarray(inputs.transpose(0, 3, 1, 2))
    return inputs


def _finish_tile(
    outputs: np.ndarray,
    card: ModelCard,
    channels: int,
    piece: Tile,
    out: np.ndarray,
    after: np.ndarray | None,
) -> np.ndarray | None:
    """Paste one tile's output into `out`, then return the model input of `after` (None: no tile)."""
    paste_tile(outputs, card, channels, piece, out)
    return None if after is None else tile_inputs(after, card)


def paste_tile(outputs: np.ndarray, card: ModelCard, channels: int, piece: Tile, out: np.ndarray) -> None:
    """Check one tile's model output, turn its core into `channels`-channel pixels, write it into `out`."""
    assert card.scale is not None and card.input_channels is not None
    scale = card.scale
    if card.layout == "NCHW" and outputs.ndim == 4:
        outputs = outputs.transpose(0, 2, 3, 1)
    context_height = piece.context_bottom - piece.context_top
    context_width = piece.context_right - piece.context_left
    expected = (_rows(card, channels), context_height * scale, context_width * scale, card.channels)
    if outputs.shape != expected:
        raise InferenceError(
            f"model {card.name} returned shape {list(outputs.shape)}, expected {list(expected)}"
        )
    # Only the core is kept: the context around it is converted for nothing otherwise.
    top = (piece.top - piece.context_top) * scale
    left = (piece.left - piece.context_left) * scale
    core = outputs[
        :, top : top + (piece.bottom - piece.top) * scale, left : left + (piece.right - piece.left) * scale
    ]
    target = out[piece.top * scale : piece.bottom * scale, piece.left * scale : piece.right * scale]
    # A band of rows at a time: float32 temporaries of 1 MiB, not of the whole core (12 MiB each for
    # a 256x256 tile's x4 core), and a little faster (4.6 vs 5.1 ms per 1024x1024 core here).
    rows = max(1, CHUNK_VALUES // (core.shape[0] * core.shape[2] * card.channels))
    for start in range(0, core.shape[1], rows):
        pixels = to_uint8(core[:, start : start + rows], card.output_range)
        band = target[start : start + rows]
        if card.input_channels == channels:
            band[...] = pixels[0]
        elif card.input_channels == 3:
            band[...] = _luma(pixels[0])
        else:
            band[...] = np.moveaxis(pixels[..., 0], 0, 2)


def _luma(rgb: np.ndarray) -> np.ndarray:
    # Pillow's fixed-point ITU-R 601 luma, so the result equals Image.convert("L") of the RGB output.
    wide = rgb.astype(np.uint32)
    luma = (wide[..., 0] * 19595 + wide[..., 1] * 38470 + wide[..., 2] * 7471 + 0x8000) >> 16
    return luma.astype(np.uint8)[..., None]


def upscale_alpha(alpha: np.ndarray, scale: int) -> np.ndarray:
    """Upscale an (H, W) alpha plane with bicubic interpolation (models only see colour)."""
    height, width = alpha.shape
    plane = Image.fromarray(alpha).resize((width * scale, height * scale), Image.Resampling.BICUBIC)
    return np.asarray(plane)
