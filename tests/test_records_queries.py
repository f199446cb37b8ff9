"""The seven query patterns of the specification on the demo plant with the example records imported.

The plant is config/demo.yaml's (PLANT-1 in Europe/Berlin, UTC+2 in June; EARLY 06-14, LATE 14-22, NIGHT 22-06
local).  The records are config/records/*.csv, imported with the CLI: three legacy machines, seven work orders,
five scrap records.  The machines' own facts, as the derivation would have written them, are set here:

production (UTC)                                       planned  operating  parts  good  product (ideal cycle)
  P1 PRESS-01 3 June 04:00-12:00  EARLY  20250603      8 h      6 h 50 min 3600   3536  BRACKET-A (6 s)
  P2 PRESS-02 3 June 04:00-12:00  EARLY  20250603      8 h      8 h        4000   3970  BRACKET-B (6.5 s)
  P3 PRESS-01 3 June 12:00-20:00  LATE   20250603      8 h      8 h        4000   3984  BRACKET-A
  P4 PRESS-04 5 June 20:00-04:00  NIGHT  20250605      8 h      5 h 45 min 3000   3000  BRACKET-A
downtime (UTC)
  D1 PRESS-01 MECH_FAIL    3 June 08:10-09:20 (70 min)      D3 PRESS-04 ELEC_FAIL  5 June 20:30-22:45 (2.25 h)
  D2 PRESS-01 SCHED_MAINT  2 June 05:00-07:00 (planned)     D4 PRESS-02 MAT_SHORT  4 June 10:00-10:30 (0.5 h)

The reference time of the period queries is 7 June 2025 00:00 UTC.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from pytest import approx

from ingestor.cli import main
from ingestor.config import load_config
from ingestor.database import queries
from ingestor.database.dimensions import sync_dimensions
from ingestor.database.schema import apply_schema, refresh_view

from .conftest import REPO, Database
from .helpers import refresh

AS_OF = datetime(2025, 6, 7, tzinfo=UTC)
RECORDS = REPO / "config" / "records"
H, M = 3_600_000, 60_000


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


PRODUCTION = [  # (equipment, date_id, shift, product, start, end, planned, operating, parts, good)
    ("PRESS-01", 20250603, "EARLY", "BRACKET-A", "2025-06-03 04:00", "2025-06-03 12:00", 8 * H, 6 * H + 50 * M, 3600, 3536),
    ("PRESS-02", 20250603, "EARLY", "BRACKET-B", "2025-06-03 04:00", "2025-06-03 12:00", 8 * H, 8 * H, 4000, 3970),
    ("PRESS-01", 20250603, "LATE", "BRACKET-A", "2025-06-03 12:00", "2025-06-03 20:00", 8 * H, 8 * H, 4000, 3984),
    ("PRESS-04", 20250605, "NIGHT", "BRACKET-A", "2025-06-05 20:00", "2025-06-06 04:00", 8 * H, 5 * H + 45 * M, 3000, 3000),
]
DOWNTIME = [  # (equipment, reason, start, end)
    ("PRESS-01", "MECH_FAIL", "2025-06-03 08:10", "2025-06-03 09:20"),
    ("PRESS-01", "SCHED_MAINT", "2025-06-02 05:00", "2025-06-02 07:00"),
    ("PRESS-04", "ELEC_FAIL", "2025-06-05 20:30", "2025-06-05 22:45"),
    ("PRESS-02", "MAT_SHORT", "2025-06-04 10:00", "2025-06-04 10:30"),
]


async def _facts(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await apply_schema(conn)
        keys = await sync_dimensions(conn, load_config(REPO / "config" / "demo.yaml").plant)
        await conn.executemany(
            "INSERT INTO fact_production (equipment_id, date_id, shift_id, product_id, start_time, end_time, "
            "planned_production_time, operating_time, planned_parts, total_parts_produced, good_parts) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10)",
            [(keys.equipment[e], d, keys.shifts[("PLANT-1", s)], keys.products[p], ts(a), ts(b), pl, op, n, g)
             for e, d, s, p, a, b, pl, op, n, g in PRODUCTION])
        await conn.executemany(
            "INSERT INTO fact_downtime (equipment_id, reason_id, start_time, end_time, downtime_duration) "
            "VALUES ($1, $2, $3, $4, (extract(epoch FROM $4::timestamptz - $3::timestamptz) * 1000)::bigint)",
            [(keys.equipment[e], keys.reasons[r], ts(a), ts(b)) for e, r, a, b in DOWNTIME])
        # Sensor statistics of the last hour (the predictive pattern looks at the last 24 hours): PRESS-01
        # vibrates at 4.0 mm/s (3.75 and 4.25 in each 5-minute bucket), PRESS-02 at 2.0.
        rows = []
        for i in range(12):
            for offset, spread in ((1, -1), (2, 1)):
                at = -60 + 5 * i + offset
                rows += [(keys.equipment["PRESS-01"], at, 4.0 + spread * 0.25),
                         (keys.equipment["PRESS-02"], at, 2.0)]
        await conn.executemany(
            "INSERT INTO fact_sensor_event (equipment_id, event_ts, parameter, value) VALUES "
            "($1, date_bin('5 minutes', now(), '2000-01-01') + make_interval(mins => $2), 'vibration', $3)", rows)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def plant(database: Database) -> Database:
    asyncio.run(_facts(database.dsn))
    for kind, name in (("equipment", "legacy-equipment.csv"), ("maintenance", "maintenance-export.csv"),
                       ("scrap", "scrap-records.csv")):
        assert main(["import", kind, str(RECORDS / name), "--dsn", database.dsn]) == 0

    async def refresh_views() -> None:
        conn = await asyncpg.connect(database.dsn)
        try:
            await refresh_view(conn, "view_oee_daily")
            await refresh(conn, "sensor_5min_avg")
        finally:
            await conn.close()
    asyncio.run(refresh_views())
    return database


def run(db: Database, name: str, *args: Any) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(db.dsn)
        try:
            return [dict(r) for r in await conn.fetch(queries.load(name), *args)]
        finally:
            await conn.close()
    return asyncio.run(go())


def ids(db: Database, *codes: str) -> list[int]:
    async def go() -> list[int]:
        conn = await asyncpg.connect(db.dsn)
        try:
            rows = await conn.fetch("SELECT equipment_code, equipment_id FROM dim_equipment")
            found = {r[0]: r[1] for r in rows}
            return [found[c] for c in codes]
        finally:
            await conn.close()
    return asyncio.run(go())


def d(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


def test_maintenance_cost_of_the_imported_work_orders(plant: Database) -> None:
    rows = run(plant, "maintenance_cost", AS_OF)
    got = [(r["equipment_code"], r["maintenance_count"], r["total_labor_hours"], r["total_material_cost"],
            r["avg_duration_hours"]) for r in rows]
    assert got == [
        # 4000126: 22:30-01:00 local, 2.5 h, parts 1.280,00 (a thousands dot and a decimal comma)
        ("PRESS-04", 1, d("2.50"), d("1280.00"), d("2.50")),
        # 4000123 (1.5 h, 420) and 4000124 (2 h, 150); 4000100 of 10 February is more than 90 days back
        ("PRESS-01", 2, d("3.50"), d("570.00"), d("1.75")),
        ("PRESS-02", 1, d("1.00"), d("35.50"), d("1.00")),
        ("PRESS-03", 1, d("0.75"), d("0.00"), d("0.75")),
        # the legacy press's calibration has no parts cost: unknown, so last
        ("10004711", 1, d("1.00"), None, d("1.00")),
    ]


def test_scrap_analysis_of_the_imported_scrap(plant: Database) -> None:
    rows = run(plant, "scrap_analysis", AS_OF)
    got = [(r["equipment_code"], r["product_code"], r["scrap_incidents"], r["total_scrap_qty"],
            r["total_produced"], r["scrap_rate_pct"], r["total_scrap_cost"], r["scrap_codes"]) for r in rows]
    assert got == [
        # S-1001 (P1, 40 x 1.25 = 50.00), S-1002 (P1, 36.00), S-1004 (15:30 local = 13:30 UTC: P3, 20.00):
        # 80 of 3600 + 4000 = 1.05 %
        ("PRESS-01", "BRACKET-A", 3, 80, 7600, d("1.05"), d("106.00"), "SC-BURR, SC-CRACK"),
        # S-1003 has no product: P2's BRACKET-B, valued 30 x 1.40 = 42.00; 30 of 4000 = 0.75 %
        ("PRESS-02", "BRACKET-B", 1, 30, 4000, d("0.75"), d("42.00"), "SC-DENT"),
    ]  # S-1005 (20 May) falls in no production record


def test_oee_of_the_last_7_days(plant: Database) -> None:
    rows = run(plant, "oee_7day", AS_OF)
    got = [(r["equipment_code"], r["date_id"], r["availability_pct"], r["performance_pct"], r["quality_pct"],
            r["oee_pct"]) for r in rows]
    assert got == [
        # P1: 410 of 480 min → 85.42 %; 3600 x 6 s = 360 min of 410 → 87.80 %; 3536/3600 → 98.22 %;
        # 0.85417 x 0.87805 x 0.98222 = 73.67 %
        ("PRESS-01", 20250603, d("85.42"), d("87.80"), d("98.22"), d("73.67")),
        # P3: 8 of 8 h; 4000 x 6 s = 6.67 h of 8 → 83.33 %; 3984/4000 → 99.60 %; OEE 83.00 %
        ("PRESS-01", 20250603, d("100.00"), d("83.33"), d("99.60"), d("83.00")),
        # P2: 8 of 8 h; 4000 x 6.5 s = 7.22 h of 8 → 90.28 %; 3970/4000 → 99.25 %; OEE 89.60 %
        ("PRESS-02", 20250603, d("100.00"), d("90.28"), d("99.25"), d("89.60")),
        # P4: 345 of 480 min → 71.88 %; 3000 x 6 s = 300 min of 345 → 86.96 %; all good; OEE 62.50 %
        ("PRESS-04", 20250605, d("71.88"), d("86.96"), d("100.00"), d("62.50")),
    ]


def test_mtbf_and_mttr(plant: Database) -> None:
    rows = run(plant, "mtbf_mttr", AS_OF - timedelta(days=30), AS_OF, ids(plant, "PRESS-01", "PRESS-02", "PRESS-04"))
    got = [(r["equipment_code"], r["failure_count"], round(r["operating_hours"], 2), round(r["mtbf_hours"] or 0, 2),
            round(r["mttr_hours"] or 0, 2)) for r in rows]
    assert got == [
        # PRESS-04: 5.75 h operating, one 2.25 h electrical failure
        ("PRESS-04", 1, d("5.75"), d("5.75"), d("2.25")),
        # PRESS-01: 6.83 + 8 = 14.83 h operating, one 70-minute mechanical failure (scheduled maintenance is none)
        ("PRESS-01", 1, d("14.83"), d("14.83"), d("1.17")),
        # PRESS-02: a material shortage is no failure: MTBF and MTTR unknown (shown as 0 here)
        ("PRESS-02", 0, d("8.00"), d("0"), d("0")),
    ]


def test_downtime_pareto(plant: Database) -> None:
    rows = run(plant, "downtime_pareto", AS_OF - timedelta(days=30), AS_OF, None, None)
    got = [(r["reason_code"], r["occurrence_count"], round(r["total_hours"], 2), round(r["share"], 3),
            round(r["cumulative_share"], 3), r["in_head"]) for r in rows]
    # 2.25 + 1.1667 + 0.5 = 3.9167 h affect OEE (scheduled maintenance does not)
    assert got == [
        ("ELEC_FAIL", 1, d("2.25"), d("0.574"), d("0.574"), True),
        ("MECH_FAIL", 1, d("1.17"), d("0.298"), d("0.872"), True),  # crosses 80 %: in the head
        ("MAT_SHORT", 1, d("0.50"), d("0.128"), d("1.000"), False),
    ]


def test_live_oee_of_the_early_shift(plant: Database) -> None:
    # 05:00 UTC on 3 June is 07:00 in Berlin: the early shift
    rows = run(plant, "live_shift_oee", datetime(2025, 6, 3, 5, 0, tzinfo=UTC), None, None)
    got = [(r["shift_code"], r["equipment_code"], r["availability"], r["performance"], r["quality"], r["oee"])
           for r in rows]
    assert got == [
        ("EARLY", "PRESS-01", approx(410 / 480), approx(360 / 410), approx(3536 / 3600),
         approx(410 / 480 * 360 / 410 * 3536 / 3600)),
        ("EARLY", "PRESS-02", 1.0, approx(4000 * 6.5 / 3600 / 8), approx(3970 / 4000),
         approx(4000 * 6.5 / 3600 / 8 * 3970 / 4000)),
    ]


def test_predictive_maintenance(plant: Database) -> None:
    async def now() -> datetime:
        conn = await asyncpg.connect(plant.dsn)
        try:
            value: datetime = await conn.fetchval("SELECT date_bin('5 minutes', now(), '2000-01-01')")
            return value
        finally:
            await conn.close()
    rows = run(plant, "predictive_maintenance", asyncio.run(now()))
    assert [(r["equipment_code"], r["parameter"], r["current_value"], r["alert_level"]) for r in rows] == [
        ("PRESS-01", "vibration", d("4.00"), "WARNING")]  # 4.0 > 3.5; PRESS-02's 2.0 is normal


def test_work_orders_beside_the_stops_the_daemon_derived(plant: Database) -> None:
    async def go() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(plant.dsn)
        try:
            return [tuple(r) for r in await conn.fetch(
                "SELECT l.work_order_number, l.maintenance_type, r.reason_code, l.cmms_hours, l.stop_hours, "
                "l.overlap_hours FROM maintenance_downtime l LEFT JOIN dim_downtime_reason r USING (reason_id) "
                "ORDER BY l.work_order_number")]
        finally:
            await conn.close()
    assert asyncio.run(go()) == [
        ("4000100", "Corrective", None, d("4.00"), None, None),  # February: no stop recorded then
        # 10:00-11:30 local = 08:00-09:30 UTC, the machine stopped 08:10-09:20: 1.5 h in the CMMS, 1.17 h stopped
        ("4000123", "Corrective", "MECH_FAIL", d("1.50"), d("1.17"), d("1.17")),
        ("4000124", "Preventive", "SCHED_MAINT", d("2.00"), d("2.00"), d("2.00")),  # the planned stop
        ("4000125", "Preventive", None, d("1.00"), None, None),  # PRESS-02 did not stop for it: reported
        ("4000126", "Corrective", "ELEC_FAIL", d("2.50"), d("2.25"), d("2.25")),
        ("4000127", "Calibration", None, d("1.00"), None, None),
        ("4000128", "Predictive", None, d("0.75"), None, None),
    ]
