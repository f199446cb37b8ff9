"""Live events: ``WS /api/events`` (the specification's real-time WebSocket events) and ``GET /api/events``
(the same events for clients without WebSockets, and the path's entry in the OpenAPI schema).

Parameters, on both: ``types=downtime,production`` (default every type), ``equipment=PRESS-01,PRESS-02``
(default every machine; naming machines leaves out events about the whole plant), ``since=<event id>``: the
events after that id (on the WebSocket: replayed first, then live; without ``since`` only live ones).
``since=0`` means every event still kept.  Every message is one event's envelope, ``{id, type, timestamp,
equipmentId, equipmentCode, data}``; ``id`` is what a client passes back as ``since`` after a reconnect.

The WebSocket subscribes before it completes the handshake, so a client gets every event committed after it
saw the connection open, with or without ``since``.  A refusal completes the handshake and closes at once, so
the close frame can say why:

=====  ==========================================================================================
code   why the server closes
=====  ==========================================================================================
1008   a parameter is wrong (unknown type or equipment, since not a number), or the read token is missing or wrong
       (auth.py: accepted, then closed, so a browser sees the code); the reason says which
1013   too slow to keep up (its queue overflowed), or the database is unavailable: reconnect with since=
4410   since= cannot be honoured whole (older than the events kept, or not an event of this database):
       reload what you show, then connect without since=
1012   the server is restarting or shutting down (1001 when the hub closes first)
=====  ==========================================================================================

Handlers are thin: the hub and the queries are :mod:`ingestor.api.events`.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from typing import Any, Literal

import asyncpg
from fastapi import APIRouter, Query, WebSocket
from fastapi.responses import Response
from pydantic import Field
from starlette.websockets import WebSocketDisconnect

from ingestor.api.deps import DbPool
from ingestor.api.events import (
    EVENT_TYPES,
    EventFilter,
    Subscription,
    SubscriptionClosed,
    equipment_ids,
    event_hub,
    horizon,
    read_events,
    replay,
)
from ingestor.api.models import ApiModel
from ingestor.api.problems import ApiProblem
from ingestor.api.state import ApiState
from ingestor.contract import get_logger
from ingestor.contract.timeouts import wait_for
from ingestor.database.connection import CONNECTION_ERRORS, DatabaseUnavailable

log = get_logger(__name__)

router = APIRouter(tags=["events"])

SEND_TIMEOUT = 30.0  # a client that takes no data for this long is given up (its connection is closed)
POLICY_VIOLATION, GOING_AWAY, TRY_AGAIN_LATER, SINCE_GONE = 1008, 1001, 1013, 4410


class EventEnvelope(ApiModel):
    """One live event.  On the WebSocket each message is one of these."""

    id: int = Field(description="increasing in commit order; pass the last one received as since=")
    type: Literal["production", "downtime", "quality_alert", "maintenance"]
    timestamp: datetime = Field(description="when what the event reports happened (UTC)")
    equipment_id: int | None = Field(description="null for an event about the whole plant")
    equipment_code: str | None
    data: dict[str, Any] = Field(description="the type's fields (docs/api.md, 'Live events')")


class EventPage(ApiModel):
    """Stored events after ``since``, oldest first."""

    events: list[EventEnvelope]
    next_since: int = Field(description="the since= that continues after these events")
    more: bool = Field(description="true when more events follow (ask again with next_since)")


class BadParameter(ValueError):
    def __init__(self, parameter: str, problem: str, status: int = 400) -> None:
        super().__init__(f"{parameter}: {problem}")
        self.parameter = parameter
        self.problem = problem
        self.status = status


def _types(text: str | None) -> frozenset[str] | None:
    if text is None or not text.strip():
        return None
    wanted = frozenset(t.strip() for t in text.split(",") if t.strip())
    unknown = sorted(wanted - set(EVENT_TYPES))
    if unknown:
        raise BadParameter("types", f"unknown event type {', '.join(unknown)} (known: {', '.join(EVENT_TYPES)})")
    return wanted


def _since(text: str | None) -> int | None:
    if text is None or text == "":
        return None
    if not text.isdigit() or len(text) > 18:
        raise BadParameter("since", f"expected the id of an event (a whole number), got {text[:30]!r}")
    return int(text)


async def _filter(pool: asyncpg.Pool, types: str | None, equipment: str | None) -> EventFilter:
    codes = [c.strip() for c in (equipment or "").split(",") if c.strip()]
    machines: frozenset[int] | None = None
    if codes:
        if len(codes) > 1000:
            raise BadParameter("equipment", "at most 1000 equipment codes")
        known = await equipment_ids(pool, codes)
        unknown = [c for c in codes if c not in known]
        if unknown:
            raise BadParameter("equipment", f"unknown equipment {', '.join(unknown)[:80]}", 404)
        machines = frozenset(known.values())
    return EventFilter(_types(types), machines)


@router.get("/api/events", response_model=EventPage, summary="stored live events after since= (also: WebSocket)",
            description="The same events as the WebSocket at this path (`ws://…/api/events?types=&equipment="
                        "&since=`), oldest first, for clients without WebSockets: poll with `since=` set to the "
                        "previous answer's `nextSince`.  Events are kept for `events.retention`.",
            responses={404: {"description": "an unknown equipment code"},
                       410: {"description": "since= is older than the events kept, or not an event of this "
                                            "database"}})
async def list_events(
        pool: DbPool,
        since: int = Query(0, ge=0, description="the id of the last event already seen (0: every event kept)"),
        limit: int = Query(100, ge=1, le=1000, description="at most this many events"),
        types: str | None = Query(None, description="comma-separated event types (default: all)",
                                  examples=["downtime,quality_alert"]),
        equipment: str | None = Query(None, description="comma-separated equipment codes (default: all)")
) -> Response:
    try:
        event_filter = await _filter(pool, types, equipment)
    except BadParameter as exc:
        raise ApiProblem(exc.status, "unknown equipment" if exc.status == 404 else "invalid request parameters",
                         str(exc), errors=[{"parameter": exc.parameter, "problem": exc.problem}]) from None
    problem = (await horizon(pool)).problem(since)
    if problem is not None:
        raise ApiProblem(410, "events no longer available", problem)
    events = await read_events(pool, since, event_filter, limit + 1)
    shown = events[:limit]
    next_since = shown[-1].id if shown else since
    # the envelopes go out as the database wrote them: the same bytes as on the WebSocket
    body = (f'{{"events":[{",".join(e.envelope for e in shown)}],"nextSince":{next_since},'
            f'"more":{"true" if len(events) > limit else "false"}}}')
    return Response(body, media_type="application/json")


@router.websocket("/api/events")
async def event_stream(websocket: WebSocket) -> None:
    """Live events; see the module docstring for the parameters and close codes."""
    state: ApiState = websocket.app.state.api
    query = websocket.query_params
    # Subscribed before the handshake completes: every event committed after the client sees it connected
    # reaches it, with or without since=.  A refusal is sent after accepting, so the close frame can say why.
    try:
        pool = await state.pool()
        event_filter = await _filter(pool, query.get("types"), query.get("equipment"))
        since = _since(query.get("since"))
        subscription = await event_hub(state.services, state.url).subscribe(event_filter)
    except BadParameter as exc:
        await websocket.accept()
        await _close(websocket, POLICY_VIOLATION, str(exc))
        return
    except (DatabaseUnavailable, asyncpg.PostgresError, *CONNECTION_ERRORS):
        await websocket.accept()
        await _close(websocket, TRY_AGAIN_LATER, "database unavailable; reconnect shortly (with since=)")
        return
    try:
        await websocket.accept()
        if since is not None:
            problem = (await horizon(pool)).problem(since)
            if problem is not None:
                await _close(websocket, SINCE_GONE, problem)
                return
        sender = asyncio.create_task(_send(websocket, pool, subscription, since))
        receiver = asyncio.create_task(_until_disconnect(websocket))
        done, pending = await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if sender in done:
            await _finish(websocket, sender)
    except (DatabaseUnavailable, asyncpg.PostgresError, *CONNECTION_ERRORS):
        await _close(websocket, TRY_AGAIN_LATER, "database unavailable; reconnect shortly (with since=)")
    finally:
        subscription.cancel()


async def _send(websocket: WebSocket, pool: asyncpg.Pool, subscription: Subscription, since: int | None) -> None:
    async for event in replay(pool, subscription, since):
        await wait_for(websocket.send_text(event.envelope), SEND_TIMEOUT)


async def _until_disconnect(websocket: WebSocket) -> None:
    """Read (and ignore) what the client sends, until it goes away."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return


async def _finish(websocket: WebSocket, sender: asyncio.Task[None]) -> None:
    error = sender.exception()
    if isinstance(error, SubscriptionClosed):
        code = {"slow": TRY_AGAIN_LATER, "gap": SINCE_GONE, "shutdown": GOING_AWAY}[error.kind]
        await _close(websocket, code, error.reason)
    elif isinstance(error, TimeoutError):
        log.info("live events: a client took no data for a while; given up", timeout_s=SEND_TIMEOUT)
    elif isinstance(error, (DatabaseUnavailable, asyncpg.PostgresError, *CONNECTION_ERRORS)):
        await _close(websocket, TRY_AGAIN_LATER, "database unavailable; reconnect shortly (with since=)")
    elif error is not None and not isinstance(error, (WebSocketDisconnect, OSError)):
        raise error


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    """Close with ``code`` and ``reason`` (cut to the 123 bytes a close frame holds), if the client is still
    there; a client that takes no data is given up after SEND_TIMEOUT."""
    encoded = reason.encode()[:123]
    with contextlib.suppress(Exception):
        await wait_for(websocket.close(code, encoded.decode(errors="ignore")), SEND_TIMEOUT)
