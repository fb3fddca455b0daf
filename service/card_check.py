"""Startup checks of a model card against what its graph declares and what the model really gives.

A card that lies would otherwise pass startup: the service says ready and then every request to
that model answers 500 (wrong height, width, channels, layout, flat reshape or scale), or 200 with
black or washed-out images (wrong `output_range`). `service.sessions.load_model` runs both checks
at warm-up, and a failure stops the service with one message naming the model, the card field, what
the card says and what the model gives:

- `check_inputs`: the graph's declared input (static axes only) against the card's input shape,
  input width (latent_size + classes), input channels and layout, before anything runs;
- `probe_inputs` / `check_outputs`: one run on inputs like the ones requests bring (latents drawn as
  the card says, classes spread; a smooth image in `input_range`), its output against height,
  width, channels, layout, `flat_output`, `scale`, `output_shape`, and `output_range`: the values
  must lie inside it (with `RANGE_MARGIN` of slack) and use at least `MIN_RANGE_SPAN` of it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from service.card import ModelCard
from service.errors import ModelLoadError
from service.labels import generator_input, generator_input_width, spread_labels
from service.latents import draw_latents

#: Slack around `output_range`, as a fraction of its width. Values outside are clipped when served,
#: and a model with a linear head overshoots on a synthetic image (an untrained ESPCN gives
#: [-0.21, 1.25] under [0, 1]); a card that lies about the range is off by far more ([-1, 1] under
#: [0, 1] is 100 % outside, [0, 255] under [0, 1] 25,400 %).
RANGE_MARGIN = 0.5
#: Share of the values ignored at each end when checking they lie inside the range (a few stray pixels).
RANGE_QUANTILE = 0.001
#: Least part of `output_range` the probe's values must span: a model giving [-1, 1] under a card that
#: says [0, 255] spans 0.8 % of it and would serve flat black images.
MIN_RANGE_SPAN = 0.02
#: Generator rows and upscaler images in the probe (a fixed batch size in the graph wins).
PROBE_BATCH = 8
PROBE_IMAGES = 2
#: Probe image edge for upscalers whose graph takes any size.
PROBE_EDGE = 32
PROBE_SEED = 20261101

Shape = Sequence[int | str | None]


def refuse(card: ModelCard, field: str, says: object, gives: object, detail: str = "") -> ModelLoadError:
    """The startup error for one card field the model contradicts."""
    more = f" ({detail})" if detail else ""
    return ModelLoadError(
        f"model entry {card.name}: card and model disagree on {field}: the card says {says}, "
        f"the model gives {gives}{more}"
    )


def _shown(shape: Shape) -> str:
    return "[" + ", ".join("?" if not isinstance(d, int) else str(d) for d in shape) + "]"


def check_inputs(card: ModelCard, graph_shape: Shape) -> None:
    """Refuse a card whose input shape, width, channels or layout the graph's input contradicts."""
    static = [d if isinstance(d, int) else None for d in graph_shape]
    if card.kind == "generator" and len(static) == 2 and static[1] is not None:
        width = generator_input_width(card)
        if static[1] != width:
            per_row = (
                f"{card.latent_size} + {card.condition.classes} classes = {width}"
                if card.condition
                else str(width)
            )
            raise refuse(
                card,
                "latent_size",
                f"{per_row} values per row",
                f"{static[1]} (graph input {_shown(graph_shape)})",
            )
    if card.kind == "upscaler" and len(static) == 4 and card.input_channels is not None:
        channel_axis, other_axis = (3, 1) if card.layout == "NHWC" else (1, 3)
        channels, other = static[channel_axis], static[other_axis]
        if channels != card.input_channels and other == card.input_channels:
            # The channel count sits where the other layout keeps it (spatial axes are dynamic).
            swapped = "NCHW" if card.layout == "NHWC" else "NHWC"
            raise refuse(card, "layout", card.layout, f"{swapped} (graph input {_shown(graph_shape)})")
        if channels is not None and channels != card.input_channels:
            raise refuse(
                card,
                "input_channels",
                card.input_channels,
                f"{channels} (graph input {_shown(graph_shape)})",
            )
    for axis, (said, takes) in enumerate(zip(card.input_shape, static, strict=False)):
        if said is not None and takes is not None and said != takes:
            raise refuse(
                card,
                "input_shape",
                _shown(card.input_shape),
                f"{_shown(graph_shape)} (axis {axis})",
            )


def probe_inputs(card: ModelCard) -> np.ndarray:
    """Inputs like the ones requests bring: drawn latents with classes spread, or a smooth image."""
    fixed_batch = card.input_shape[0]
    if card.kind == "generator":
        n = fixed_batch or PROBE_BATCH
        assert card.latent_size is not None
        latents = draw_latents(PROBE_SEED, n, card.latent_size, card.latent_distribution)
        labels = spread_labels(n, card.condition.classes) if card.condition else None
        return generator_input(latents, labels, card)
    assert card.input_channels is not None and card.input_range is not None
    nhwc = card.layout == "NHWC"
    height = card.input_shape[1 if nhwc else 2] or PROBE_EDGE
    width = card.input_shape[2 if nhwc else 3] or PROBE_EDGE
    n = fixed_batch or PROBE_IMAGES
    # Smooth ramps and waves over the whole input range: an image an upscaler is made for (white
    # noise would make an honest model ring past its range).
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    planes = []
    for index in range(n * card.input_channels):
        phase = 0.7 * index
        wave = 0.5 + 0.35 * np.sin(x / max(width, 1) * 3.1 + phase) * np.cos(y / max(height, 1) * 2.3 - phase)
        ramp = (x + y) / max(height + width - 2, 1)
        planes.append(np.clip(0.6 * wave + 0.4 * ramp, 0.0, 1.0))
    unit = np.stack(planes).reshape(n, card.input_channels, height, width)
    low, high = card.input_range.low, card.input_range.high
    values = (low + unit * (high - low)).astype(np.float32)
    return np.ascontiguousarray(values.transpose(0, 2, 3, 1) if nhwc else values)


def check_outputs(card: ModelCard, inputs: np.ndarray, output: np.ndarray) -> None:
    """Refuse a card whose shape fields or output range the model's output on `inputs` contradicts."""
    if output.dtype != np.float32:
        raise refuse(card, "the output dtype", "float32 (what the service reads)", output.dtype.name)
    if output.ndim < 1 or output.shape[0] != inputs.shape[0]:
        raise refuse(
            card,
            "the batch axis",
            f"{inputs.shape[0]} results for {inputs.shape[0]} inputs",
            list(output.shape),
        )
    if card.kind == "generator":
        images = _check_generator_shape(card, output)
    else:
        images = _check_upscaler_shape(card, inputs, output)
    _check_output_shape(card, output)
    _check_range(card, images)


def _image_axes(card: ModelCard, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(height, width, channels) of a 4-D output read in the card's layout."""
    return (shape[1], shape[2], shape[3]) if card.layout == "NHWC" else (shape[2], shape[3], shape[1])


def _other_layout_fits(card: ModelCard, shape: tuple[int, ...], height: int, width: int) -> bool:
    """Whether `shape` is the expected image in the other layout (and not in the card's)."""
    nhwc = (shape[1], shape[2], shape[3])
    nchw = (shape[2], shape[3], shape[1])
    expected = (height, width, card.channels)
    return (nchw if card.layout == "NHWC" else nhwc) == expected and _image_axes(card, shape) != expected


def _check_generator_shape(card: ModelCard, output: np.ndarray) -> np.ndarray:
    assert card.height is not None and card.width is not None
    h, w, c = card.height, card.width, card.channels
    shape = tuple(output.shape)
    if card.flat_output:
        if output.ndim != 2:
            raise refuse(card, "flat_output", "true (a flat [n, H*W*C] output)", f"shape {list(shape)}")
        if shape[1] != h * w * c:
            raise refuse(
                card,
                "height x width x channels",
                f"{h} x {w} x {c} = {h * w * c} values per image (flat_output)",
                f"{shape[1]} values per image",
            )
        return output.reshape(shape[0], h, w, c)
    if output.ndim == 2:
        raise refuse(card, "flat_output", "false (an image tensor)", f"a flat output of shape {list(shape)}")
    if output.ndim != 4:
        raise refuse(card, "the output rank", "4 (an image tensor)", f"shape {list(shape)}")
    if _other_layout_fits(card, shape, h, w):
        other = "NCHW" if card.layout == "NHWC" else "NHWC"
        raise refuse(card, "layout", card.layout, f"{other} (output {list(shape)})")
    got_h, got_w, got_c = _image_axes(card, shape)
    for field, says, gives in (("height", h, got_h), ("width", w, got_w), ("channels", c, got_c)):
        if says != gives:
            raise refuse(card, field, says, gives, f"output {list(shape)} read as {card.layout}")
    return output if card.layout == "NHWC" else output.transpose(0, 2, 3, 1)


def _check_upscaler_shape(card: ModelCard, inputs: np.ndarray, output: np.ndarray) -> np.ndarray:
    assert card.scale is not None
    shape = tuple(output.shape)
    in_h, in_w, _ = _image_axes(card, tuple(inputs.shape))
    if output.ndim != 4:
        raise refuse(card, "the output rank", "4 (an image tensor)", f"shape {list(shape)}")
    scale = card.scale
    if _other_layout_fits(card, shape, in_h * scale, in_w * scale):
        other = "NCHW" if card.layout == "NHWC" else "NHWC"
        raise refuse(card, "layout", card.layout, f"{other} (output {list(shape)})")
    got_h, got_w, got_c = _image_axes(card, shape)
    if (got_h, got_w) != (in_h * scale, in_w * scale):
        ratio = (
            f"x{got_h // in_h}" if got_h % in_h == 0 and got_h // in_h == got_w // in_w else "no whole factor"
        )
        raise refuse(
            card, "scale", scale, ratio, f"{in_w}x{in_h} in, {got_w}x{got_h} out, read as {card.layout}"
        )
    if got_c != card.channels:
        raise refuse(card, "channels", card.channels, got_c, f"output {list(shape)} read as {card.layout}")
    return output if card.layout == "NHWC" else output.transpose(0, 2, 3, 1)


def _check_output_shape(card: ModelCard, output: np.ndarray) -> None:
    said = card.output_shape
    fits = len(said) == output.ndim and all(
        d is None or d == g for d, g in zip(said, output.shape, strict=False)
    )
    if not fits:
        raise refuse(card, "output_shape", _shown(said), list(output.shape))


def _check_range(card: ModelCard, images: np.ndarray) -> None:
    low, high = card.output_range.low, card.output_range.high
    width = high - low
    values = images.astype(np.float64).ravel()
    if not np.isfinite(values).all():
        raise refuse(card, "output_range", f"[{low:g}, {high:g}]", "NaN or infinite values")
    bottom, top = np.quantile(values, [RANGE_QUANTILE, 1 - RANGE_QUANTILE])
    smallest, largest = float(values.min()), float(values.max())
    gives = f"values in [{smallest:.4g}, {largest:.4g}]"
    on = "random latents" if card.kind == "generator" else "a smooth test image"
    if bottom < low - RANGE_MARGIN * width or top > high + RANGE_MARGIN * width:
        raise refuse(
            card,
            "output_range",
            f"[{low:g}, {high:g}]",
            gives,
            f"on {on}; more than {RANGE_MARGIN:.0%} of the range outside it would be clipped",
        )
    if largest - smallest < MIN_RANGE_SPAN * width:
        raise refuse(
            card,
            "output_range",
            f"[{low:g}, {high:g}]",
            gives,
            f"on {on}; less than {MIN_RANGE_SPAN:.0%} of the range: every image would be one flat tone",
        )
