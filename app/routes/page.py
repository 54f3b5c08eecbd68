"""The search page: static files shipped inside the package, served without a key.

The page holds no data, so it is public even when reads need a key; every call it
makes to the API carries the key the user types in. Its files are read from the
installed package (importlib.resources), so a wheel or the Docker image serves
the same bytes as a checkout, and no build step or CDN is involved.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from fastapi import APIRouter, Response

from app.errors import NotFound

router = APIRouter(tags=["page"], include_in_schema=False)

# Only these names are served: a fixed list, so no path from the URL reaches the disk.
STATIC_FILES = {
    "page.js": "text/javascript; charset=utf-8",
    "page.css": "text/css; charset=utf-8",
}

# The page shows ids and metadata other people uploaded. Scripts and styles only
# from our own files, images only from our origin or the blob: URLs thumbnails are
# shown through: a value that slipped into markup could still run nothing.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Small files; revalidating each load keeps an upgraded server's page consistent.
    "Cache-Control": "no-cache",
}


@cache
def _read(name: str) -> bytes:
    return files("app").joinpath("static", name).read_bytes()


@router.get("/")
def search_page() -> Response:
    return Response(
        _read("index.html"), media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS
    )


@router.get("/static/{name}")
def static_file(name: str) -> Response:
    media_type = STATIC_FILES.get(name)
    if media_type is None:
        raise NotFound(f"no static file {name!r}")
    return Response(_read(name), media_type=media_type, headers=SECURITY_HEADERS)
