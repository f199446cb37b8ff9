"""The shipped query patterns against a small hand-made plant whose answers were worked out by hand.

The plant: site PLANT1 in Europe/Berlin (UTC+2 in June), shifts EARLY 06-14, LATE 14-22, NIGHT 22-06 local.
Presses PRESS1 (600 parts/h) and PRESS2 (1200 parts/h), CNC1 (no rate); product BRACKET with an ideal cycle
of 5 s and a standard cost of 2.50.  Facts are set around 2025-06-09; the reference time of the period
queries is 2025-06-10 00:00 UTC.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import asyncpg
import pytest
from pytest import approx

from ingestor.database import queries
from ingestor.database.schema import apply_schema, refresh_view

from .conftest import Database
from .helpers import refresh, run_on

AS_OF = datetime(2025, 6, 10, tzinfo=UTC)
H = 3_600_000  # one hour in milliseconds

PLANT = """
INSERT INTO dim_site (site_id, site_code, site_name, timezone) VALUES (1, 'PLANT1', 'Plant 1', 'Europe/Berlin');
INSERT INTO dim_area (area_id, area_code, area_name, site_id) VALUES (1, 'PRESSHOP', 'Press shop', 1);
INSERT INTO dim_work_center (work_center_id, work_center_code, work_center_name, area_id)
    VALUES (1, 'WC1', 'Line 1', 1);
INSERT INTO dim_equipment (equipment_id, equipment_code, equipment_name, work_center_id, theoretical_rate) VALUES
    (1, 'PRESS1', 'Press 1', 1, 600), (2, 'PRESS2', 'Press 2', 1, 1200), (3, 'CNC1', 'CNC 1', 1, NULL);
INSERT INTO dim_product (product_id, product_code, product_name, standard_cost, target_cycle_time)
    VALUES (1, 'BRACKET', 'Bracket', 2.50, 5000);
INSERT INTO dim_shift (shift_id, site_id, shift_code, shift_name, start_time, end_time) VALUES
    (1, 1, 'EARLY', 'Early', '06:00', '14:00'), (2, 1, 'LATE', 'Late', '14:00', '22:00'),
    (3, 1, 'NIGHT', 'Night', '22:00', '06:00');
INSERT INTO dim_downtime_reason (reason_id, reason_code, reason_description, reason_category, is_planned,
                                 affects_oee, is_failure) VALUES
    (1, 'SCHED_MAINT', 'Scheduled maintenance', 'Scheduled Downtime', true, false, false),
    (2, 'TOOL_CHANGE', 'Tool change', 'Scheduled Downtime', true, true, false),
    (3, 'MECH_FAIL', 'Mechanical failure', 'Unscheduled Downtime', false, true, true),
    (4, 'ELEC_FAIL', 'Electrical failure', 'Unscheduled Downtime', false, true, true),
    (5, 'MAT_SHORT', 'Material shortage', 'External Downtime', false, true, false),
    (6, 'NO_OPER', 'No operator', 'External Downtime', false, true, false);
"""

# (id, equipment, date_id, shift, product, start UTC, end UTC, planned ms, operating ms, parts, good)
PRODUCTION = [
    (101, 1, 20250609, 1, 1, "2025-06-09 04:00", "2025-06-09 12:00", 8 * H, 6 * H, 3456, 3240),
    (102, 2, 20250609, 1, None, "2025-06-09 04:00", "2025-06-09 12:00", 8 * H, 8 * H, 4800, 4800),
    (103, 3, 20250609, 1, None, "2025-06-09 04:00", "2025-06-09 12:00", 8 * H, 4 * H, 100, 90),
    (104, 1, 20250609, 2, 1, "2025-06-09 12:00", "2025-06-09 16:00", 4 * H, 4 * H, 2400, 2400),
    (105, 1, 20250609, 2, 1, "2025-06-09 16:00", "2025-06-09 20:00", 4 * H, 2 * H, 1200, 1080),
    (106, 2, 20250609, 3, None, "2025-06-09 20:00", "2025-06-10 04:00", 8 * H, 4 * H, 2400, 2400),
    (107, 1, 20250602, 1, 1, "2025-06-02 04:00", "2025-06-02 12:00", 8 * H, 8 * H, 5760, 5760),  # > 7 days
    (108, 1, 20250610, 1, 1, "2025-06-10 04:00", "2025-06-10 12:00", 8 * H, 8 * H, 1, 1),  # after as-of
]

# (id, equipment, reason, start UTC, end UTC)
DOWNTIME = [
    (201, 1, 3, "2025-06-09 08:00", "2025-06-09 08:30"),  # PRESS1 mechanical failure, 0.5 h
    (202, 1, 4, "2025-06-05 10:00", "2025-06-05 11:30"),  # PRESS1 electrical failure, 1.5 h
    (203, 1, 2, "2025-06-09 13:00", "2025-06-09 13:30"),  # PRESS1 tool change, 0.5 h
    (204, 3, 3, "2025-06-09 07:00", "2025-06-09 08:00"),  # CNC1 mechanical failure, 1 h
    (205, 2, 5, "2025-06-08 09:00", "2025-06-08 09:45"),  # PRESS2 material shortage, 0.75 h
    (206, 2, 5, "2025-06-09 09:00", "2025-06-09 09:30"),  # PRESS2 material shortage, 0.5 h
    (207, 3, 6, "2025-06-07 05:00", "2025-06-07 05:30"),  # CNC1 no operator, 0.5 h
    (208, 2, 1, "2025-06-06 04:00", "2025-06-06 08:00"),  # PRESS2 scheduled maintenance (not OEE), 4 h
    (209, 1, 3, "2025-05-01 10:00", "2025-05-01 12:00"),  # PRESS1 failure before the 30-day window
]

# (id, equipment, type, start UTC, end UTC, labor hours, material cost)
MAINTENANCE = [
    (301, 1, "Preventive", "2025-06-01 06:00", "2025-06-01 08:00", "2.00", "150.00"),
    (302, 1, "Corrective", "2025-06-05 10:00", "2025-06-05 13:00", "4.50", "420.00"),
    (303, 2, "Calibration", "2025-05-20 08:00", "2025-05-20 09:00", "1.00", None),
    (304, 3, "Corrective", "2025-06-09 07:00", "2025-06-09 08:30", "1.50", "80.00"),
    (305, 1, "Preventive", "2025-02-01 06:00", "2025-02-01 16:00", "9.00", "999.00"),  # > 90 days
]

# (id, production, product, equipment, code, qty, cost)
SCRAP = [
    (401, 101, None, 1, "SC-BURR", 100, "50.00"),  # product taken from the production record
    (402, 101, 1, 1, "SC-CRACK", 56, None),  # no cost: 56 x 2.50
    (403, 102, None, 2, "SC-DENT", 48, None),  # no product anywhere, no cost
    (404, 107, 1, 1, "SC-BURR", 500, "900.00"),  # production older than 7 days
]


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


async def populate(conn: asyncpg.Connection) -> None:
    await apply_schema(conn)
    await conn.execute(PLANT)
    await conn.executemany(
        "INSERT INTO fact_production (production_id, equipment_id, date_id, shift_id, product_id, start_time, "
        "end_time, planned_production_time, operating_time, planned_parts, total_parts_produced, good_parts) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11)",
        [(*row[:5], ts(row[5]), ts(row[6]), *row[7:]) for row in PRODUCTION])
    await conn.executemany(
        "INSERT INTO fact_downtime (downtime_id, equipment_id, reason_id, start_time, end_time, "
        "downtime_duration) VALUES ($1, $2, $3, $4, $5, (extract(epoch FROM $5::timestamptz - $4::timestamptz) * 1000)::bigint)",
        [(i, e, r, ts(s), ts(t)) for i, e, r, s, t in DOWNTIME])
    await conn.executemany(
        "INSERT INTO fact_maintenance (maintenance_id, equipment_id, work_order_number, maintenance_type, "
        "start_time, end_time, labor_hours, material_cost) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        [(i, e, f"WO-{i}", kind, ts(s), ts(t), Decimal(labor), None if cost is None else Decimal(cost))
         for i, e, kind, s, t, labor, cost in MAINTENANCE])
    await conn.executemany(
        "INSERT INTO fact_scrap (scrap_id, production_id, product_id, equipment_id, scrap_code, scrap_qty, "
        "scrap_cost) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        [(*row[:6], None if row[6] is None else Decimal(row[6])) for row in SCRAP])
    await sensor_readings(conn)
    await refresh_view(conn, "view_oee_daily")
    await refresh(conn, "sensor_5min_avg")


async def sensor_readings(conn: asyncpg.Connection) -> None:
    """The last hour before the current 5-minute boundary R, two readings per 5-minute bucket:
    PRESS1 vibration steady at 4.0 (3.75 and 4.25), PRESS1 temperature rising 0.04 per bucket from 80.0,
    PRESS2 vibration steady at 5.0, PRESS2 temperature 60 with one bad-quality spike of 1000, CNC1 current 10,
    and one PRESS1 vibration reading of 100 thirty hours ago (outside every window)."""
    rows: list[tuple[Any, ...]] = []
    for i in range(12):  # bucket i starts at R - 60 min + 5 i min
        for offset, spread in ((1, -1), (2, 1)):
            at = -60 + 5 * i + offset  # minutes after R
            rows += [(1, at, "vibration", 4.0 + spread * 0.25, 0),
                     (1, at, "temperature", 80.0 + 0.04 * i + spread * 0.125, 0),
                     (2, at, "vibration", 5.0 + spread * 0.25, 0),
                     (2, at, "temperature", 60.0, 0),
                     (3, at, "current", 10.0, 0)]
    rows += [(2, -30, "temperature", 1000.0, 2), (1, -1800, "vibration", 100.0, 0)]
    await conn.executemany(
        "INSERT INTO fact_sensor_event (equipment_id, event_ts, parameter, value, quality) "
        "VALUES ($1, date_bin('5 minutes', now(), '2000-01-01') + make_interval(mins => $2), $3, $4, $5)",
        rows)


@pytest.fixture(scope="module")
def plant(database: Database) -> Database:
    run_on(database.dsn, populate)
    return database


@pytest.fixture
async def conn(plant: Database) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(plant.dsn)
    try:
        yield c
    finally:
        await c.close()


def d(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


async def run(conn: asyncpg.Connection, name: str, *args: Any) -> list[dict[str, Any]]:
    return [dict(row) for row in await conn.fetch(queries.load(name), *args)]


def pct(share: Decimal | None) -> Decimal | None:
    """A share 0..1 as a percentage with one decimal, rounded half up like SQL's round()."""
    return None if share is None else (share * 100).quantize(Decimal("0.1"), ROUND_HALF_UP)


def test_the_shipped_queries() -> None:
    assert queries.names() == ["api_oee", "api_plant", "api_production", "api_scope", "downtime_pareto",
                               "live_shift_oee", "maintenance_cost", "mtbf_mttr", "oee_7day",
                               "predictive_maintenance", "scrap_analysis"]
    for name in queries.names():  # every file documents its parameters in its header
        header = queries.load(name).splitlines()[:12]
        assert any(line.startswith("--   $1  ") for line in header), name
    with pytest.raises(KeyError, match="known: api_oee"):
        queries.load("nope")


async def test_oee_of_the_last_7_days(conn: asyncpg.Connection) -> None:
    rows = await run(conn, "oee_7day", AS_OF)
    got = [(r["equipment_code"], r["date_id"], r["shift_id"], r["availability_pct"], r["performance_pct"],
            r["quality_pct"], r["oee_pct"]) for r in rows]
    assert got == [
        # CNC1 ran 4 h of 8 h planned → 50 %; no ideal cycle time anywhere → performance and OEE unknown;
        # 90 of 100 parts good.
        ("CNC1", 20250609, 1, d("50.00"), None, d("90.00"), None),
        # PRESS1 early: 6 h of 8 h → 75 %; 3456 brackets x 5 s = 4.8 h of 6 h → 80 %; 3240/3456 → 93.75 %;
        # 0.75 x 0.8 x 0.9375 = 56.25 %.
        ("PRESS1", 20250609, 1, d("75.00"), d("80.00"), d("93.75"), d("56.25")),
        # PRESS1 late, two records: 6 h of 8 h → 75 %; 3600 x 5 s = 5 h of 6 h → 83.33 %; 3480/3600 → 96.67 %;
        # 0.75 x 0.8333 x 0.9667 = 60.42 %.
        ("PRESS1", 20250609, 2, d("75.00"), d("83.33"), d("96.67"), d("60.42")),
        # PRESS2 has no product: ideal cycle from 1200 parts/h = 3 s.  Early: 8 of 8 h → 100 %;
        # 4800 x 3 s = 4 h of 8 h → 50 %; all good → OEE 50 %.
        ("PRESS2", 20250609, 1, d("100.00"), d("50.00"), d("100.00"), d("50.00")),
        # PRESS2 night (22:00-06:00, started on the 9th): 4 of 8 h → 50 %; 2400 x 3 s = 2 h of 4 h → 50 %;
        # OEE 25 %.
        ("PRESS2", 20250609, 3, d("50.00"), d("50.00"), d("100.00"), d("25.00")),
    ]  # production 107 (2 June) is before the window, 108 (10 June) after it


async def test_mtbf_and_mttr_of_the_last_30_days(conn: asyncpg.Connection) -> None:
    rows = await run(conn, "mtbf_mttr", AS_OF - timedelta(days=30), AS_OF, None)
    got = [(r["equipment_code"], r["failure_count"], r["operating_hours"], r["total_downtime_hours"],
            r["mtbf_hours"], r["mttr_hours"]) for r in rows]
    assert got == [
        # CNC1: 4 h operating, one 1 h failure → MTBF 4 h, MTTR 1 h.
        ("CNC1", 1, d("4.00"), d("1.00"), d("4.00"), d("1.00")),
        # PRESS1: 6 + 4 + 2 + 8 = 20 h operating (2 June is inside 30 days), failures of 0.5 h and 1.5 h
        # (the tool change is no failure, the 1 May failure is outside) → MTBF 10 h, MTTR 1 h.  The
        # specification's formula would have said (9 June 08:30 - 5 June 10:00) / 2 = 47.25 h.
        ("PRESS1", 2, d("20.00"), d("2.00"), d("10.00"), d("1.00")),
        # PRESS2 never failed: it is listed, with MTBF and MTTR unknown rather than 0.
        ("PRESS2", 0, d("12.00"), d("0.00"), None, None),
    ]
    # Only the equipment asked for (CNC1 is 3, PRESS1 is 1), in the same order.
    rows = await run(conn, "mtbf_mttr", AS_OF - timedelta(days=30), AS_OF, [1, 3])
    assert [r["equipment_code"] for r in rows] == ["CNC1", "PRESS1"]


async def test_maintenance_cost_of_the_last_90_days(conn: asyncpg.Connection) -> None:
    rows = await run(conn, "maintenance_cost", AS_OF)
    got = [(r["equipment_code"], r["maintenance_count"], r["total_labor_hours"], r["total_material_cost"],
            r["avg_duration_hours"]) for r in rows]
    assert got == [
        # PRESS1: 2 h preventive + 3 h corrective, 150 + 420 material; February's job is outside 90 days.
        ("PRESS1", 2, d("6.50"), d("570.00"), d("2.50")),
        ("CNC1", 1, d("1.50"), d("80.00"), d("1.50")),
        # PRESS2's calibration has no material cost: it comes last, not first.
        ("PRESS2", 1, d("1.00"), None, d("1.00")),
    ]


async def test_downtime_pareto_of_the_last_30_days(conn: asyncpg.Connection) -> None:
    rows = await run(conn, "downtime_pareto", AS_OF - timedelta(days=30), AS_OF, None, None)
    got = [(r["reason_code"], r["occurrence_count"], r["total_hours"], r["avg_hours_per_equipment"],
            pct(r["share"]), pct(r["cumulative_share"]), r["in_head"]) for r in rows]
    # Downtime that affects OEE: electrical 1.5 h, mechanical 0.5 + 1 = 1.5 h (two machines), material
    # 0.75 + 0.5 = 1.25 h, tool change 0.5 h, no operator 0.5 h: 5.25 h (scheduled maintenance does not count).
    # The two 1.5 h reasons tie; each gets its own running total (28.6 %, 57.1 %).  Material shortage takes
    # the total from 57.1 % to 81.0 %: it is the reason that crosses 80 %, so it is in the head; the rest is
    # not (the two 0.5 h reasons tie and go by code).
    assert got == [
        ("ELEC_FAIL", 1, d("1.50"), d("1.50"), d("28.6"), d("28.6"), True),
        ("MECH_FAIL", 2, d("1.50"), d("0.75"), d("28.6"), d("57.1"), True),
        ("MAT_SHORT", 2, d("1.25"), d("1.25"), d("23.8"), d("81.0"), True),
        ("NO_OPER", 1, d("0.50"), d("0.50"), d("9.5"), d("90.5"), False),
        ("TOOL_CHANGE", 1, d("0.50"), d("0.50"), d("9.5"), d("100.0"), False),
    ]
    # Only PRESS2 (equipment 2): its two material shortages; its scheduled maintenance does not affect OEE.
    rows = await run(conn, "downtime_pareto", AS_OF - timedelta(days=30), AS_OF, [2], None)
    assert [(r["reason_code"], r["occurrence_count"], r["total_hours"], r["share"], r["in_head"]) for r in rows] == [
        ("MAT_SHORT", 2, d("1.25"), 1, True)]


async def test_predictive_maintenance(conn: asyncpg.Connection) -> None:
    now = await conn.fetchval("SELECT date_bin('5 minutes', now(), '2000-01-01')")
    rows = await run(conn, "predictive_maintenance", now)
    got = [(r["equipment_code"], r["parameter"], r["current_value"], r["alert_level"], r["days_to_threshold"])
           for r in rows]
    assert got == [
        # PRESS2 vibrates at 5.0 (> 4.5): critical, and comes first; steady, so no time to the limit.
        ("PRESS2", "vibration", d("5.00"), "CRITICAL", None),
        # PRESS1 temperature rises 0.04 per 5 min = 11.52 per day; mean 80 + 0.04 x 5.5 = 80.22 (> 75: warning);
        # (90 - 80.22) / 11.52 = 0.85 days to the limit.
        ("PRESS1", "temperature", d("80.22"), "WARNING", d("0.8")),
        # PRESS1 vibration steady at 4.0 (> 3.5): warning without a trend.  The 100 of 30 h ago is outside.
        ("PRESS1", "vibration", d("4.00"), "WARNING", None),
    ]  # PRESS2 temperature stays normal: its 1000 spike had bad quality and is not in sensor_5min_avg


async def test_scrap_analysis_of_the_last_7_days(conn: asyncpg.Connection) -> None:
    rows = await run(conn, "scrap_analysis", AS_OF)
    got = [(r["equipment_code"], r["product_code"], r["scrap_incidents"], r["total_scrap_qty"],
            r["total_produced"], r["scrap_rate_pct"], r["total_scrap_cost"], r["scrap_codes"]) for r in rows]
    assert got == [
        # PRESS1 brackets: 100 + 56 scrapped of 3456 + 2400 + 1200 = 7056 made → 2.21 %; cost 50 + 56 x 2.50.
        ("PRESS1", "BRACKET", 2, 156, 7056, d("2.21"), d("190.00"), "SC-BURR, SC-CRACK"),
        # PRESS2 makes no named product: 48 of 4800 + 2400 → 0.67 %; no cost known.
        ("PRESS2", None, 1, 48, 7200, d("0.67"), None, "SC-DENT"),
    ]  # the scrap of production 107 (2 June) is outside the window


async def test_live_oee_of_the_current_shift(conn: asyncpg.Connection) -> None:
    # 04:30 UTC is 06:30 in Berlin: the early shift of 9 June (in UTC it would still be the night shift).
    rows = await run(conn, "live_shift_oee", datetime(2025, 6, 9, 4, 30, tzinfo=UTC), None, None)
    got = [(r["shift_code"], r["date_id"], r["equipment_code"], r["availability"], r["performance"],
            r["quality"], r["oee"], r["last_update"]) for r in rows]
    assert got == [  # lowest OEE first, unknown last
        ("EARLY", 20250609, "PRESS2", 1.0, 0.5, 1.0, 0.5, ts("2025-06-09 12:00")),
        ("EARLY", 20250609, "PRESS1", 0.75, approx(0.8), approx(0.9375), approx(0.5625), ts("2025-06-09 12:00")),
        ("EARLY", 20250609, "CNC1", 0.5, None, 0.9, None, ts("2025-06-09 12:00")),
    ]
    # Only the equipment asked for; the early shift asked for while the night shift runs: nothing.
    rows = await run(conn, "live_shift_oee", datetime(2025, 6, 9, 4, 30, tzinfo=UTC), [1, 3], None)
    assert [r["equipment_code"] for r in rows] == ["PRESS1", "CNC1"]
    rows = await run(conn, "live_shift_oee", datetime(2025, 6, 9, 4, 30, tzinfo=UTC), None, [2, 3])
    assert rows == []
    # 02:00 UTC on 10 June is 04:00 in Berlin: the night shift that began at 22:00 on 9 June.
    rows = await run(conn, "live_shift_oee", datetime(2025, 6, 10, 2, 0, tzinfo=UTC), None, None)
    night = [(r["shift_code"], r["shift_name"], r["date_id"], r["equipment_code"], r["oee"], r["last_update"])
             for r in rows]
    assert night == [("NIGHT", "Night", 20250609, "PRESS2", 0.25, ts("2025-06-10 04:00"))]
    # 13:30 UTC is 15:30 in Berlin: the late shift, where only PRESS1 has two records (one row, not two):
    # 6 of 8 h, 3600 x 5 s = 5 h of 6 h, 3480 of 3600 good.
    rows = await run(conn, "live_shift_oee", datetime(2025, 6, 9, 13, 30, tzinfo=UTC), None, None)
    late = [(r["shift_code"], r["equipment_code"], r["availability"], r["performance"], r["quality"], r["oee"],
             r["last_update"]) for r in rows]
    assert late == [("LATE", "PRESS1", 0.75, approx(5 / 6), approx(3480 / 3600), approx(0.75 * 5 / 6 * 3480 / 3600),
                     ts("2025-06-09 20:00"))]
