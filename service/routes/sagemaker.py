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

from typing import Annotated, Literal

from fastapi import APIRouter, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from service.decode import media_type
from service.deps import StateDep
from service.encode import FILE_EXTENSIONS, MEDIA_TYPES, OutputFormat, zip_files
from service.errors import InvalidCustomAttributes, NotAcceptable, ResponseTooLarge, UnsupportedMediaType
from service.responses import JSON_MEDIA_TYPE, ZIP_MEDIA_TYPE, error_responses
from service.routes.generate import GenerateRequest, respond_generate
from service.routes.upscale import UpscaleOptions, read_body, respond_upscale
from service.state import ServiceState

router = APIRouter(tags=["sagemaker"])

#: SageMaker real-time inference refuses request and response bodies above 6 MB.
MAX_RESPONSE_BYTES = 6_000_000
#: SageMaker passes at most 1024 ASCII characters of custom attributes.
MAX_CUSTOM_ATTRIBUTES = 1024
CUSTOM_ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"
CUSTOM_ATTRIBUTE_KEYS = ("model", "format", "tile", "overlap")

#: Accept media types and the output each selects; `None` keeps the request's own format.
ACCEPTED: dict[str, OutputFormat | Literal["json", "zip"] | None] = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/webp": "webp",
    "application/x-npy": "npy",
    JSON_MEDIA_TYPE: "json",
    ZIP_MEDIA_TYPE: "zip",
    "*/*": None,
    "image/*": None,
    "application/*": None,
}

Output = OutputFormat | Literal["json", "zip"] | None


def negotiate(accept: str | None) -> Output:
    """The output `Accept` asks for: the supported media range with the highest q (ties: first listed)."""
    if not accept or not accept.strip():
        return None
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(accept.split(",")):
        kind, *params = (piece.strip() for piece in part.split(";"))
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0 and kind.lower() in ACCEPTED:
            ranked.append((-quality, position, kind.lower()))
    if not ranked:
        supported = ", ".join(media for media in ACCEPTED if "*" not in media)
        raise NotAcceptable(f"cannot produce any of Accept: {accept!r}; supported: {supported}")
    return ACCEPTED[min(ranked)[2]]


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


def as_zip(response: Response, stem: str) -> Response:
    """`response` itself when it is a zip already, else its one file inside a zip."""
    if response.media_type == ZIP_MEDIA_TYPE:
        return response
    extension = next(
        (FILE_EXTENSIONS[fmt] for fmt, media in MEDIA_TYPES.items() if media == response.media_type), "bin"
    )
    headers = {
        key: value
        for key, value in response.headers.items()
        if key.lower() not in {"content-type", "content-length"}
    }
    headers["Content-Disposition"] = f'attachment; filename="{stem}.zip"'
    return Response(
        zip_files([(f"{stem}.{extension}", bytes(response.body))]), media_type=ZIP_MEDIA_TYPE, headers=headers
    )


def check_size(response: Response, advice: str) -> Response:
    """Refuse a response SageMaker would refuse, saying what to ask for instead."""
    size = len(response.body)
    if size > MAX_RESPONSE_BYTES:
        raise ResponseTooLarge(
            f"the response would be {size:,} bytes; SageMaker real-time endpoints return at most "
            f"{MAX_RESPONSE_BYTES:,}. Ask for a smaller format (Accept: image/jpeg or image/webp), "
            f"{advice}, or use SageMaker asynchronous inference (S3 output, up to 1 GB) for large results"
        )
    return response


async def invoke_generate(body: bytes, output: Output, accept: str | None, state: ServiceState) -> Response:
    """A /generate body in, the images out in the negotiated format."""
    try:
        request = GenerateRequest.model_validate_json(body) if body.strip() else GenerateRequest()
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
    if output not in (None, "json", "zip"):
        request = request.model_copy(update={"format": output})
    response = await respond_generate(request, accept if output == "json" else None, state)
    if output == "zip":
        response = as_zip(response, "images")
    return check_size(response, "fewer images (n) or layout=grid")


async def invoke_upscale(
    body: bytes,
    content_type: str,
    attributes: str | None,
    output: Output,
    accept: str | None,
    state: ServiceState,
) -> Response:
    """Image bytes in, options from the custom attributes, the upscaled image out."""
    options = parse_custom_attributes(attributes)
    if output not in (None, "json", "zip"):
        options = options.model_copy(update={"format": output})
    response = await respond_upscale(body, content_type, options, accept if output == "json" else None, state)
    if output == "zip":
        response = as_zip(response, "upscaled")
    return check_size(response, "a smaller input image")


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
    output = negotiate(accept)
    body = await read_body(request, state.settings.max_body_bytes)
    if kind == JSON_MEDIA_TYPE:
        return await invoke_generate(body, output, accept, state)
    assert content_type is not None
    return await invoke_upscale(body, content_type, custom_attributes, output, accept, state)
