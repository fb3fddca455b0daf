"""SageMaker Batch Transform: `GET /execution-parameters` and JSON Lines bodies for `/invocations`.

A Batch Transform job splits its S3 input by line (`SplitType=Line`) and posts one or more lines to
`/invocations` as `application/jsonlines`. Every line is one `/generate` body; the answer holds one
line per input line, in order: the generate result as `Accept: application/json` gives it (base64
images in the request's `format`), or `{"error": {"code", "message"}}` when that line asks for
something that cannot be served (bad JSON, unknown model, too many images...). Blank lines are
skipped. Errors of the server itself (overload, a failed run) fail the whole request, so that
SageMaker retries it. Lines run concurrently, so the runner batches them together.

Before the job starts, SageMaker asks `GET /execution-parameters` how to call the container, unless
the job sets MaxConcurrentTransforms, BatchStrategy and MaxPayloadInMB itself.
"""

from __future__ import annotations

import asyncio
import json

from fastapi import APIRouter
from pydantic import BaseModel, Field, ValidationError

from service.deps import SettingsDep
from service.errors import InvalidRequest, NotAcceptable, RequestError, ResponseTooLarge
from service.facts import RequestFacts
from service.rendering import Rendered, ResponseLimit, parse_accept
from service.responses import error_responses
from service.routes.generate import GenerateRequest, serve_generate
from service.state import ServiceState

router = APIRouter(tags=["sagemaker"])

JSON_LINES = "application/jsonlines"
#: Content-Types taken as JSON Lines (SageMaker's, and the other names in use).
JSON_LINES_MEDIA_TYPES = frozenset(
    {JSON_LINES, "application/x-jsonlines", "application/jsonl", "application/x-ndjson"}
)
#: Accept values a JSON Lines answer satisfies.
_ACCEPTS_JSON_LINES = JSON_LINES_MEDIA_TYPES | {"*/*", "application/*"}
#: Lines generated at once: enough for the runner to batch them, few enough to bound the memory.
LINES_IN_FLIGHT = 32


class ExecutionParameters(BaseModel):
    """How SageMaker should call this container during a Batch Transform job."""

    MaxConcurrentTransforms: int = Field(description="parallel /invocations requests per instance")
    BatchStrategy: str = Field(description="MultiRecord: as many lines per request as MaxPayloadInMB allows")
    MaxPayloadInMB: int = Field(description="largest request (and answer) body, MB")


@router.get(
    "/execution-parameters",
    summary="SageMaker Batch Transform parameters",
    responses=error_responses(401, 413, 503),
)
async def execution_parameters(settings: SettingsDep) -> ExecutionParameters:
    """What a Batch Transform job uses unless it sets its own (GAN_SERVE_BATCH_* settings)."""
    return ExecutionParameters(
        MaxConcurrentTransforms=settings.batch_max_concurrent_transforms,
        BatchStrategy="MultiRecord",
        MaxPayloadInMB=settings.batch_max_payload_mb,
    )


def _error_line(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}, separators=(",", ":")).encode()


def _validation_message(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in error['loc'])}: {str(error['msg']).removeprefix('Value error, ')}"
        if error["loc"]
        else str(error["msg"])
        for error in exc.errors()
    )


async def _generate_line(number: int, line: bytes, state: ServiceState, facts: RequestFacts) -> bytes:
    """One line's answer: the generate result as JSON, or the error its request earned."""
    try:
        request = GenerateRequest.model_validate_json(line)
    except ValidationError as exc:
        return _error_line("invalid_request", f"line {number}: {_validation_message(exc)}")
    try:
        rendered = await serve_generate(request, state.rendering(request.format, "json"), state, facts)
    except RequestError as exc:
        return _error_line(exc.code, f"line {number}: {exc.message}")
    return rendered.content


async def invoke_json_lines(
    body: bytes, accept: str | None, limit: ResponseLimit, state: ServiceState, facts: RequestFacts
) -> Rendered:
    """Every non-blank line a /generate request; one answer line for each, in order."""
    ranges = [r for r in parse_accept(accept) if r.quality > 0]
    if accept and not any(r.media_type in _ACCEPTS_JSON_LINES for r in ranges):
        raise NotAcceptable(
            f"a JSON Lines request is answered in JSON Lines: Accept {JSON_LINES}, not {accept!r}"
        )
    lines = [(number, line) for number, line in enumerate(body.split(b"\n"), start=1) if line.strip()]
    if not lines:
        raise InvalidRequest("the JSON Lines body holds no request: one /generate body per line")
    answers: list[bytes] = []
    size = 0
    for start in range(0, len(lines), LINES_IN_FLIGHT):
        window = lines[start : start + LINES_IN_FLIGHT]
        answers += await asyncio.gather(*(_generate_line(n, line, state, facts) for n, line in window))
        size = sum(len(answer) for answer in answers) + len(answers) - 1
        if size > limit.max_bytes:
            raise ResponseTooLarge(limit.refusal.format(size=size))
    return Rendered(b"\n".join(answers), JSON_LINES, {"X-Lines": str(len(answers))})
