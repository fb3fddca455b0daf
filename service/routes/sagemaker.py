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

- `Content-Type: application/jsonlines`: one `/generate` body per line, one answer line per line
  (Batch Transform; see `service.routes.batch_transform`).

The SageMaker mode (GAN_SERVE_SAGEMAKER_MODE: realtime, async, batch, serverless) sets the limits:
a response above the mode's payload limit (6 MB; async 1 GB; batch MaxPayloadInMB; serverless 4 MB)
is refused with 413 saying what to change, and work past the mode's time limit (60 s; async 1 h;
batch 600 s) ends with 504.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from service.decode import media_type
from service.deps import FactsDep, StateDep
from service.encode import GenerateFormat
from service.errors import InvalidCustomAttributes, InvocationTimeout, UnsupportedMediaType
from service.facts import RequestFacts
from service.rendering import JSON_MEDIA_TYPE, Output, Rendered, Rendering, ResponseLimit, choose_output
from service.responses import error_responses
from service.routes.batch_transform import JSON_LINES_MEDIA_TYPES, invoke_json_lines
from service.routes.generate import GenerateRequest, serve_generate
from service.routes.upscale import UpscaleOptions, serve_upscale
from service.settings import SageMakerLimits
from service.state import ServiceState
from service.uploads import read_body, unless_disconnected

router = APIRouter(tags=["sagemaker"])

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


#: Where each SageMaker mode's payload limit comes from, and what to use instead, for the 413 message.
_LIMIT_NAMES = {
    "realtime": (
        "SageMaker real-time endpoints return",
        "or use SageMaker asynchronous inference (S3 output, up to 1 GB)",
    ),
    "serverless": ("SageMaker serverless endpoints return", "or use a real-time or asynchronous endpoint"),
    "async": ("SageMaker asynchronous inference returns", "or split the work over several requests"),
    "batch": ("this Batch Transform job's MaxPayloadInMB allows", "or put fewer requests in a line's body"),
}


def response_limit(limits: SageMakerLimits, advice: str) -> ResponseLimit:
    """The mode's payload limit, refused saying what to ask for instead."""
    returns, elsewhere = _LIMIT_NAMES[limits.mode]
    return ResponseLimit(
        limits.max_payload_bytes,
        f"the response would be {{size:,}} bytes; {returns} at most {limits.max_payload_bytes:,}. Ask for a "
        f"smaller format (Accept: image/jpeg or image/webp), {advice}, {elsewhere} for large results",
    )


def sagemaker_rendering(
    state: ServiceState, output: Output, requested: GenerateFormat, advice: str
) -> Rendering:
    """Accept over the request's own format: an image type or npy replaces it; JSON or zip envelopes it."""
    limit = response_limit(state.settings.sagemaker_limits, advice)
    if output == "json" or output == "zip":
        return state.rendering(requested, output, limit)
    return state.rendering(output or requested, "auto", limit)


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
    responses={
        200: {"description": "Every model is loaded and warm (empty body)"},
        **error_responses(401, 413, 503),
    },
)
async def ping(request: Request) -> Response:
    """200 with an empty body once every model is loaded and warm, else 503; never runs a model."""
    ready = bool(getattr(request.app.state, "ready", False))
    return Response(status_code=200 if ready else 503)


@router.post(
    "/invocations",
    summary="SageMaker inference",
    response_class=Response,
    responses=error_responses(400, 401, 404, 406, 413, 415, 422, 500, 503, 504),
)
async def invocations(
    request: Request,
    state: StateDep,
    facts: FactsDep,
    accept: Annotated[str | None, Header()] = None,
    custom_attributes: Annotated[str | None, Header(alias=CUSTOM_ATTRIBUTES_HEADER)] = None,
) -> Response:
    """Generate (JSON or JSON Lines body) or upscale (image body), by Content-Type: see the module doc."""
    content_type = request.headers.get("content-type")
    kind = media_type(content_type)
    json_lines = kind in JSON_LINES_MEDIA_TYPES
    if kind != JSON_MEDIA_TYPE and not json_lines and not kind.startswith("image/"):
        raise UnsupportedMediaType(
            f"Content-Type {content_type!r} is not served here: send application/json (a /generate "
            "body), application/jsonlines (one per line) or an image/png, image/jpeg or image/webp body "
            "to upscale"
        )
    output = None if json_lines else choose_output(accept)
    body = await read_body(request, state.settings.max_body_bytes)
    limits = state.settings.sagemaker_limits
    try:
        async with asyncio.timeout(limits.timeout_s):
            if json_lines:
                advice = "fewer images per line, or BatchStrategy=SingleRecord"
                limit = response_limit(limits, advice)
                work = invoke_json_lines(body, accept, limit, state, facts)
            elif kind == JSON_MEDIA_TYPE:
                work = invoke_generate(body, output, state, facts)
            else:
                assert content_type is not None
                work = invoke_upscale(body, content_type, custom_attributes, output, state, facts)
            rendered = await unless_disconnected(request, work)
    except TimeoutError:
        raise InvocationTimeout(
            f"not done within {limits.timeout_s:g} s, the time SageMaker gives one request in {limits.mode} "
            "mode; ask for less per request, or use asynchronous inference (up to one hour)"
        ) from None
    return rendered.response()
