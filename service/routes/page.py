"""The web page at `/` and its assets under `/static/`, served from the package's `service/static/`.

Plain HTML, CSS and one JavaScript module: no framework, no build step, nothing from another host
(the Content-Security-Policy below lets the browser load only this origin's files). The page calls
only the public API (`GET /models`, `POST /generate`, `POST /upscale`), so whatever it does a user
can script. The API-key middleware leaves these paths open: the page asks for a key when the API
answers 401.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter, Response
from starlette.exceptions import HTTPException

router = APIRouter(include_in_schema=False)

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
PAGE = "index.html"
#: Only this origin's scripts, styles and API; images also from the blob: and data: URLs the page makes.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
)


@cache
def page_files() -> dict[str, bytes]:
    """Every page file by name, read from the package once (a few tens of kilobytes)."""
    folder = resources.files("service") / "static"
    return {
        entry.name: entry.read_bytes()
        for entry in folder.iterdir()
        if entry.is_file() and any(entry.name.endswith(suffix) for suffix in CONTENT_TYPES)
    }


def page_file(name: str) -> Response:
    """One page file with its content type; revalidated on each load so an upgrade shows at once."""
    content = page_files().get(name)
    if content is None:
        raise HTTPException(404, f"no page file {name!r}")
    suffix = name[name.rindex(".") :]
    return Response(
        content,
        media_type=CONTENT_TYPES[suffix],
        headers={
            "Cache-Control": "no-cache",
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff",
        },
    )


@router.get("/")
@router.get("/index.html")
async def page() -> Response:
    """The page: generate, explore the latent space, upscale."""
    return page_file(PAGE)


@router.get("/static/{name}")
async def static_file(name: str) -> Response:
    """A file the page loads (script, style sheet, icon)."""
    return page_file(name)
