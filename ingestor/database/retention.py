"""Retention: readings older than ``raw`` move from ``fact_sensor_event`` to ``fact_sensor_event_archive``, and
archived readings older than ``archive`` are deleted, with the cheapest mechanism each tier has.

* **TimescaleDB** (both editions): whole chunks.  For each chunk of ``fact_sensor_event`` that ends before the
  cutoff, oldest first, one transaction locks the chunk against writers (``SHARE ROW EXCLUSIVE``: readers go
  on), copies its rows into the archive reading *through the hypertable* over the chunk's time range, in
  :data:`CHUNK_SLICES` statements (so a compressed chunk is decompressed on the way, on the full edition), and
  drops exactly that chunk with
  ``drop_chunks(older_than => end, newer_than => start)``.  A chunk that still holds readings newer than the
  cutoff stays until it is wholly older: on TimescaleDB a reading is kept up to one chunk interval (1 day)
  longer than ``raw``.  A late reading for the chunk being archived (a months-old backlog) waits for that
  transaction.
* **Plain PostgreSQL**: batches of ``batch_rows`` rows, one short transaction each: ``DELETE … WHERE ctid =
  ANY(…LIMIT n) RETURNING`` feeding an ``INSERT INTO …_archive`` in the same statement.  The old readings are
  walked in time slices (found through the BRIN index on ``event_ts``) whose width adapts so that a slice holds
  about one batch, so a batch never rescans the dead rows of earlier ones.  A batch takes only row locks, which
  COPY never waits for.
* **The archive** is an ordinary table on every tier: its old rows go in the same kind of batches (delete only).

Every batch or chunk is one transaction that moves its rows and deletes them together, so a run that dies at
any instant leaves each reading either in the hot table or in the archive, never in both and never lost.
The run's session has ``lock_timeout`` and ``statement_timeout`` set (and put back after): a run that would wait on a
lock longer than ``lock_timeout`` stops (the error says so) and the next run goes on where it left.

Only one daemon runs retention on a database at a time: :func:`run_retention` first takes the session advisory
lock :data:`RETENTION_LOCK_KEY` with ``pg_try_advisory_lock`` and returns a report with ``ran=False`` when
another session holds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import asyncpg

from ingestor.database.config import RetentionConfig
from ingestor.database.connection import CONNECTION_ERRORS
from ingestor.database.schema import Tier, detect_tier

RETENTION_LOCK_KEY = 0x5245_5445_4E54_494F  # "RETENTIO": pg_try_advisory_lock key of the retention job
"""The session advisory lock one retention run holds; any tool that moves or deletes sensor data in bulk can
take it too (``SELECT pg_advisory_lock(5928237141146749263)``) to keep the daemons' retention away meanwhile."""

CHUNK_SLICES = 24
"""A chunk is copied to the archive in this many statements (hours of a 1-day chunk), one transaction."""

HOT = "fact_sensor_event"
ARCHIVE = "fact_sensor_event_archive"
COLUMNS = "event_id, equipment_id, event_ts, parameter, value, unit_id, quality"

Hook = Callable[[str], Awaitable[None]]
"""Called inside each batch's or chunk's transaction, after its rows moved and before the commit, with what
it did ("archive batch", "archive chunk", "delete batch").  For tests that show ingest is not blocked."""


@dataclass
class RetentionReport:
    """What one run did."""

    ran: bool = True
    """False: another session held the retention lock, nothing was touched."""
    tier: Tier | None = None
    archived: int = 0
    """Rows moved from fact_sensor_event to the archive."""
    deleted: int = 0
    """Rows deleted from the archive."""
    chunks_dropped: int = 0
    batches: int = 0
    seconds: float = 0.0
    raw_cutoff: datetime | None = None
    archive_cutoff: datetime | None = None
    errors: list[str] = field(default_factory=list)


async def run_retention(conn: asyncpg.Connection, config: RetentionConfig, *, now: datetime | None = None,
                        inside: Hook | None = None,
                        on_progress: Callable[[RetentionReport], None] | None = None) -> RetentionReport:
    """One retention run on ``conn`` (not inside a transaction): archive, then delete old archive rows.

    ``now`` is the reference instant (default: the database's ``now()``).  ``on_progress`` is called after
    every committed batch or chunk with the report so far (the daemon moves its counters with it).
    """
    report = RetentionReport()
    if not config.enabled:
        return report
    started = time.monotonic()
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", RETENTION_LOCK_KEY):
        report.ran = False
        return report
    previous = await conn.fetchrow(
        "SELECT current_setting('lock_timeout') AS lock, current_setting('statement_timeout') AS statement")
    try:
        await _limits(conn, config)
        if now is None:
            now = await conn.fetchval("SELECT now()")
        assert now is not None and config.raw is not None
        report.tier = await _hot_tier(conn)
        report.raw_cutoff = now - timedelta(seconds=config.raw)
        if report.tier is Tier.POSTGRES:
            await _move_batches(conn, config, report, report.raw_cutoff, inside, on_progress)
        else:
            await _move_chunks(conn, config, report, report.raw_cutoff, inside, on_progress)
        if config.archive is not None:
            report.archive_cutoff = now - timedelta(seconds=config.archive)
            await _batches(conn, config, report, ARCHIVE, report.archive_cutoff, inside, on_progress, move=False)
    except asyncio.CancelledError:
        # Stopped mid-statement (the daemon shuts down): the connection is in an unknown state, so close it;
        # the server rolls the open batch back and releases the lock with the session.
        conn.terminate()
        raise
    finally:
        report.seconds = time.monotonic() - started
        if not conn.is_closed():
            with contextlib.suppress(*CONNECTION_ERRORS):  # a lost session has released the lock already
                    await conn.execute(
                    "SELECT set_config('lock_timeout', $1, false), set_config('statement_timeout', $2, false), "
                    "pg_advisory_unlock($3)", previous["lock"], previous["statement"], RETENTION_LOCK_KEY)
    return report


async def _hot_tier(conn: asyncpg.Connection) -> Tier:
    """The tier as far as fact_sensor_event goes: a database with TimescaleDB whose table is not a hypertable
    (a schema first built without it) is handled as plain PostgreSQL."""
    tier = await detect_tier(conn)
    if tier is Tier.POSTGRES:
        return tier
    is_hypertable = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM timescaledb_information.hypertables "
        "WHERE hypertable_name = $1 AND hypertable_schema = current_schema())", HOT)
    return tier if is_hypertable else Tier.POSTGRES


async def _limits(conn: asyncpg.Connection, config: RetentionConfig) -> None:
    """Every statement of the run (the searches for old rows too) waits at most ``lock_timeout`` for a lock."""
    await conn.execute("SELECT set_config('lock_timeout', $1, false), set_config('statement_timeout', $2, false)",
                       f"{int(config.lock_timeout * 1000)}ms", f"{int(config.statement_timeout * 1000)}ms")


async def _move_chunks(conn: asyncpg.Connection, config: RetentionConfig, report: RetentionReport,
                       cutoff: datetime, inside: Hook | None,
                       on_progress: Callable[[RetentionReport], None] | None) -> None:
    chunks = await conn.fetch(
        "SELECT chunk_schema, chunk_name, range_start, range_end FROM timescaledb_information.chunks "
        "WHERE hypertable_name = $1 AND hypertable_schema = current_schema() AND range_end <= $2 "
        "ORDER BY range_start", HOT, cutoff)
    for chunk in chunks:
        qualified = f'{_ident(chunk["chunk_schema"])}.{_ident(chunk["chunk_name"])}'
        async with conn.transaction():
            # Writers wait (a late reading for a months-old day is rare); readers of the chunk go on.  The
            # lock is what makes "copied" and "dropped" the same set of rows.
            await conn.execute(f"LOCK TABLE {qualified} IN SHARE ROW EXCLUSIVE MODE")
            # In CHUNK_SLICES statements, so that statement_timeout bounds a slice, not a whole day.
            moved = 0
            start, end = chunk["range_start"], chunk["range_end"]
            step = (end - start) / CHUNK_SLICES
            for i in range(CHUNK_SLICES):
                low, high = start + step * i, (end if i == CHUNK_SLICES - 1 else start + step * (i + 1))
                status = await conn.execute(
                    f"INSERT INTO {ARCHIVE} ({COLUMNS}) SELECT {COLUMNS} FROM {HOT} "
                    "WHERE event_ts >= $1 AND event_ts < $2", low, high)
                moved += int(status.rsplit(" ", 1)[1])
            dropped = await conn.fetch(
                "SELECT drop_chunks($1::regclass, older_than => $2::timestamptz, newer_than => $3::timestamptz)",
                HOT, chunk["range_end"], chunk["range_start"])
            if inside is not None:
                await inside("archive chunk")
        report.archived += moved
        report.chunks_dropped += len(dropped)
        report.batches += 1
        if on_progress is not None:
            on_progress(report)


async def _move_batches(conn: asyncpg.Connection, config: RetentionConfig, report: RetentionReport,
                        cutoff: datetime, inside: Hook | None,
                        on_progress: Callable[[RetentionReport], None] | None) -> None:
    await _batches(conn, config, report, HOT, cutoff, inside, on_progress, move=True)


async def _batches(conn: asyncpg.Connection, config: RetentionConfig, report: RetentionReport, table: str,
                   cutoff: datetime, inside: Hook | None,
                   on_progress: Callable[[RetentionReport], None] | None, *, move: bool) -> None:
    """Move (``move``) or delete the rows of ``table`` older than ``cutoff`` in batches of ``batch_rows``,
    walking time slices from the oldest reading up to the cutoff."""
    limit = config.batch_rows
    low: datetime | None = await conn.fetchval(f"SELECT min(event_ts) FROM {table} WHERE event_ts < $1", cutoff)
    if low is None:
        return
    width = timedelta(minutes=10)
    while low < cutoff:
        high = min(low + width, cutoff)
        in_slice = 0
        while True:
            async with conn.transaction():
                picked = (f"ctid = ANY(ARRAY(SELECT ctid FROM {table} WHERE event_ts >= $1 AND event_ts < $2 "
                          "LIMIT $3))")
                if move:
                    status = await conn.execute(
                        f"WITH moved AS (DELETE FROM {table} WHERE {picked} RETURNING {COLUMNS}) "
                        f"INSERT INTO {ARCHIVE} ({COLUMNS}) SELECT {COLUMNS} FROM moved", low, high, limit)
                else:
                    status = await conn.execute(f"DELETE FROM {table} WHERE {picked}", low, high, limit)
                count = int(status.rsplit(" ", 1)[1])
                if inside is not None and count:
                    await inside("archive batch" if move else "delete batch")
            if count:
                if move:
                    report.archived += count
                else:
                    report.deleted += count
                report.batches += 1
                if on_progress is not None:
                    on_progress(report)
            in_slice += count
            if count < limit:
                break
        # Aim the next slice at about one batch: wider after a thin slice, narrower after a full one.
        if in_slice < limit // 2:
            width *= 4 if in_slice < limit // 8 else 2
        elif in_slice > limit:
            width = max(timedelta(seconds=1), width * limit / in_slice)
        low = high
        if in_slice == 0 and width > timedelta(days=1):
            # An empty stretch: jump to the next reading that is still old instead of walking it.
            nxt: datetime | None = await conn.fetchval(
                f"SELECT min(event_ts) FROM {table} WHERE event_ts >= $1 AND event_ts < $2", low, cutoff)
            if nxt is None:
                return
            low = nxt
            width = timedelta(minutes=10)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
