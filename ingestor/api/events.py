"""The live events of the API process: one listener on the database, fanned out to every WebSocket client.

Events are rows of ``api_event`` (migration 0005), written by whichever process made them true (a daemon's
live task, the maintenance trigger) and announced by ``NOTIFY ingestor_event`` at their commit, in commit
order, which is also id order (0005 takes a lock to make it so).  So one API process sees the events of every
daemon writing into its database, and the id of the last event a client got is all it needs to resume.

**The hub** (:class:`EventHub`, one per application, started by the first subscriber) holds one dedicated
connection that LISTENs.  It delivers events in id order and never skips one: after every (re)connect it
LISTENs first, then reads the rows after the last id it delivered (backfill), then goes on with the
notifications, dropping those at or below that id.  While the database is away it retries with backoff; its
subscribers stay connected and get what they missed when it is back.  A notification too big for NOTIFY's
8000 bytes carries only the id, and the hub reads the row.  A keepalive query every 15 s notices a link that
died silently.

**Subscribers** get a bounded queue each (:class:`Subscription`).  The hub never waits for one: a client whose
queue is full is too slow to keep up, is dropped from the hub at once (its queue freed), and its WebSocket is
closed with code 1013 and a reason telling it to reconnect with ``since=`` (the route does that), so one slow
client never holds up another or the hub.

**Joining without a gap** (:func:`replay`, used by the route): subscribe first, then read the backlog after
``since`` from the table, then go on with the subscription, skipping ids already sent.  Everything committed
before the subscription is in the backlog (ids are a commit-ordered prefix), everything after reaches the
subscription; what is in both is sent once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg
from prometheus_client import Counter, Gauge

from ingestor.contract import ReconnectConfig, backoff_delays, get_logger
from ingestor.contract.timeouts import wait_for
from ingestor.database.analytics import storable_code
from ingestor.database.connection import CONNECTION_ERRORS, DatabaseUnavailable, connect, redact

log = get_logger(__name__)

CHANNEL = "ingestor_event"
EVENT_TYPES = ("production", "downtime", "quality_alert", "maintenance")
BACKLOG_PAGE = 500

SUBSCRIBERS = Gauge("ingestor_api_event_subscribers", "WebSocket clients subscribed to live events")
DELIVERED = Counter("ingestor_api_events_received_total", "Live events the API's hub received from the database")
DROPPED = Counter("ingestor_api_event_clients_dropped_total",
                  "Live-event clients the hub dropped, by why", ["reason"])
HUB_UP = Gauge("ingestor_api_event_hub_connected", "1 while the API's live-event listener is connected")

_EVENTS_SQL = """
SELECT e.event_id, e.event_type, e.equipment_id, api_event_json(e)::text AS envelope
FROM api_event e
WHERE e.event_id > $1
  AND ($2::text[] IS NULL OR e.event_type = ANY($2::text[]))
  AND ($3::int[] IS NULL OR e.equipment_id = ANY($3::int[]))
ORDER BY e.event_id
LIMIT $4
"""


@dataclass(frozen=True)
class LiveEvent:
    """One event: ``envelope`` is its JSON text exactly as a client gets it."""

    id: int
    type: str
    equipment_id: int | None
    envelope: str


@dataclass(frozen=True)
class EventFilter:
    """Which events a client wants: ``None`` means every type, every machine.  With machines named, events
    about the whole plant (no machine) are left out."""

    types: frozenset[str] | None = None
    equipment: frozenset[int] | None = None

    def matches(self, event: LiveEvent) -> bool:
        if self.types is not None and event.type not in self.types:
            return False
        return self.equipment is None or event.equipment_id in self.equipment

    def arguments(self) -> tuple[list[str] | None, list[int] | None]:
        """The filter as the parameters of the backlog query."""
        return (None if self.types is None else sorted(self.types),
                None if self.equipment is None else sorted(self.equipment))


class SubscriptionClosed(Exception):
    """The hub dropped this subscription: ``kind`` is ``slow`` (the client's queue overflowed), ``gap``
    (events it would need were deleted while the hub was away) or ``shutdown``; ``reason`` is for the client."""

    def __init__(self, kind: Literal["slow", "gap", "shutdown"], reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


class Subscription:
    """One client's queue of live events (bounded: when it is full the client is too slow)."""

    def __init__(self, hub: EventHub, event_filter: EventFilter, size: int) -> None:
        self.hub = hub
        self.filter = event_filter
        self._queue: asyncio.Queue[LiveEvent | None] = asyncio.Queue(size)
        self.closed: SubscriptionClosed | None = None

    def offer(self, event: LiveEvent) -> bool:
        """Queue ``event`` if the client wants it; False when the queue is full (the client is too slow)."""
        if self.closed is not None:
            return False
        if not self.filter.matches(event):
            return True
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            return False
        return True

    @property
    def backlog(self) -> int:
        """Events queued for the client and not sent yet."""
        return self._queue.qsize()

    def close(self, reason: SubscriptionClosed) -> None:
        """End the subscription: the next :meth:`next` raises ``reason``."""
        if self.closed is None:
            self.closed = reason
            while not self._queue.empty():  # free what a slow client will never read
                self._queue.get_nowait()
            self._queue.put_nowait(None)  # wakes a waiting next()

    async def next(self) -> LiveEvent:
        """The next event; raises :class:`SubscriptionClosed` once the hub dropped this subscription."""
        if self.closed is not None:
            raise self.closed
        event = await self._queue.get()
        if event is None or self.closed is not None:
            assert self.closed is not None
            raise self.closed
        return event

    def cancel(self) -> None:
        """The client went away."""
        self.hub.unsubscribe(self)


class EventHub:
    """One LISTEN connection per API process, fanned out to :class:`Subscription` queues."""

    def __init__(self, url: str, *, client_queue: int = 1000, connect_timeout: float = 10.0,
                 keepalive: float = 15.0, retry: ReconnectConfig | None = None) -> None:
        self._url = url
        self.client_queue = client_queue
        self._connect_timeout = connect_timeout
        self._keepalive = keepalive
        self._retry = retry or ReconnectConfig(initial=0.5, max=10.0)
        self._subscribers: set[Subscription] = set()
        self._inbox: asyncio.Queue[tuple[asyncpg.Connection, str | None]] = asyncio.Queue()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.last_id: int | None = None
        self.connected = False
        self.connects = 0
        self.backfilled = 0
        self.last_error: str | None = None

    # --- subscribers ---------------------------------------------------------------------------------------------

    async def subscribe(self, event_filter: EventFilter, timeout: float = 10.0) -> Subscription:
        """A new subscription, receiving every matching event committed from now on.  Waits (at most ``timeout``)
        for the hub's first connection; :class:`DatabaseUnavailable` when it does not come."""
        self.start()
        if not self._ready.is_set():
            try:
                await wait_for(self._ready.wait(), timeout)
            except TimeoutError:
                raise DatabaseUnavailable(f"live events: no database connection ({self.last_error})") from None
        subscription = Subscription(self, event_filter, self.client_queue)
        self._subscribers.add(subscription)
        SUBSCRIBERS.inc()
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        if subscription in self._subscribers:
            self._subscribers.discard(subscription)
            SUBSCRIBERS.dec()

    def _drop(self, subscription: Subscription, reason: SubscriptionClosed, why: str) -> None:
        self.unsubscribe(subscription)
        subscription.close(reason)
        DROPPED.labels(why).inc()

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    # --- lifecycle -----------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="event-hub")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for subscription in list(self._subscribers):
            self._drop(subscription, SubscriptionClosed("shutdown", "the server is shutting down; reconnect with "
                                                                    "since="), "shutdown")

    async def _run(self) -> None:
        delays = backoff_delays(self._retry)
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await connect(self._url, self._connect_timeout)
                while not self._inbox.empty():  # notifications of an earlier connection: the backfill has them
                    self._inbox.get_nowait()
                await conn.add_listener(CHANNEL, self._notified)
                conn.add_termination_listener(self._terminated)
                if self.last_id is None:
                    self.last_id = int(await conn.fetchval("SELECT COALESCE(max(event_id), 0) FROM api_event"))
                else:
                    await self._backfill(conn)
                self.connects += 1
                if self.connects > 1:
                    log.info("live events: listening again", last_event_id=self.last_id)
                self.connected, self.last_error = True, None
                HUB_UP.set(1)
                self._ready.set()
                delays = backoff_delays(self._retry)
                await self._listen(conn)
            except asyncio.CancelledError:
                raise
            except (*CONNECTION_ERRORS, DatabaseUnavailable, asyncpg.PostgresError) as exc:
                first = self.connected or self.last_error is None
                self.connected, self.last_error = False, type(exc).__name__
                HUB_UP.set(0)
                delay = next(delays)
                (log.warning if first else log.debug)(
                    "live events: database connection lost; retrying", url=redact(self._url),
                    error=f"{type(exc).__name__}: {exc}", retry_in_s=round(delay, 2))
                await asyncio.sleep(delay)
            finally:
                if conn is not None and not conn.is_closed():
                    conn.terminate()

    def _notified(self, conn: asyncpg.Connection, pid: int, channel: str, payload: str) -> None:
        self._inbox.put_nowait((conn, payload))

    def _terminated(self, conn: asyncpg.Connection) -> None:
        self._inbox.put_nowait((conn, None))

    async def _listen(self, conn: asyncpg.Connection) -> None:
        while True:
            try:
                source, payload = await wait_for(self._inbox.get(), self._keepalive)
            except TimeoutError:
                await wait_for(conn.fetchval("SELECT 1"), self._connect_timeout)
                continue
            if source is not conn:
                continue
            if payload is None or conn.is_closed():
                raise asyncpg.InterfaceError("the listening connection was closed")
            await self._received(conn, payload)
            await self._pace()

    async def _pace(self) -> None:
        """Give the clients' senders their turn between two events.  A transaction of thousands of events
        arrives as thousands of notifications at once, and a queue that holds them returns without yielding:
        unpaced, the hub would overflow every client's queue before any of them sent a thing.  While a queue is
        more than half full the hub waits for it, at most 10 ms an event, so a client that has stopped reading
        holds the others up by at most that much per event until its queue overflows and it is dropped."""
        await asyncio.sleep(0)
        half = self.client_queue // 2
        for _ in range(10):
            if not any(subscription.backlog > half for subscription in self._subscribers):
                return
            await asyncio.sleep(0.001)

    async def _received(self, conn: asyncpg.Connection, payload: str) -> None:
        try:
            head = json.loads(payload)
            event_id = int(head["id"])
        except (ValueError, KeyError, TypeError):
            log.warning("live events: a notification that is not an event was ignored", payload=payload[:200])
            return
        assert self.last_id is not None
        if event_id <= self.last_id:
            return
        if head.get("truncated"):
            envelope = await conn.fetchval(
                "SELECT api_event_json(e)::text FROM api_event e WHERE e.event_id = $1", event_id)
            if envelope is None:  # deleted meanwhile (retention): nothing to send
                self.last_id = event_id
                return
        else:
            envelope = payload
        self._deliver(LiveEvent(event_id, str(head["type"]), head.get("equipmentId"), envelope))

    async def _backfill(self, conn: asyncpg.Connection) -> None:
        """Deliver what was committed while the hub was not listening."""
        assert self.last_id is not None
        pruned = int(await conn.fetchval("SELECT pruned_through FROM api_event_retention"))
        if pruned > self.last_id:  # the outage outlasted the retention: say so rather than skip silently
            for subscription in list(self._subscribers):
                self._drop(subscription, SubscriptionClosed(
                    "gap", f"events after id {self.last_id} were deleted while the server was away from the database; "
                    "reload, then connect without since="), "gap")
        while True:
            rows = await conn.fetch(_EVENTS_SQL, self.last_id, None, None, BACKLOG_PAGE)
            for row in rows:
                self._deliver(LiveEvent(row["event_id"], row["event_type"], row["equipment_id"], row["envelope"]))
            self.backfilled += len(rows)
            if len(rows) < BACKLOG_PAGE:
                return

    def _deliver(self, event: LiveEvent) -> None:
        self.last_id = event.id
        DELIVERED.inc()
        for subscription in list(self._subscribers):
            if not subscription.offer(event):
                self._drop(subscription, SubscriptionClosed(
                    "slow", f"too slow: more than {self.client_queue} events waiting; reconnect with since=<the "
                    "last id you received>"), "slow")


# --- what the route asks the database ------------------------------------------------------------------------------

async def read_events(db: asyncpg.Pool | asyncpg.Connection, since: int, event_filter: EventFilter,
                      limit: int) -> list[LiveEvent]:
    """The stored events after ``since`` that ``event_filter`` wants, in id order, at most ``limit``."""
    types, equipment = event_filter.arguments()
    return [LiveEvent(r["event_id"], r["event_type"], r["equipment_id"], r["envelope"])
            for r in await db.fetch(_EVENTS_SQL, since, types, equipment, limit)]


async def equipment_ids(db: asyncpg.Pool | asyncpg.Connection, codes: Sequence[str]) -> dict[str, int]:
    """The ids of those of ``codes`` the database has (a code no dimension could hold is not asked for)."""
    return {r["equipment_code"]: r["equipment_id"] for r in await db.fetch(
        "SELECT equipment_code, equipment_id FROM dim_equipment WHERE equipment_code = ANY($1::text[])",
        [code for code in codes if storable_code(code)])}


@dataclass(frozen=True)
class Horizon:
    """What a ``since=`` can ask for: ids up to ``pruned_through`` are deleted, none beyond ``newest`` exists."""

    pruned_through: int
    newest: int

    def problem(self, since: int) -> str | None:
        """Why events after ``since`` cannot be replayed whole, or None.  ``since=0`` is "whatever is kept"."""
        if 0 < since < self.pruned_through:
            return (f"since={since}: events up to {self.pruned_through} have been deleted (retention); reload, "
                    "then connect without since=")
        if since > self.newest:
            return (f"since={since}: no such event in this database (its newest is {self.newest}); connect "
                    "without since=")
        return None


async def horizon(db: asyncpg.Pool | asyncpg.Connection) -> Horizon:
    row = await db.fetchrow(
        "SELECT (SELECT pruned_through FROM api_event_retention) AS pruned_through, "
        "COALESCE(pg_sequence_last_value('api_event_event_id_seq'), 0) AS newest")
    assert row is not None
    return Horizon(int(row["pruned_through"] or 0), int(row["newest"]))


async def replay(db: asyncpg.Pool, subscription: Subscription, since: int | None) -> AsyncIterator[LiveEvent]:
    """The events after ``since`` (stored ones, then live ones), each once, in id order; without ``since``
    only what the subscription receives.  ``subscription`` must have been made before this is called."""
    cursor = since
    if since is not None:
        while True:
            page = await read_events(db, cursor or 0, subscription.filter, BACKLOG_PAGE)
            for event in page:
                yield event
                cursor = event.id
            if len(page) < BACKLOG_PAGE:
                break
    while True:
        event = await subscription.next()
        if cursor is not None and event.id <= cursor:
            continue  # in the backlog already
        cursor = event.id
        yield event


def event_hub(services: dict[str, Any], url: str) -> EventHub:
    """The application's hub (made on first use; ``ApiState.close()`` closes it)."""
    hub = services.get("events")
    if not isinstance(hub, EventHub):
        hub = services["events"] = EventHub(url)
    return hub

