"""What the card says about a model's images, from the graph, the architecture and the user's options."""

from __future__ import annotations

import math
from dataclasses import dataclass

from export import value_ranges
from export.catalog import Architecture
from export.convert import TracedGraph
from export.errors import MissingInformation, NotAnImageModel, UsageError
from export.source import SourceModel

Range = tuple[float, float]
ImageShape = tuple[int, int, int]


@dataclass(frozen=True)
class ImageSpec:
    """Output image geometry and value ranges, as the card records them."""

    kind: str
    channels: int
    height: int | None
    width: int | None
    flat_output: bool
    output_range: Range
    latent_size: int | None
    input_range: Range | None
    input_channels: int | None


def square_image_shape(size: int) -> ImageShape | None:
    """(s, s, c) with s·s·c == size for c in (1, 3); RGBA is never guessed (784 = 14·14·4 too)."""
    for channels in (3, 1):
        side = math.isqrt(size // channels)
        if size % channels == 0 and side * side * channels == size:
            return (side, side, channels)
    return None


def infer_image_spec(
    source: SourceModel,
    traced: TracedGraph,
    architecture: Architecture | None,
    *,
    image_shape: ImageShape | None,
    output_range: Range | None,
    input_range: Range | None,
) -> ImageSpec:
    """Fill the card's image fields: user options first, then the architecture, then the graph.

    Everything that cannot be known is collected and raised as one `MissingInformation`, so the
    user answers every question in one run.
    """
    out_shape = source.output_shape
    missing: list[str] = []
    if output_range is None and architecture is not None:
        output_range = architecture.output_range
    if output_range is None:
        output_range = value_ranges.output_range(traced.graph_def, traced.output_names[0])
    if output_range is None:
        missing.append(
            "the output value range: the model's output is not bounded by a tanh, sigmoid or clip "
            "(followed only by rescaling): pass --output-range LOW,HIGH (e.g. --output-range 0,255)"
        )
    if image_shape is None and architecture is not None:
        image_shape = architecture.image_shape

    if source.is_generator:
        latent_size = source.latent_size
        if latent_size is None:
            raise NotAnImageModel("the model's latent input has no fixed size")
        if len(out_shape) == 2:
            flat = out_shape[1]
            if flat is None:
                raise NotAnImageModel("the model's flat output has no fixed size")
            if image_shape is None:
                image_shape = square_image_shape(flat)
            if image_shape is None:
                missing.append(
                    f"the image shape: the output is flat ({flat} values per image) and {flat} is not a "
                    "square image of 1 or 3 channels: pass --image-shape HxWxC"
                )
            elif math.prod(image_shape) != flat:
                raise UsageError(
                    f"--image-shape {'x'.join(map(str, image_shape))} has {math.prod(image_shape)} values "
                    f"but the model outputs {flat} per image"
                )
            _ask(missing)
            assert output_range is not None and image_shape is not None
            h, w, c = image_shape
            return ImageSpec("generator", c, h, w, True, output_range, latent_size, None, None)
        _, out_h, out_w, out_c = out_shape
        if out_h is None or out_w is None:
            raise NotAnImageModel(f"the generator's output shape {list(out_shape)} has no fixed height/width")
        _ask(missing)
        assert output_range is not None
        return ImageSpec(
            "generator", int(out_c or 0), out_h, out_w, False, output_range, latent_size, None, None
        )

    if len(out_shape) != 4:
        raise NotAnImageModel(
            f"the model takes an image but its output has shape {list(out_shape)}: an upscaler must output "
            "an image (batch, height, width, channels)"
        )
    in_channels = source.input_shape[3]
    if in_channels is None or in_channels not in (1, 3, 4):
        raise NotAnImageModel(
            f"the model's input has shape {list(source.input_shape)}: its last axis ({in_channels}) is not "
            "an image channel count (1, 3 or 4)"
        )
    if input_range is None and architecture is not None:
        input_range = architecture.input_range
    if input_range is None:
        input_range = value_ranges.input_range(traced.graph_def, traced.input_names[0])
    if input_range is None:
        missing.append(
            "the input value range: the model does not normalise its input in the graph (no leading "
            "Rescaling or x/255-style op): pass --input-range LOW,HIGH (e.g. --input-range 0,1, "
            "--input-range 0,255 or --input-range -1,1)"
        )
    _ask(missing)
    assert output_range is not None and input_range is not None
    return ImageSpec(
        "upscaler", int(out_shape[3] or 0), None, None, False, output_range, None, input_range, in_channels
    )


def _ask(missing: list[str]) -> None:
    if len(missing) == 1:
        raise MissingInformation(f"cannot tell {missing[0]}")
    if missing:
        listed = "".join(f"\n  {i}. {item}" for i, item in enumerate(missing, 1))
        raise MissingInformation(f"cannot tell {len(missing)} things the service needs:{listed}")
