"""The operator's endpoints, unchanged in behaviour from before the API: ``/metrics`` (Prometheus),
``/healthz`` (200 while the event loop runs), ``/readyz`` (200 when the database is reachable with the schema
applied, else 503), both with a JSON body saying the state of the database and every connector; and
``/api/status``, the same and each tag's last value, for the operator page."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, Info, generate_latest

from ingestor import __version__
from ingestor.api.auth import require_read
from ingestor.api.deps import State
from ingestor.api.state import ApiState
from ingestor.contract import now_us

BUILD = Info("ingestor_build", "Version of the ingestor")
BUILD.info({"version": __version__})

router = APIRouter(tags=["operations"])


class JSONResponse(Response):
    """JSON whatever the daemon's status holds (paths, times: rendered as text)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json.dumps(content, default=str).encode()


@router.get("/metrics", response_class=Response, summary="Prometheus metrics",
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def prometheus_metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def _status(state: ApiState) -> tuple[bool, dict[str, Any]]:
    if state.live is not None:
        return state.live.status()
    # no daemon in this process (ingestor api): ready when the database answers
    try:
        pool = await state.pool()
        async with asyncio.timeout(5):
            await pool.fetchval("SELECT 1")
        return True, {"database": {"connected": True}}
    except Exception as exc:  # any failure is "not ready", said by its type only (no DSN in a body)
        return False, {"database": {"connected": False, "last_error": type(exc).__name__}}


@router.get("/healthz", summary="alive: 200 while the process runs")
async def healthz(state: State) -> JSONResponse:
    ready, details = await _status(state)
    return JSONResponse({"status": "ok", "ready": ready, **details})


@router.get("/readyz", summary="ready: 200 when the database is reachable with the schema applied, else 503",
            responses={503: {"description": "not ready; the body says why"}})
async def readyz(state: State) -> JSONResponse:
    ready, details = await _status(state)
    return JSONResponse({"status": "ok" if ready else "unavailable", "ready": ready, **details},
                        status_code=200 if ready else 503)


@router.get("/api/status", summary="the daemon's connectors, pipeline and each tag's last value",
            dependencies=[Depends(require_read)])
async def status(state: State) -> JSONResponse:
    ready, details = await _status(state)
    tags = state.live.tags() if state.live is not None else []
    return JSONResponse({"ready": ready, **details, "tags": tags, "now_us": now_us()})
