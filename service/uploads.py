"""Reading request bodies: streamed up to the body limit, raw or as a multipart `file` field.

The request middleware already refuses a body whose declared Content-Length is above the limit;
`read_body` counts what actually arrives, so chunked bodies and per-request limits are held too.
Once the body is read, `unless_disconnected` watches the connection while the work runs: a client
that leaves has its work cancelled (its queued rows and tiles leave the batcher) and is logged 499.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.types import Message, Receive

from service.decode import check_media_type, media_type
from service.errors import ClientClosedRequest, InvalidImage, PayloadTooLarge

T = TypeVar("T")

MULTIPART = "multipart/form-data"


def body_too_large(limit: int) -> PayloadTooLarge:
    """The refusal of a body above `limit` bytes."""
    return PayloadTooLarge(f"the request body is larger than the limit of {limit} bytes")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused as soon as more than `limit` bytes have arrived."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise body_too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def read_upload(request: Request, limit: int) -> tuple[bytes, str | None]:
    """The uploaded image and its Content-Type, from a raw body or a multipart `file` field."""
    content_type = request.headers.get("content-type")
    if media_type(content_type) != MULTIPART:
        check_media_type(content_type)
        return await read_body(request, limit), content_type
    body = await read_body(request, limit)

    async def replay() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    # The body is already read (and size-checked): parse the form from memory.
    form = await Request(request.scope, replay).form(max_files=1, max_fields=0)
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise InvalidImage("the multipart form has no 'file' field holding the image")
    try:
        data = await upload.read()
    finally:
        await form.close()
    # Browsers and curl label unknown files application/octet-stream: the bytes decide then.
    return data, upload.content_type


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work`; if the client disconnects first, cancel it and raise `ClientClosedRequest` (499).

    Call it once the body has been read: from then on the ASGI receive channel has nothing to say
    but `http.disconnect`, so waiting on it costs no polling.
    """
    job = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnect(request.receive))
    # No asyncio.wait (a waiter and two callbacks per request): the watcher cancels the job itself.
    watch.add_done_callback(lambda _: job.cancel())
    try:
        # Awaiting the job directly: if this request is cancelled, so is the job.
        return await job
    except asyncio.CancelledError:
        if watch.done() and not watch.cancelled():
            raise ClientClosedRequest(
                "the client closed the connection before the answer was ready; its queued work was dropped"
            ) from None
        raise
    finally:
        watch.cancel()


async def _disconnect(receive: Receive) -> None:
    """Return once the ASGI server reports that the client has gone."""
    while (await receive())["type"] != "http.disconnect":
        pass
