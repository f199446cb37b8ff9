"""Helpers for the API's tests: the application on a real database, in-process (httpx's ASGI transport) or
served by uvicorn on a free loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx

from ingestor.api.app import create_app
from ingestor.api.config import HttpConfig
from ingestor.api.server import ApiServer
from ingestor.api.state import ApiState
from ingestor.plant import PlantConfig


def api_state(dsn: str, *, plant: PlantConfig | None = None, environ: Mapping[str, str] | None = None,
              **http: Any) -> ApiState:
    return ApiState(HttpConfig(listen="127.0.0.1:0", **http), dsn, plant=plant, environ=environ or {})


@asynccontextmanager
async def api_client(state: ApiState) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the application in this process (no socket), on a real database."""
    app = create_app(state)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
            yield client
    finally:
        await state.close()


@asynccontextmanager
async def served(state: ApiState) -> AsyncIterator[str]:
    """The application served by uvicorn on a free loopback port; yields its base URL."""
    async with ApiServer(state) as server:
        yield f"http://127.0.0.1:{server.port}"
