"""The application factory: one FastAPI application, its routers, CORS, problem documents and tokens."""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from ingestor import __version__
from ingestor.api.auth import require_read
from ingestor.api.problems import install_problem_handlers
from ingestor.api.routes import analytics, events, health, page, records
from ingestor.api.state import ApiState

OPENAPI_URL = "/api/openapi.json"


def create_app(state: ApiState) -> FastAPI:
    """The application serving ``state``.  Every ``/api/…`` resource needs the read token when tokens are
    configured (the record endpoints the write token); ``/metrics``, ``/healthz`` and ``/readyz`` stay open."""
    app = FastAPI(
        title="Shop-floor ingestor API",
        version=__version__,
        summary="OEE, production, downtime and reliability of the plant, its live events, and the operator's "
                "view of the ingestor",
        openapi_url=OPENAPI_URL, docs_url="/api/docs", redoc_url=None,
    )
    app.state.api = state
    install_problem_handlers(app)
    if state.config.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=state.config.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"], max_age=600)
    app.include_router(health.router)
    app.include_router(page.router)  # the page is open; the data it fetches is not
    read = [Depends(require_read)]
    for router in _resource_routers():
        app.include_router(router, dependencies=read)
    return app


def _resource_routers() -> list[APIRouter]:
    """The routers of the plant's resources, each needing the read token (write endpoints add their own)."""
    return [analytics.router, events.router, records.router]
