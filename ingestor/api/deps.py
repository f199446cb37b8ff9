"""Dependencies shared by the routers: the application's state and its database pool."""

from __future__ import annotations

from typing import Annotated

import asyncpg
from fastapi import Depends
from starlette.requests import HTTPConnection

from ingestor.api.state import ApiState


def get_state(request: HTTPConnection) -> ApiState:
    state: ApiState = request.app.state.api
    return state


async def get_pool(request: HTTPConnection) -> asyncpg.Pool:
    return await get_state(request).pool()


State = Annotated[ApiState, Depends(get_state)]
DbPool = Annotated[asyncpg.Pool, Depends(get_pool)]
