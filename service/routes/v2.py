"""The Open Inference Protocol (v2, REST), as Triton, KServe and Seldon speak it, over the same core.

`GET /v2`, `/v2/health/live`, `/v2/health/ready`, `/v2/models/{name}[/versions/{version}]`
(metadata), `.../ready` and `POST .../infer`, with JSON tensors or the binary tensor data extension
(`Inference-Header-Content-Length`). Errors are the protocol's `{"error": "<message>"}`.

How this service's models look as tensors (also in each model's metadata `parameters`):

- **Generators** take `latents`, FP32 `[n, latent_size]` (the vectors `/generate` would draw or
  take), and conditional ones also `labels`, INT64 `[n]`, one class index per image (optional:
  without it the images spread evenly over the classes, as on `/generate`). They return `images`,
  UINT8 `[n, height, width, channels]` — the pixels `/generate` encodes — or, with the parameter
  `"datatype": "FP32"` on the requested output (or on the request), the model's output values in
  its `output_range`, same shape.
- **Upscalers** take `images`, UINT8 `[n, height, width, channels]` (channels 1 or 3, or 2 / 4 with
  alpha), and return `images`, UINT8 `[n, height·scale, width·scale, channels]` — the pixels `/upscale`
  encodes. Request parameters `tile` and `overlap` set the tiling, as on `/upscale`.

A model's version is its card's (`GET /models`); `/versions/{version}` must name it.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Path, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError

from service import __version__
from service.decode import DecodedImage
from service.deps import FactsDep, StateDep
from service.errors import ImageTooLarge, InvalidTensor, ModelNotFound
from service.facts import RequestFacts
from service.inference import Generation, UpscaleJob
from service.rendering import INFERENCE_HEADER_LENGTH, OutputTensor, render_tensors
from service.responses import error_responses
from service.routes.upscale import UpscaleOptions
from service.sessions import LoadedModel
from service.state import ServiceState
from service.tensors import InferenceRequest, parse_inference_request
from service.uploads import read_body, unless_disconnected

PREFIX = "/v2"
router = APIRouter(prefix=PREFIX, tags=["open inference protocol"])

PLATFORM = "onnxruntime_onnx"
EXTENSIONS = ["binary_tensor_data"]
#: The one output of every model, and the datatypes it can be asked in, per kind.
OUTPUT = "images"
OUTPUT_DATATYPES = {"generator": ("UINT8", "FP32"), "upscaler": ("UINT8",)}

ModelName = Annotated[str, Path(description="the model's name")]
ModelVersion = Annotated[str, Path(description="the model's version (GET /models shows it)")]


class TensorMetadata(BaseModel):
    """A tensor's name, datatype and shape (-1: any size)."""

    name: str
    datatype: str
    shape: list[int]


class ServerMetadata(BaseModel):
    """The server's name, version and protocol extensions."""

    name: str
    version: str
    extensions: list[str]


class ModelMetadata(BaseModel):
    """A model's versions, platform and tensors; `parameters` says what the tensors mean here."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, Any] = Field(description="kind, value ranges, classes, and how to use the tensors")


class ServerLive(BaseModel):
    live: bool


class ServerReady(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


def is_v2(path: str) -> bool:
    """Whether `path` is one of this protocol's (its errors take the protocol's shape)."""
    return path == PREFIX or path.startswith(PREFIX + "/")


def model_at(state: ServiceState, name: str, version: str | None) -> LoadedModel:
    """The model called `name`, checked to be at `version` when one is given."""
    model = state.repository.find(name)
    if version is not None and version != model.version:
        raise ModelNotFound(f"model {name!r} has no version {version!r}; it is at version {model.version!r}")
    return model


def metadata_of(model: LoadedModel) -> ModelMetadata:
    """The model as tensors: see the module docstring."""
    card = model.card
    parameters: dict[str, Any] = {"kind": card.kind, "description": card.description}
    if card.kind == "generator":
        assert card.latent_size is not None and card.height is not None and card.width is not None
        inputs = [TensorMetadata(name="latents", datatype="FP32", shape=[-1, card.latent_size])]
        parameters["latents"] = f"latent vectors, {card.latent_distribution} distribution"
        if card.condition is not None:
            inputs.append(TensorMetadata(name="labels", datatype="INT64", shape=[-1]))
            parameters["labels"] = (
                f"one class index per image, 0 .. {card.condition.classes - 1}; optional: without it "
                "the images spread evenly over the classes"
            )
            parameters["classes"] = card.condition.classes
            parameters["class_names"] = card.condition.class_names
        output_shape = [-1, card.height, card.width, card.channels]
        parameters["images"] = (
            'UINT8 pixels; the output parameter "datatype": "FP32" gives the model\'s values in output_range'
        )
    else:
        assert card.input_channels is not None
        inputs = [TensorMetadata(name=OUTPUT, datatype="UINT8", shape=[-1, -1, -1, card.input_channels])]
        output_shape = [-1, -1, -1, card.channels]
        parameters["scale"] = card.scale
        parameters["images"] = "UINT8 pixels in and out; 1 or 3 channels, or 2 or 4 with alpha"
        parameters["tiling"] = 'request parameters "tile" and "overlap", as on /upscale'
    parameters["output_range"] = [card.output_range.low, card.output_range.high]
    return ModelMetadata(
        name=card.name,
        versions=[model.version],
        platform=PLATFORM,
        inputs=inputs,
        outputs=[TensorMetadata(name=OUTPUT, datatype="UINT8", shape=output_shape)],
        parameters=parameters,
    )


@router.get("", summary="Server metadata", responses=error_responses(401, 413, 503))
async def v2_server_metadata() -> ServerMetadata:
    """The server's name, version and the protocol extensions it supports."""
    return ServerMetadata(name="gan-serve", version=__version__, extensions=EXTENSIONS)


@router.get("/health/live", summary="Server liveness", responses=error_responses(401, 413))
async def v2_server_live() -> ServerLive:
    """200 as long as the process serves requests."""
    return ServerLive(live=True)


@router.get("/health/ready", summary="Server readiness", responses=error_responses(401, 413, 503))
async def v2_server_ready(state: StateDep) -> ServerReady:
    """200 once every model is loaded and warm; 503 before and while stopping."""
    return ServerReady(ready=True)


@router.get("/models/{name}", summary="Model metadata", responses=error_responses(401, 404, 413, 503))
async def v2_model_metadata(state: StateDep, name: ModelName) -> ModelMetadata:
    """The model's versions, platform, input and output tensors."""
    return metadata_of(model_at(state, name, None))


@router.get(
    "/models/{name}/versions/{version}",
    summary="Model version metadata",
    responses=error_responses(401, 404, 413, 503),
)
async def v2_model_version_metadata(state: StateDep, name: ModelName, version: ModelVersion) -> ModelMetadata:
    """The model's metadata, if it is at `version`."""
    return metadata_of(model_at(state, name, version))


@router.get("/models/{name}/ready", summary="Model readiness", responses=error_responses(401, 404, 413, 503))
async def v2_model_ready(state: StateDep, name: ModelName) -> ModelReady:
    """200 when the model is loaded and warm; 404 for an unknown model."""
    return ModelReady(name=model_at(state, name, None).name, ready=True)


@router.get(
    "/models/{name}/versions/{version}/ready",
    summary="Model version readiness",
    responses=error_responses(401, 404, 413, 503),
)
async def v2_model_version_ready(state: StateDep, name: ModelName, version: ModelVersion) -> ModelReady:
    """200 when the model is loaded, warm and at `version`."""
    return ModelReady(name=model_at(state, name, version).name, ready=True)


INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The output tensors: JSON, or with binary outputs the JSON header "
        f"(`{INFERENCE_HEADER_LENGTH}` bytes) followed by the tensors' raw bytes.",
        "content": {"application/json": {}, "application/octet-stream": {}},
    },
    **error_responses(400, 401, 404, 413, 422, 500, 503),
}


@router.post("/models/{name}/infer", summary="Inference", response_class=Response, responses=INFER_RESPONSES)
async def v2_model_infer(request: Request, state: StateDep, facts: FactsDep, name: ModelName) -> Response:
    """Run the model on the request's tensors (see the module docstring for each kind's tensors)."""
    return await infer(request, state, facts, model_at(state, name, None))


@router.post(
    "/models/{name}/versions/{version}/infer",
    summary="Inference on a model version",
    response_class=Response,
    responses=INFER_RESPONSES,
)
async def v2_model_version_infer(
    request: Request, state: StateDep, facts: FactsDep, name: ModelName, version: ModelVersion
) -> Response:
    """Run the model, if it is at `version`, on the request's tensors."""
    return await infer(request, state, facts, model_at(state, name, version))


async def infer(request: Request, state: ServiceState, facts: RequestFacts, model: LoadedModel) -> Response:
    """Parse the tensors, call the core, render the output tensor."""
    facts.model = model.name
    body = await read_body(request, state.settings.max_body_bytes)
    header_length = request.headers.get(INFERENCE_HEADER_LENGTH)
    inference, inputs = await state.in_encode_pool(parse_inference_request, body, header_length)
    datatype, binary = requested_output(inference, model)
    if model.card.kind == "generator":
        work = generate_tensor(state, model, inputs, datatype)
    else:
        work = upscale_tensor(state, model, inputs, inference.parameters)
    images = await unless_disconnected(request, work)
    output = OutputTensor(OUTPUT, images, binary)
    rendered = await state.in_encode_pool(
        render_tensors, model.name, model.version, inference.id, [output], {}
    )
    return rendered.response()


def requested_output(request: InferenceRequest, model: LoadedModel) -> tuple[str, bool]:
    """The output's datatype and whether it travels as binary data (output parameters over the request's)."""
    parameters = dict(request.parameters)
    binary, datatype = parameters.get("binary_data_output", False), parameters.get("datatype", "UINT8")
    for output in request.outputs or []:
        if output.name != OUTPUT:
            raise InvalidTensor(f"model {model.name} has no output {output.name!r}; its output is {OUTPUT!r}")
        binary = output.parameters.get("binary_data", binary)
        datatype = output.parameters.get("datatype", datatype)
    allowed = OUTPUT_DATATYPES[model.card.kind]
    if datatype not in allowed:
        raise InvalidTensor(
            f"output {OUTPUT!r} of {model.card.kind} {model.name} comes as {' or '.join(allowed)}, "
            f"not {datatype!r}"
        )
    if not isinstance(binary, bool):
        raise InvalidTensor(f"binary_data must be true or false, not {binary!r}")
    return str(datatype), binary


def _take(
    inputs: dict[str, np.ndarray], name: str, dtype: type, wanted: str, model: LoadedModel
) -> np.ndarray | None:
    array = inputs.pop(name, None)
    if array is not None and array.dtype != dtype:
        raise InvalidTensor(f"input {name!r} of model {model.name} is {wanted}, not {array.dtype.name}")
    return array


def _no_more(inputs: dict[str, np.ndarray], model: LoadedModel, expected: str) -> None:
    if inputs:
        raise InvalidTensor(f"model {model.name} has no input {sorted(inputs)[0]!r}; its inputs: {expected}")


async def generate_tensor(
    state: ServiceState, model: LoadedModel, inputs: dict[str, np.ndarray], datatype: str
) -> np.ndarray:
    """`latents` (+ `labels`) in, the images as UINT8 pixels or FP32 values out."""
    latents = _take(inputs, "latents", np.float32, "FP32", model)
    labels = _take(inputs, "labels", np.int64, "INT64", model)
    _no_more(inputs, model, "latents, labels" if model.card.condition else "latents")
    if latents is None:
        raise InvalidTensor(
            f"model {model.name} needs the input 'latents' (FP32 [n, {model.card.latent_size}])"
        )
    if latents.ndim != 2 or latents.shape[0] < 1:
        raise InvalidTensor(
            f"input 'latents' has shape {list(latents.shape)}; it takes [n, {model.card.latent_size}], n >= 1"
        )
    if labels is not None and labels.ndim != 1:
        raise InvalidTensor(f"input 'labels' has shape {list(labels.shape)}; it takes [n]")
    result = await state.core.generate(
        Generation(model=model.name, n=latents.shape[0], latents=latents, labels=labels)
    )
    return result.values if datatype == "FP32" else result.pixels


async def upscale_tensor(
    state: ServiceState, model: LoadedModel, inputs: dict[str, np.ndarray], parameters: dict[str, Any]
) -> np.ndarray:
    """`images` in, each upscaled as `/upscale` would, stacked out."""
    images = _take(inputs, OUTPUT, np.uint8, "UINT8", model)
    _no_more(inputs, model, OUTPUT)
    if images is None:
        raise InvalidTensor(
            f"model {model.name} needs the input {OUTPUT!r} (UINT8 [n, height, width, channels])"
        )
    if images.ndim != 4 or min(images.shape) < 1 or images.shape[3] > 4:
        raise InvalidTensor(
            f"input {OUTPUT!r} has shape {list(images.shape)}; it takes [n, height, width, channels], "
            "n, height, width >= 1, channels 1 to 4"
        )
    _, height, width, channels = images.shape
    if height * width > state.settings.max_image_pixels:
        raise ImageTooLarge(
            f"the images are {width}x{height} = {width * height} pixels; the limit is "
            f"{state.settings.max_image_pixels} pixels"
        )
    try:
        options = UpscaleOptions.model_validate(
            {key: parameters[key] for key in ("tile", "overlap") if key in parameters}
        )
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
    job = UpscaleJob(model=model.name, tile=options.tile, overlap=options.overlap)
    color_channels = 1 if channels in (1, 2) else 3
    results = []
    for image in images:
        alpha = np.ascontiguousarray(image[..., color_channels]) if channels in (2, 4) else None
        decoded = DecodedImage(
            color=np.ascontiguousarray(image[..., :color_channels]), alpha=alpha, format="TENSOR", bit_depth=8
        )
        results.append(await state.core.upscale(decoded, job))
    return np.stack([result.pixels for result in results])
