"""The operator page: one HTML file, its stylesheet and its script, shipped as package data (no build step,
no external URL, so it works on an offline shop-floor network).

The page itself is open, like ``/healthz``: it holds no data.  Everything it shows comes from the ``/api/…``
endpoints, which need the read token when tokens are configured; the script asks for the token on a 401 and
keeps it in ``sessionStorage`` for the tab's lifetime.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from ingestor.api.problems import ApiProblem

STATIC = Path(__file__).resolve().parent.parent / "static"
ASSETS = {"operator.css": "text/css; charset=utf-8", "operator.js": "text/javascript; charset=utf-8"}
# no caching between releases: the three files must match each other
HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
           "Content-Security-Policy": "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
                                      "frame-ancestors 'none'"}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def operator_page() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8", headers=HEADERS)


@router.get("/static/{name}")
async def operator_asset(name: str) -> FileResponse:
    media_type = ASSETS.get(name)  # only the named files: no path from the request reaches the file system
    if media_type is None:
        raise ApiProblem(404, "not found", f"no static file {name!r}")
    return FileResponse(STATIC / name, media_type=media_type, headers=HEADERS)
