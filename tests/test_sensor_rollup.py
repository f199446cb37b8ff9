"""The incremental sensor_5min_avg of PostgreSQL and TimescaleDB Apache (migration 0011) against a full recompute.

Random sequences of inserts (through the daemon's commit path and plain SQL), late readings, rolled-back
inserts, refreshes, refreshes killed half way (the connection dropped inside the refresh's transaction) and
restarts (new connections) must leave sensor_5min_rollup exactly equal to the GROUP BY over fact_sensor_event
for the 24-hour horizon, after every refresh.  Values are multiples of 1/4, so sums are exact in any order.
On full TimescaleDB sensor_5min_avg is a continuous aggregate (tests/test_timescaledb_full.py checks it).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestor.contract.reading import Quality, Reading
from ingestor.database.commit import commit_batches
from ingestor.database.copy_format import RowEncoder
from ingestor.database.schema import apply_schema
from ingestor.database.schema.tiers import Tier
from ingestor.database.schema.views import refresh_view
from ingestor.database.watermark import claim_spool
from tests.conftest import Database

EQUIPMENT = {"M1": 1, "M2": 2, "M3": 3}
PARAMETERS = ["temperature", "pressure", "speed"]

FULL_RECOMPUTE = """
SELECT date_bin(INTERVAL '5 minutes', event_ts, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket,
       equipment_id, parameter, sum(value) AS sum_value, count(*) AS sample_count,
       min(value) AS min_value, max(value) AS max_value
  FROM fact_sensor_event
 WHERE quality < 2 AND event_ts >= sensor_5min_horizon(now())
 GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"""
TABLE = """
SELECT bucket, equipment_id, parameter, sum_value, sample_count, min_value, max_value
  FROM sensor_5min_rollup ORDER BY 1, 2, 3"""


@pytest.fixture(scope="module")
def rollup_db(database: Database) -> Database:
    if database.tier is Tier.TIMESCALEDB_FULL:
        pytest.skip("full TimescaleDB keeps sensor_5min_avg as a continuous aggregate "
                    "(tests/test_timescaledb_full.py)")

    async def apply() -> None:
        conn = await asyncpg.connect(database.dsn)
        try:
            await apply_schema(conn)
        finally:
            await conn.close()

    asyncio.run(apply())
    return database


class Writer:
    """The daemon's commit path on its own connection."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.spool = str(uuid.uuid4())
        self.seq = 0
        self.encoder = RowEncoder(EQUIPMENT, {})

    async def start(self) -> None:
        await claim_spool(self.conn, self.spool, "rollup-test")

    async def commit(self, readings: list[Reading]) -> None:
        payload, count, refused = self.encoder.encode(readings)
        assert not refused
        self.seq += 1
        await commit_batches(self.conn, spool_id=self.spool, instance_id="rollup-test", rows=[payload],
                             row_count=count, dead=[], last_seq=self.seq)


reading = st.tuples(st.sampled_from(sorted(EQUIPMENT)), st.sampled_from(PARAMETERS),
                    st.integers(min_value=-400, max_value=400),         # value in quarters
                    st.sampled_from([0, 1, 2]),                          # quality
                    st.integers(min_value=0, max_value=30 * 60 * 60))    # seconds before the base instant
batch = st.lists(reading, min_size=1, max_size=25)
operation = st.one_of(
    st.tuples(st.just("commit"), batch),            # the daemon's COPY
    st.tuples(st.just("late"), batch),              # hours old, some beyond the 24 h horizon
    st.tuples(st.just("sql"), batch),               # a plain INSERT by someone else
    st.tuples(st.just("rollback"), batch),          # an insert rolled back: must leave nothing behind
    st.tuples(st.just("refresh"), st.none()),
    st.tuples(st.just("crash"), st.none()),         # a refresh whose connection dies inside its transaction
    st.tuples(st.just("restart"), st.none()),       # new connections
)


def _readings(items: list[tuple[str, str, int, int, int]], base: datetime, late: bool) -> list[Reading]:
    out = []
    for equipment, parameter, quarters, quality, seconds in items:
        offset = seconds if late else seconds % (3 * 60 * 60)  # recent: the last three hours
        stamp = base - timedelta(seconds=offset)
        out.append(Reading(equipment, parameter, quarters / 4, int(stamp.timestamp() * 1_000_000),
                           quality=Quality(quality)))
    return out


async def _assert_exact(conn: asyncpg.Connection) -> None:
    expected = [tuple(r) for r in await conn.fetch(FULL_RECOMPUTE)]
    actual = [tuple(r) for r in await conn.fetch(TABLE)]
    assert actual == expected
    view = await conn.fetch("SELECT bucket, equipment_id, parameter, avg_value, sample_count "
                            "FROM sensor_5min_avg ORDER BY 1, 2, 3")
    assert [tuple(r) for r in view] == [(b, e, p, s / n, n) for b, e, p, s, n, _, _ in expected]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(operations=st.lists(operation, min_size=1, max_size=12))
def test_the_rollup_equals_a_full_recompute(rollup_db: Database,
                                            operations: list[tuple[str, list[tuple[str, str, int, int, int]] | None]]
                                            ) -> None:
    asyncio.run(_run(rollup_db.dsn, operations))


async def _run(dsn: str, operations: list[tuple[str, list[tuple[str, str, int, int, int]] | None]]) -> None:
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    opened: list[asyncpg.Connection] = []

    async def connect() -> asyncpg.Connection:
        c = await asyncpg.connect(dsn)
        opened.append(c)
        return c

    try:
        conn = await connect()
        writer = Writer(await connect())
        await writer.start()
        for kind, items in operations:
            if kind in ("commit", "late"):
                assert items is not None
                await writer.commit(_readings(items, base, late=kind == "late"))
            elif kind in ("sql", "rollback"):
                assert items is not None
                rows = [(EQUIPMENT[r.equipment], datetime.fromtimestamp(r.timestamp_us / 1e6, UTC), r.parameter,
                         r.value, int(r.quality)) for r in _readings(items, base, late=True)]
                tx = conn.transaction()
                await tx.start()
                await conn.executemany("INSERT INTO fact_sensor_event (equipment_id, event_ts, parameter, value, "
                                       "quality) VALUES ($1, $2, $3, $4, $5)", rows)
                await (tx.rollback() if kind == "rollback" else tx.commit())
            elif kind == "refresh":
                await refresh_view(conn, "sensor_5min_avg")
                await _assert_exact(conn)
            elif kind == "crash":
                victim = await connect()
                await victim.execute("BEGIN")
                await victim.execute("SELECT ingestor_refresh_sensor_5min()")
                victim.terminate()  # the refresh's transaction is rolled back by the server
            else:  # restart
                await conn.close()
                await writer.conn.close()
                conn = await connect()
                writer = Writer(await connect())
                await writer.start()
        await refresh_view(conn, "sensor_5min_avg")
        await _assert_exact(conn)
    finally:
        for c in opened:
            if not c.is_closed():
                await c.close()


async def test_concurrent_refreshes_and_writers_stay_exact(rollup_db: Database) -> None:
    """Two refreshers racing each other while two writers commit: the rollup still equals the recompute."""
    base = datetime.now(UTC).replace(microsecond=0)
    conns = [await asyncpg.connect(rollup_db.dsn) for _ in range(2)]
    writers = [Writer(await asyncpg.connect(rollup_db.dsn)) for _ in range(2)]
    try:
        for w in writers:
            await w.start()

        async def write(w: Writer, n: int) -> None:
            for i in range(40):
                await w.commit([Reading(equipment, parameter, (i * 7 + n) / 4,
                                        int((base - timedelta(seconds=(i * 37 + n) % 7200)).timestamp() * 1e6))
                                for equipment in EQUIPMENT for parameter in PARAMETERS])

        async def refresh(conn: asyncpg.Connection) -> None:
            for _ in range(15):
                await refresh_view(conn, "sensor_5min_avg")

        await asyncio.gather(write(writers[0], 1), write(writers[1], 2), refresh(conns[0]), refresh(conns[1]))
        await refresh_view(conns[0], "sensor_5min_avg")
        await _assert_exact(conns[0])
    finally:
        for c in conns + [w.conn for w in writers]:
            await c.close()


@pytest.fixture
async def conn(rollup_db: Database) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(rollup_db.dsn)
    yield c
    await c.close()


async def test_retention_deletes_do_not_touch_the_rollup(conn: asyncpg.Connection) -> None:
    """Deleting raw rows (what retention does, for rows far older than the horizon) marks nothing dirty and
    changes no rollup row; rows older than the horizon never enter the rollup."""
    await refresh_view(conn, "sensor_5min_avg")
    before = [tuple(r) for r in await conn.fetch(TABLE)]
    old = datetime.now(UTC) - timedelta(days=3)
    await conn.execute("INSERT INTO fact_sensor_event (equipment_id, event_ts, parameter, value) "
                       "VALUES (1, $1, 'temperature', 1)", old)
    assert await conn.fetchval("SELECT count(*) FROM sensor_5min_dirty") == 0
    await conn.execute("DELETE FROM fact_sensor_event WHERE event_ts < now() - INTERVAL '2 days'")
    await refresh_view(conn, "sensor_5min_avg")
    assert [tuple(r) for r in await conn.fetch(TABLE)] == before
    assert await conn.fetchval("SELECT count(*) FROM sensor_5min_rollup WHERE bucket < sensor_5min_horizon(now())") == 0
