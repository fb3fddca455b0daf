"""The model card: the one contract between the export tool and the service.

`gan-export` writes a card for every model-repository entry, both as `model.json` next to
`model.onnx` and inside the ONNX file's `metadata_props` (key `METADATA_KEY`). The service reads
only the card to know how to call a model. This module imports nothing heavy (pydantic only) so
that both packages can use it; the serving image has no TensorFlow.

Repository layout::

    <repo>/<name>/model.onnx        fp32 graph, float32 input and output
    <repo>/<name>/model.fp16.onnx   optional fp16 graph with float32 I/O
    <repo>/<name>/model.json        this card
    <repo>/<name>/preview.png       source row above ONNX row, for a person to look at
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION = 1
CARD_FILENAME = "model.json"
MODEL_FILENAME = "model.onnx"
FP16_MODEL_FILENAME = "model.fp16.onnx"
PREVIEW_FILENAME = "preview.png"
METADATA_KEY = "gan_serve.model_card"

#: Names a repository entry may have: they become URL path parts and directory names. Model
#: versions follow the same rule (they are URL path parts of the Open Inference Protocol routes).
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
#: Hex digits of sha256 in a version derived from content.
CONTENT_VERSION_DIGITS = 12
_MODEL_NAME_RE = re.compile(MODEL_NAME_PATTERN)

ModelKind = Literal["generator", "upscaler"]
Layout = Literal["NHWC", "NCHW"]
LatentDistribution = Literal["normal", "uniform"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ValueRange(_Frozen):
    """The closed interval pixel values live in, e.g. [-1, 1] for tanh, [0, 255] for raw bytes."""

    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> ValueRange:
        if not self.high > self.low:
            raise ValueError(f"value range high ({self.high}) must exceed low ({self.low})")
        return self


class ParityCase(_Frozen):
    """Source model vs ONNX model on one input shape."""

    input_shape: list[int]
    max_abs_error: float
    mean_abs_error: float


class Parity(_Frozen):
    """Verification figures from export time: the export fails when `max_relative_error > tolerance`."""

    tolerance: float = Field(
        description="largest max abs error accepted, as a fraction of the output range (high - low)"
    )
    max_abs_error: float | None = Field(description="worst case over `cases`; None when not verified")
    max_relative_error: float | None = Field(
        default=None, description="max_abs_error / (output_range.high - output_range.low)"
    )
    cases: list[ParityCase]
    passes: dict[str, float] = Field(
        default_factory=dict,
        description="max abs error after each graph pass, against the graph before it",
    )


class Fp16Variant(_Frozen):
    """An fp16 graph with float32 I/O stored beside the fp32 one."""

    file: str = FP16_MODEL_FILENAME
    psnr_db: float
    min_psnr_db: float
    accepted: bool


class Condition(_Frozen):
    """A conditional generator's class input.

    The served graph always takes one float32 row per image: the latent vector followed by the
    class as a one-hot vector of `classes` values (`input_shape[1] == latent_size + classes`),
    whatever the source model took; export wraps integer-label and two-input models to fit.
    """

    classes: int = Field(ge=2, le=10_000, description="number of classes; labels are 0 .. classes-1")
    class_names: list[str] | None = Field(
        default=None, description="optional name of each class, in label order"
    )
    encoding: Literal["onehot"] = Field(
        default="onehot", description="how the served graph takes the class: one-hot after the latent"
    )
    source: Literal["index", "onehot", "concat"] = Field(
        description="how the source model took the class: an integer label input (usually into an "
        "Embedding), a one-hot input, or one-hot values concatenated to the noise in one input"
    )
    source_input: str | None = Field(
        default=None, description="name of the source model's label input (two-input models)"
    )

    @model_validator(mode="after")
    def _names_fit(self) -> Condition:
        if self.class_names is not None:
            if len(self.class_names) != self.classes:
                raise ValueError(f"{len(self.class_names)} class names for {self.classes} classes")
            if len(set(self.class_names)) != len(self.class_names):
                raise ValueError("class names must be distinct")
        return self

    def label_of(self, value: int | str) -> int:
        """The label index for an index or a class name; `ValueError` naming the valid choices."""
        if isinstance(value, str) and not value.lstrip("-").isdigit():
            if self.class_names is None or value not in self.class_names:
                names = ", ".join(self.class_names) if self.class_names else "none (use 0 .. classes-1)"
                raise ValueError(f"unknown class name {value!r}; class names: {names}")
            return self.class_names.index(value)
        index = int(value)
        if not 0 <= index < self.classes:
            raise ValueError(f"label {index} is out of range: this model has labels 0 .. {self.classes - 1}")
        return index


class Source(_Frozen):
    """Where the exported model came from."""

    path: str
    format: Literal["keras", "h5", "savedmodel", "weights", "builtin", "checkpoint"]
    sha256: str
    architecture: str | None = None


class ModelCard(_Frozen):
    """Everything the service needs to call a model, and how it was verified."""

    schema_version: int = SCHEMA_VERSION
    name: str = Field(pattern=MODEL_NAME_PATTERN)
    version: str | None = Field(
        default=None,
        pattern=MODEL_NAME_PATTERN,
        description="the model's version: `gan-export convert --version`, else `content_version` of the "
        "ONNX graph; a card without one is served under `content_version` of its model file",
    )
    kind: ModelKind
    description: str = ""
    demo_weights: bool = Field(
        default=False,
        description="untrained demo weights: the images show the architecture works, nothing more",
    )

    file: str = MODEL_FILENAME
    input_name: str
    output_name: str
    input_shape: list[int | None] = Field(description="ONNX input shape; None marks a dynamic axis")
    output_shape: list[int | None] = Field(description="ONNX output shape; None marks a dynamic axis")
    layout: Layout = Field(default="NHWC", description="layout of image tensors at the graph's I/O")

    channels: int = Field(ge=1, le=4, description="channels of the output image (1 = grayscale)")
    height: int | None = Field(default=None, ge=1, description="output height; generators only")
    width: int | None = Field(default=None, ge=1, description="output width; generators only")
    flat_output: bool = Field(
        default=False, description="output is (N, H*W*C) and must be reshaped to (N, H, W, C)"
    )
    output_range: ValueRange = ValueRange(low=-1.0, high=1.0)

    latent_size: int | None = Field(default=None, ge=1)
    latent_distribution: LatentDistribution = "normal"
    condition: Condition | None = Field(
        default=None, description="class conditioning of a conditional generator; None when unconditional"
    )

    scale: int | None = Field(default=None, ge=1, description="upscale factor; upscalers only")
    input_range: ValueRange | None = Field(
        default=None, description="range the upscaler expects its input in"
    )
    input_channels: int | None = Field(default=None, ge=1, le=4)

    source: Source
    tools: dict[str, str] = Field(default_factory=dict)
    opset: int
    graph_passes: list[str] = Field(default_factory=list)
    parity: Parity
    fp16: Fp16Variant | None = None
    created: str = Field(description="ISO 8601 UTC time of export")

    @model_validator(mode="after")
    def _consistent(self) -> ModelCard:
        if self.kind == "generator":
            missing = [f for f in ("latent_size", "height", "width") if getattr(self, f) is None]
            if missing:
                raise ValueError(f"a generator card needs {', '.join(missing)}")
            width = self.input_shape[1] if len(self.input_shape) == 2 else None
            wanted = (self.latent_size or 0) + (self.condition.classes if self.condition else 0)
            if width is not None and width != wanted:
                raise ValueError(
                    f"input_shape {self.input_shape} does not hold latent_size {self.latent_size}"
                    + (f" + {self.condition.classes} one-hot class values" if self.condition else "")
                )
        else:
            missing = [f for f in ("scale", "input_range", "input_channels") if getattr(self, f) is None]
            if missing:
                raise ValueError(f"an upscaler card needs {', '.join(missing)}")
            if self.condition is not None:
                raise ValueError("only generators can be conditional")
        return self

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> ModelCard:
        return cls.model_validate_json(text)


def is_valid_model_name(name: str) -> bool:
    """True if `name` may name a repository entry (and so a directory and a URL part)."""
    return bool(_MODEL_NAME_RE.fullmatch(name))


def content_version(data: bytes) -> str:
    """A version derived from content: the first 12 hex digits of its sha256 (same bytes, same version)."""
    return hashlib.sha256(data).hexdigest()[:CONTENT_VERSION_DIGITS]


def read_card(entry_dir: Path) -> ModelCard:
    """Read `<entry_dir>/model.json`; raises `ValueError` with the path when it is not a valid card."""
    path = entry_dir / CARD_FILENAME
    try:
        return ModelCard.from_json(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a valid model card: {exc}") from exc


def write_card(entry_dir: Path, card: ModelCard) -> Path:
    """Write `<entry_dir>/model.json` and return its path."""
    path = entry_dir / CARD_FILENAME
    path.write_text(card.to_json() + "\n", encoding="utf-8")
    return path


def card_to_metadata(card: ModelCard) -> dict[str, str]:
    """The `metadata_props` entries that carry the card inside the ONNX file."""
    return {METADATA_KEY: json.dumps(card.model_dump(mode="json"), separators=(",", ":"))}
