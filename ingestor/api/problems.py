"""Errors as ``application/problem+json`` (RFC 9457): a 4xx for anything the client sent, never a 500 for bad
input, and never an internal detail (a DSN, a query, a traceback) in a body."""

from __future__ import annotations

from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ingestor.contract import get_logger
from ingestor.database.connection import CONNECTION_ERRORS, DatabaseUnavailable

log = get_logger(__name__)

PROBLEM_JSON = "application/problem+json"


class ApiProblem(Exception):
    """Raise from a handler to answer with a problem document: ``ApiProblem(404, "unknown equipment",
    "no equipment with code 'PRESS-9'")``."""

    def __init__(self, status: int, title: str, detail: str | None = None, *,
                 headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(title)
        self.status = status
        self.title = title
        self.detail = detail
        self.headers = headers
        self.extra = extra


def problem_response(status: int, title: str, detail: str | None = None, *,
                     headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _location(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("query", "path", "body", "header")]
    return ".".join(parts) or "request"


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{"parameter": _location(tuple(e.get("loc", ()))), "problem": str(e.get("msg", ""))[:300]}
              for e in exc.errors()]
    detail = "; ".join(f"{e['parameter']}: {e['problem']}" for e in errors[:5])
    return problem_response(400, "invalid request parameters", detail, errors=errors)


async def _api_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiProblem)
    return problem_response(exc.status, exc.title, exc.detail, headers=exc.headers, **exc.extra)


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    titles = {401: "authentication required", 403: "not allowed", 404: "not found", 405: "method not allowed"}
    return problem_response(exc.status_code, titles.get(exc.status_code, str(exc.detail)),
                            None if exc.status_code in titles and exc.detail in (None, "Not Found",
                                                                                 "Method Not Allowed")
                            else str(exc.detail),
                            headers=dict(exc.headers) if exc.headers else None)


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("api: database unavailable", path=request.url.path, error=type(exc).__name__)
    return problem_response(503, "database unavailable", "the database cannot be reached; try again shortly",
                            headers={"Retry-After": "5"})


async def _no_schema(request: Request, exc: Exception) -> JSONResponse:
    log.warning("api: the database has no analytics schema", path=request.url.path, error=type(exc).__name__)
    return problem_response(503, "schema not applied",
                            "the database lacks the analytics schema; run `ingestor schema apply`",
                            headers={"Retry-After": "30"})


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("api: unexpected error", path=request.url.path, error=type(exc).__name__, exc_info=exc)
    return problem_response(500, "internal error", "the error is logged by the server")


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(ApiProblem, _api_problem)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(DatabaseUnavailable, _unavailable)
    for error in CONNECTION_ERRORS:
        if issubclass(error, Exception):
            app.add_exception_handler(error, _unavailable)
    for missing in (asyncpg.UndefinedTableError, asyncpg.UndefinedFunctionError):
        app.add_exception_handler(missing, _no_schema)
    app.add_exception_handler(Exception, _unexpected)
