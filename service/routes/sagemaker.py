"""SageMaker's container contract on the same app: `GET /ping` and `POST /invocations`.

SageMaker passes only the body, `Content-Type`, `Accept` and `X-Amzn-SageMaker-Custom-Attributes`:

- `Content-Type: application/json`: the body is a `/generate` body (model, n, seed, ...).
- `Content-Type: image/png|jpeg|webp`: the body is the image to upscale; the options travel in
  `X-Amzn-SageMaker-Custom-Attributes` as comma-separated `key=value` pairs, e.g.
  `model=srgan-x4,tile=256,overlap=16,format=png` (keys: model, format, tile, overlap; at most 1024
  ASCII characters). Anything else is refused with 415.
- `Accept` picks the output: `image/png`, `image/jpeg`, `image/webp`, `application/x-npy`,
  `application/json` (base64 images in JSON) or `application/zip`. Missing, `*/*` or `image/*`: the
  body's (or attributes') `format`, PNG when it names none; several images come as a zip.
  An explicit image or npy Accept overrides `format`; with several images it sets the format of the
  files inside the zip.

Responses above the real-time payload limit (6 MB) are refused with 413 saying what to change.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from service.decode import media_type
from service.deps import FactsDep, StateDep
from service.encode import GenerateFormat
from service.errors import InvalidCustomAttributes, UnsupportedMediaType
from service.facts import RequestFacts
from service.rendering import JSON_MEDIA_TYPE, Output, Rendered, Rendering, ResponseLimit, choose_output
from service.responses import error_responses
from service.routes.generate import GenerateRequest, serve_generate
from service.routes.upscale import UpscaleOptions, serve_upscale
from service.state import ServiceState
from service.uploads import read_body

router = APIRouter(tags=["sagemaker"])

#: SageMaker real-time inference refuses request and response bodies above 6 MB.
MAX_RESPONSE_BYTES = 6_000_000
#: SageMaker passes at most 1024 ASCII characters of custom attributes.
MAX_CUSTOM_ATTRIBUTES = 1024
CUSTOM_ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"
CUSTOM_ATTRIBUTE_KEYS = ("model", "format", "tile", "overlap")


def parse_custom_attributes(header: str | None) -> UpscaleOptions:
    """Upscale options from `model=srgan-x4,format=png,tile=256,overlap=16` (every key optional)."""
    if not header or not header.strip():
        return UpscaleOptions()
    if len(header) > MAX_CUSTOM_ATTRIBUTES or not header.isascii():
        raise InvalidCustomAttributes(
            f"{CUSTOM_ATTRIBUTES_HEADER} must be at most {MAX_CUSTOM_ATTRIBUTES} ASCII characters"
        )
    values: dict[str, str] = {}
    for part in header.split(","):
        key, sep, value = (piece.strip() for piece in part.partition("="))
        if not part.strip():
            continue
        if not sep or not key or not value:
            raise InvalidCustomAttributes(
                f"{CUSTOM_ATTRIBUTES_HEADER}: {part.strip()!r} is not key=value "
                "(expected e.g. model=srgan-x4,format=png,tile=256)"
            )
        if key not in CUSTOM_ATTRIBUTE_KEYS:
            raise InvalidCustomAttributes(
                f"{CUSTOM_ATTRIBUTES_HEADER}: unknown key {key!r} in {part.strip()!r}; "
                f"known keys: {', '.join(CUSTOM_ATTRIBUTE_KEYS)}"
            )
        if key in values:
            raise InvalidCustomAttributes(f"{CUSTOM_ATTRIBUTES_HEADER}: {key!r} is given twice")
        values[key] = value
    try:
        return UpscaleOptions.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}={values.get(str(error['loc'][0]), '')!s}: "
            f"{str(error['msg']).removeprefix('Value error, ')}"
            for error in exc.errors()
        )
        raise InvalidCustomAttributes(f"{CUSTOM_ATTRIBUTES_HEADER}: {problems}") from None


def response_limit(advice: str) -> ResponseLimit:
    """SageMaker's payload limit, refused saying what to ask for instead."""
    return ResponseLimit(
        MAX_RESPONSE_BYTES,
        "the response would be {size:,} bytes; SageMaker real-time endpoints return at most "
        f"{MAX_RESPONSE_BYTES:,}. Ask for a smaller format (Accept: image/jpeg or image/webp), {advice}, "
        "or use SageMaker asynchronous inference (S3 output, up to 1 GB) for large results",
    )


def sagemaker_rendering(
    state: ServiceState, output: Output, requested: GenerateFormat, advice: str
) -> Rendering:
    """Accept over the request's own format: an image type or npy replaces it; JSON or zip envelopes it."""
    if output == "json" or output == "zip":
        return state.rendering(requested, output, response_limit(advice))
    return state.rendering(output or requested, "auto", response_limit(advice))


async def invoke_generate(body: bytes, output: Output, state: ServiceState, facts: RequestFacts) -> Rendered:
    """A /generate body in, the images out in the negotiated format."""
    try:
        request = GenerateRequest.model_validate_json(body) if body.strip() else GenerateRequest()
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
    rendering = sagemaker_rendering(state, output, request.format, "fewer images (n) or layout=grid")
    return await serve_generate(request, rendering, state, facts)


async def invoke_upscale(
    body: bytes,
    content_type: str,
    attributes: str | None,
    output: Output,
    state: ServiceState,
    facts: RequestFacts,
) -> Rendered:
    """Image bytes in, options from the custom attributes, the upscaled image out."""
    options = parse_custom_attributes(attributes)
    rendering = sagemaker_rendering(state, output, options.format, "a smaller input image")
    return await serve_upscale(body, content_type, options, rendering, state, facts)


@router.get(
    "/ping",
    summary="SageMaker health check",
    response_class=Response,
    responses={200: {"description": "Every model is loaded and warm (empty body)"}, 503: {}},
)
async def ping(request: Request) -> Response:
    """200 with an empty body once every model is loaded and warm, else 503; never runs a model."""
    ready = bool(getattr(request.app.state, "ready", False))
    return Response(status_code=200 if ready else 503)


@router.post(
    "/invocations",
    summary="SageMaker inference",
    response_class=Response,
    responses=error_responses(400, 404, 413, 415, 422, 500, 503),
)
async def invocations(
    request: Request,
    state: StateDep,
    facts: FactsDep,
    accept: Annotated[str | None, Header()] = None,
    custom_attributes: Annotated[str | None, Header(alias=CUSTOM_ATTRIBUTES_HEADER)] = None,
) -> Response:
    """Generate (JSON body) or upscale (image body), routed by Content-Type; see the module docstring."""
    content_type = request.headers.get("content-type")
    kind = media_type(content_type)
    if kind != JSON_MEDIA_TYPE and not kind.startswith("image/"):
        raise UnsupportedMediaType(
            f"Content-Type {content_type!r} is not served here: send application/json (a /generate "
            "body) or an image/png, image/jpeg or image/webp body to upscale"
        )
    output = choose_output(accept)
    body = await read_body(request, state.settings.max_body_bytes)
    if kind == JSON_MEDIA_TYPE:
        return (await invoke_generate(body, output, state, facts)).response()
    assert content_type is not None
    return (await invoke_upscale(body, content_type, custom_attributes, output, state, facts)).response()
