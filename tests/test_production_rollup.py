"""The per-shift production rollup (migration 0006): after any inserts, updates, moves, deletes and truncates
of production records it equals a rebuild from the records, and production_sums() over any window, split and
filter sums to what the records of production_ideal_time do (the API's /oee and /production read it)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestor.database.schema import apply_schema

from .conftest import Database

BASE = datetime(2025, 3, 1, tzinfo=UTC)
H = 3_600_000

PLANT = """
INSERT INTO dim_site (site_id, site_code, site_name, timezone) VALUES (1, 'S', 'Site', 'UTC');
INSERT INTO dim_area (area_id, area_code, area_name, site_id) VALUES (1, 'A', 'Area', 1);
INSERT INTO dim_work_center (work_center_id, work_center_code, work_center_name, area_id) VALUES (1, 'W', 'Line', 1);
INSERT INTO dim_equipment (equipment_id, equipment_code, equipment_name, work_center_id, theoretical_rate) VALUES
    (1, 'P1', 'Press 1', 1, 600), (2, 'P2', 'Press 2', 1, NULL), (3, 'P3', 'Press 3', 1, 900);
INSERT INTO dim_product (product_id, product_code, product_name, target_cycle_time) VALUES
    (1, 'A', 'A', 5000), (2, 'B', 'B', NULL);
INSERT INTO dim_shift (shift_id, site_id, shift_code, shift_name, start_time, end_time) VALUES
    (1, 1, 'EARLY', 'Early', '06:00', '14:00'), (2, 1, 'LATE', 'Late', '14:00', '22:00'),
    (3, 1, 'NIGHT', 'Night', '22:00', '06:00');
"""

COLUMNS = ("planned_production_time", "operating_time", "theoretical_time", "total_parts_produced",
           "good_parts", "scrap_parts")
SUMS = ", ".join(f"sum({c}) AS {c}" for c in COLUMNS) + ", bool_and(ideal_known) AS ideal_known, count(*) > 0 AS any"


@pytest.fixture
async def conn(database: Database) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database.dsn)
    await apply_schema(connection)
    if not await connection.fetchval("SELECT count(*) FROM dim_site WHERE site_code = 'S'"):
        await connection.execute(PLANT)
    try:
        yield connection
    finally:
        await connection.execute("TRUNCATE fact_production CASCADE")
        await connection.close()


def shift_of(start: datetime) -> tuple[int, int]:
    """(date_id, shift_id) of a record starting at ``start`` (UTC, the site's zone)."""
    production = start - timedelta(hours=6)
    hour = start.hour
    shift = 1 if 6 <= hour < 14 else 2 if 14 <= hour < 22 else 3
    return int(production.strftime("%Y%m%d")), shift


QUARTERS = 2 * 24 * 4  # two days of quarter hours: six shifts
record = st.tuples(st.integers(1, 3), st.integers(0, QUARTERS - 1), st.sampled_from([1, 2, None]),
                   st.integers(0, 500), st.integers(0, 100))
operation = st.one_of(
    st.tuples(st.just("insert"), record),
    st.tuples(st.just("run"), record, st.integers(2, 40)),                     # consecutive records of a machine
    st.tuples(st.just("update"), st.integers(0, 1000), st.integers(0, 300)),    # more parts, new scrap
    st.tuples(st.just("move"), st.integers(0, 1000), record),                   # another machine, time, product
    st.tuples(st.just("delete"), st.integers(0, 1000)),
)


async def insert(conn: asyncpg.Connection, rec: tuple[int, int, int | None, int, int]) -> None:
    equipment, quarter, product, parts, scrap_share = rec
    start = BASE + timedelta(minutes=15 * quarter)
    date_id, shift = shift_of(start)
    good = parts - parts * scrap_share // 100
    await conn.execute(
        "INSERT INTO fact_production (date_id, shift_id, equipment_id, product_id, start_time, end_time, "
        "planned_production_time, operating_time, planned_parts, total_parts_produced, good_parts, scrap_parts) "
        "VALUES ($1, $2, $3, $4, $5, $6, 900000, $7, 0, $8, $9, $10)",
        date_id, shift, equipment, product, start, start + timedelta(minutes=15), 900000 * (parts % 7) // 7,
        parts, good, parts - good)


async def apply(conn: asyncpg.Connection, op: tuple[Any, ...]) -> None:
    ids = [r["production_id"] for r in await conn.fetch("SELECT production_id FROM fact_production ORDER BY 1")]
    if op[0] == "insert":
        await insert(conn, op[1])
    elif op[0] == "run":
        equipment, quarter, product, parts, scrap_share = op[1]
        for n in range(op[2]):
            await insert(conn, (equipment, (quarter + n) % QUARTERS, product, parts + n, scrap_share))
    elif not ids:
        return
    elif op[0] == "update":
        await conn.execute("UPDATE fact_production SET total_parts_produced = total_parts_produced + $2, "
                           "good_parts = good_parts + $2, scrap_parts = NULL WHERE production_id = $1",
                           ids[op[1] % len(ids)], op[2])
    elif op[0] == "move":
        equipment, quarter, product, _, _ = op[2]
        start = BASE + timedelta(minutes=15 * quarter)
        date_id, shift = shift_of(start)
        await conn.execute("UPDATE fact_production SET equipment_id = $2, product_id = $3, start_time = $4::timestamptz, "
                           "end_time = $4::timestamptz + interval '15 minutes', date_id = $5, shift_id = $6 "
                           "WHERE production_id = $1", ids[op[1] % len(ids)], equipment, product, start, date_id,
                           shift)
    else:
        await conn.execute("DELETE FROM fact_production WHERE production_id = $1", ids[op[1] % len(ids)])


async def rollup(conn: asyncpg.Connection) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in await conn.fetch("SELECT * FROM agg_production_shift ORDER BY 1, 2, 3, 4 NULLS FIRST")]


window = st.tuples(st.integers(-8, QUARTERS + 8), st.integers(0, QUARTERS + 16), st.integers(0, 100))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(ops=st.lists(operation, min_size=1, max_size=30), windows=st.lists(window, min_size=1, max_size=6),
       equipment=st.sampled_from([None, [1], [2, 3]]), shifts=st.sampled_from([None, [1], [2, 3]]))
async def test_the_rollup_follows_every_change_and_sums_like_the_records(
        conn: asyncpg.Connection, ops: list[tuple[Any, ...]], windows: list[tuple[int, int, int]],
        equipment: list[int] | None, shifts: list[int] | None) -> None:
    await conn.execute("TRUNCATE fact_production CASCADE")
    assert await rollup(conn) == []
    for op in ops:
        await apply(conn, op)
    kept = await rollup(conn)
    await conn.fetchval("SELECT rebuild_agg_production_shift()")
    assert kept == await rollup(conn), "the trigger-kept rollup differs from a rebuild from the records"

    for begin, length, split_share in windows:
        # windows on and off the quarter hours, splits anywhere inside
        lo = BASE + timedelta(minutes=15 * begin - 7)
        hi = lo + timedelta(minutes=15 * length + 11)
        split = lo + (hi - lo) * split_share / 100
        group = "equipment_id, shift_id, date_id, in_second"
        from_sums = await conn.fetch(
            f"SELECT {group}, {SUMS} FROM production_sums($1, $2, $3, $4, $5) GROUP BY {group} ORDER BY {group}",
            lo, split, hi, equipment, shifts)
        from_records = await conn.fetch(
            f"SELECT {group}, {SUMS} FROM (SELECT *, start_time >= $2 AS in_second FROM production_ideal_time "
            f"WHERE start_time >= $1 AND start_time < $3 AND ($4::integer[] IS NULL OR equipment_id = ANY ($4)) "
            f"AND ($5::integer[] IS NULL OR shift_id = ANY ($5))) r GROUP BY {group} ORDER BY {group}",
            lo, split, hi, equipment, shifts)
        assert [tuple(r) for r in from_sums] == [tuple(r) for r in from_records], (lo, split, hi)


async def test_a_truncate_empties_the_rollup_and_the_ideal_time_follows_the_dimensions(
        conn: asyncpg.Connection) -> None:
    await insert(conn, (1, 0, None, 600, 0))      # P1: 600 parts/h, no product: 6 s a part
    await insert(conn, (1, 1, 1, 100, 0))         # product A: 5 s a part
    sums = "SELECT sum(theoretical_time) FROM production_sums($1::timestamptz, $1::timestamptz, $1::timestamptz + interval '1 day', NULL, NULL)"
    assert await conn.fetchval(sums, BASE) == 600 * 6000 + 100 * 5000
    # a corrected rate applies at once, to the rollup as to the records
    await conn.execute("UPDATE dim_equipment SET theoretical_rate = 1200 WHERE equipment_id = 1")
    try:
        assert await conn.fetchval(sums, BASE) == 600 * 3000 + 100 * 5000
    finally:
        await conn.execute("UPDATE dim_equipment SET theoretical_rate = 600 WHERE equipment_id = 1")
    await conn.execute("TRUNCATE fact_production CASCADE")
    assert await rollup(conn) == []
