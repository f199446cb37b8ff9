"""The analytics of the REST API, against a small plant whose answers were worked out by hand.

The plant (synced from the YAML below, as the daemon does):

* PLANT1 (Europe/Berlin, UTC+2 in June): shifts EARLY 06-14, LATE 14-22, NIGHT 22-06 local.  Area PRESSHOP,
  work center LINE1 with PRESS1 (600 parts/h, makes BRACKET: ideal cycle 5 s) and PRESS2 (1200 parts/h: 3 s,
  no product); area MACHINING, work center MILL with CNC1 (no rate: performance unknown).
* PLANT2 (UTC): EARLY 06-14 (the same code as PLANT1's) and SWING 14-22.  Area ASSEMBLY, work center CELL with
  ROBOT1 (360 parts/h: 10 s) and an empty work center SPARE; an empty area STORES.
* PLANT3: no areas.

The window is [8 June 00:00 UTC, 11 June 00:00 UTC), three days; the window before it is [5 June, 8 June).
Times below are UTC; each production record's downtime is exactly its planned minus operating time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pytest import approx

from ingestor.api.config import READ_TOKEN_ENV
from ingestor.database import analytics
from ingestor.database.analytics import PlantScope, Window
from ingestor.database.dimensions import DimensionKeys, sync_dimensions
from ingestor.database.schema import apply_schema, refresh_view
from ingestor.plant import PlantConfig

from .api_helpers import api_client, api_state
from .conftest import Database
from .helpers import run_on

H = 3_600_000  # one hour in milliseconds


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


WINDOW = Window(ts("2025-06-08 00:00"), ts("2025-06-11 00:00"))

PLANT = PlantConfig.model_validate(yaml.safe_load("""
sites:
  - code: PLANT1
    name: Plant 1
    timezone: Europe/Berlin
    shifts:
      - {code: EARLY, name: Early, start: "06:00", end: "14:00"}
      - {code: LATE, name: Late, start: "14:00", end: "22:00"}
      - {code: NIGHT, name: Night, start: "22:00", end: "06:00"}
    areas:
      - code: PRESSHOP
        name: Press shop
        work_centers:
          - code: LINE1
            name: Line 1
            equipment:
              - {code: PRESS1, name: Press 1, type: press, theoretical_rate: 600}
              - {code: PRESS2, name: Press 2, type: press, theoretical_rate: 1200}
      - code: MACHINING
        name: Machining
        work_centers:
          - code: MILL
            name: Mill
            equipment:
              - {code: CNC1, name: CNC 1}
  - code: PLANT2
    name: Plant 2
    timezone: UTC
    shifts:
      - {code: EARLY, name: Early (plant 2), start: "06:00", end: "14:00"}
      - {code: SWING, name: Swing, start: "14:00", end: "22:00"}
    areas:
      - code: ASSEMBLY
        name: Assembly
        work_centers:
          - code: CELL
            name: Cell
            equipment:
              - {code: ROBOT1, name: Robot 1, theoretical_rate: 360}
          - {code: SPARE, name: Spare}
      - {code: STORES, name: Stores}
  - {code: PLANT3, name: Plant 3}
products:
  - {code: BRACKET, name: Bracket, target_cycle_time: 5s}
"""))

# (equipment, site, shift, date_id, product, start, end, planned ms, operating ms, parts, good)
PRODUCTION = [
    # PRESS1
    ("PRESS1", "PLANT1", "EARLY", 20250606, "BRACKET", "2025-06-06 04:00", "2025-06-06 12:00", 8 * H, 8 * H, 4608, 4608),
    ("PRESS1", "PLANT1", "EARLY", 20250608, "BRACKET", "2025-06-08 04:00", "2025-06-08 12:00", 8 * H, 8 * H, 5760, 5760),
    ("PRESS1", "PLANT1", "EARLY", 20250609, "BRACKET", "2025-06-09 04:00", "2025-06-09 12:00", 8 * H, 6 * H, 3456, 3240),
    ("PRESS1", "PLANT1", "LATE", 20250609, "BRACKET", "2025-06-09 12:00", "2025-06-09 20:00", 8 * H, 8 * H, 5760, 5760),
    ("PRESS1", "PLANT1", "EARLY", 20250610, "BRACKET", "2025-06-10 04:00", "2025-06-10 12:00", 8 * H, 4 * H, 2880, 2880),
    ("PRESS1", "PLANT1", "EARLY", 20250611, "BRACKET", "2025-06-11 04:00", "2025-06-11 12:00", 8 * H, 8 * H, 5760, 5760),
    # PRESS2: the first record starts exactly at the window's start (02:00 in Berlin: 7 June's night shift),
    # the last exactly at its end (out)
    ("PRESS2", "PLANT1", "NIGHT", 20250607, None, "2025-06-08 00:00", "2025-06-08 04:00", 4 * H, 4 * H, 4800, 4800),
    ("PRESS2", "PLANT1", "EARLY", 20250609, None, "2025-06-09 04:00", "2025-06-09 12:00", 8 * H, 8 * H, 4800, 4800),
    ("PRESS2", "PLANT1", "NIGHT", 20250609, None, "2025-06-09 20:00", "2025-06-10 04:00", 8 * H, 4 * H, 2400, 2400),
    ("PRESS2", "PLANT1", "NIGHT", 20250610, None, "2025-06-11 00:00", "2025-06-11 04:00", 4 * H, 4 * H, 1, 1),
    # CNC1
    ("CNC1", "PLANT1", "EARLY", 20250607, None, "2025-06-07 04:00", "2025-06-07 12:00", 8 * H, 8 * H, 0, 0),
    ("CNC1", "PLANT1", "EARLY", 20250609, None, "2025-06-09 04:00", "2025-06-09 12:00", 8 * H, 4 * H, 100, 90),
    # ROBOT1
    ("ROBOT1", "PLANT2", "EARLY", 20250609, None, "2025-06-09 06:00", "2025-06-09 14:00", 8 * H, 7 * H, 2520, 2500),
    ("ROBOT1", "PLANT2", "SWING", 20250610, None, "2025-06-10 14:00", "2025-06-10 22:00", 8 * H, 8 * H, 2880, 2880),
]

# (equipment, reason, start, end); the production record covering the start is linked
DOWNTIME = [
    ("PRESS1", "MECH_FAIL", "2025-06-09 08:00", "2025-06-09 08:30"),
    ("PRESS1", "ELEC_FAIL", "2025-06-09 10:00", "2025-06-09 11:30"),
    ("PRESS1", "TOOL_CHANGE", "2025-06-10 06:00", "2025-06-10 08:00"),
    ("PRESS1", "MECH_FAIL", "2025-06-10 09:00", "2025-06-10 11:00"),
    ("PRESS2", "NO_OPER", "2025-06-09 22:00", "2025-06-10 02:00"),
    ("PRESS2", "SCHED_MAINT", "2025-06-10 06:00", "2025-06-10 10:00"),  # no record; does not affect OEE
    ("CNC1", "MAT_SHORT", "2025-06-09 04:00", "2025-06-09 06:00"),
    ("CNC1", "MECH_FAIL", "2025-06-09 06:00", "2025-06-09 08:00"),
    ("ROBOT1", "ELEC_FAIL", "2025-06-09 07:00", "2025-06-09 08:00"),
    ("ROBOT1", "MECH_FAIL", "2025-06-07 10:00", "2025-06-07 11:00"),  # before the window
    ("ROBOT1", "MECH_FAIL", "2025-06-11 00:00", "2025-06-11 01:00"),  # at its end: out
]


async def populate(conn: asyncpg.Connection) -> DimensionKeys:
    await apply_schema(conn)
    keys = await sync_dimensions(conn, PLANT)
    await conn.executemany(
        "INSERT INTO fact_production (equipment_id, shift_id, date_id, product_id, start_time, end_time, "
        "planned_production_time, operating_time, planned_parts, total_parts_produced, good_parts, scrap_parts) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, $10, $9::integer - $10::integer)",
        [(keys.equipment[e], keys.shifts[(site, shift)], day, keys.products.get(product or ""), ts(start), ts(end),
          planned, operating, parts, good)
         for e, site, shift, day, product, start, end, planned, operating, parts, good in PRODUCTION])
    await conn.executemany(
        "INSERT INTO fact_downtime (equipment_id, reason_id, start_time, end_time, downtime_duration, production_id) "
        "SELECT $1, $2, $3, $4, (extract(epoch FROM $4::timestamptz - $3::timestamptz) * 1000)::bigint, "
        "       (SELECT p.production_id FROM fact_production p "
        "        WHERE p.equipment_id = $1 AND p.start_time <= $3 AND p.end_time > $3)",
        [(keys.equipment[e], keys.reasons[r], ts(s), ts(t)) for e, r, s, t in DOWNTIME])
    await refresh_view(conn, "view_oee_daily")
    return keys


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


def ratios(m: analytics.OeeRatios) -> tuple[float | None, ...]:
    return (m.availability, m.performance, m.quality, m.oee)


def r(*values: float | None) -> tuple[Any, ...]:
    return tuple(None if v is None else approx(v) for v in values)


# ---------------------------------------------------------------------------------------------------------
# The query functions


async def test_scope_resolution(conn: asyncpg.Connection) -> None:
    ids = {row["equipment_code"]: row["equipment_id"] for row in
           await conn.fetch("SELECT equipment_code, equipment_id FROM dim_equipment")}
    chosen = await analytics.resolve_scope(conn, PlantScope())
    assert (chosen.equipment_ids, chosen.shift_ids) == (None, None)
    chosen = await analytics.resolve_scope(conn, PlantScope(sites=("PLANT1",), areas=("PRESSHOP", "ASSEMBLY")))
    assert chosen.equipment_ids == sorted([ids["PRESS1"], ids["PRESS2"]])  # levels combine with AND
    chosen = await analytics.resolve_scope(conn, PlantScope(sites=("PLANT2",), equipment=("PRESS1",)))
    assert chosen.equipment_ids == []  # known codes with nothing in common: an empty selection, not an error
    chosen = await analytics.resolve_scope(conn, PlantScope(shifts=("EARLY",)))
    assert chosen.shift_ids is not None and len(chosen.shift_ids) == 2  # both sites' EARLY shift

    with pytest.raises(analytics.UnknownCodes) as caught:
        await analytics.resolve_scope(conn, PlantScope(sites=("PLANT1", "NOPE"), equipment=("X1", "X2"),
                                                       shifts=("early",)))
    assert caught.value.unknown == {"site": ("NOPE",), "equipment": ("X1", "X2"), "shift": ("early",)}
    assert str(caught.value) == "unknown site code 'NOPE'; unknown equipment codes 'X1', 'X2'; unknown shift code 'early'"
    with pytest.raises(analytics.UnknownCodes, match="unknown work center code 'A\\\\x00B'"):
        await analytics.resolve_scope(conn, PlantScope(work_centers=("A\x00B",)))  # never sent to the server
    with pytest.raises(analytics.UnknownCodes, match="unknown area code 'AAAA"):
        await analytics.resolve_scope(conn, PlantScope(areas=("A" * 51,)))


async def test_oee_per_day(conn: asyncpg.Connection) -> None:
    got = await analytics.oee(conn, WINDOW, PlantScope())
    assert [item.equipment.code for item in got] == ["CNC1", "PRESS1", "PRESS2", "ROBOT1"]
    cnc, press1, press2, robot = got

    # CNC1: 4 of 8 h, 90 of 100 good, no ideal cycle time: performance and OEE unknown.  The window before has
    # a record too (a day without parts: OEE unknown), so the trend is unknown: stable, no change.
    assert ratios(cnc.metrics) == r(0.5, None, 0.9, None)
    assert (cnc.trend.direction, cnc.trend.change) == ("stable", None)
    assert [(p.date, ratios(p.metrics)) for p in cnc.periods] == [(date(2025, 6, 9), r(0.5, None, 0.9, None))]

    # PRESS1, four records (the 6 June one is before the window, the 11 June one after it): planned 32 h,
    # operating 26 h → 0.8125; ideal (5760 + 3456 + 5760 + 2880) x 5 s = 24.8 h of 26 h; 17640 of 17856 good;
    # OEE 24.8 / 32 x 17640 / 17856 = 0.765625.  The window before: 6 June, 6.4 h ideal in 8 h: OEE 0.8.
    assert press1.equipment.name == "Press 1"
    assert ratios(press1.metrics) == r(26 / 32, 24.8 / 26, 17640 / 17856, 0.765625)
    assert press1.trend.direction == "down"
    assert press1.trend.change == approx(0.765625 - 0.8)
    assert [(p.date, p.week, p.shift, ratios(p.metrics)) for p in press1.periods] == [
        (date(2025, 6, 8), None, None, r(1, 1, 1, 1)),
        # 9 June: 14 of 16 h; 9216 x 5 s = 12.8 h of 14 h; 9000 of 9216 good → 12.8 / 16 x 9000 / 9216 = 0.78125
        (date(2025, 6, 9), None, None, r(14 / 16, 12.8 / 14, 9000 / 9216, 0.78125)),
        (date(2025, 6, 10), None, None, r(0.5, 1, 1, 0.5)),
    ]

    # PRESS2 has no product: 3 s from 1200 parts/h.  Three records (the one starting exactly at the window's
    # end is out, the one starting exactly at its start is in): planned 20 h, operating 16 h; ideal 12000 x 3 s
    # = 10 h of 16 h.  Its first record is 7 June's night shift: the production day is where the shift began.
    assert ratios(press2.metrics) == r(0.8, 10 / 16, 1, 0.5)
    assert (press2.trend.direction, press2.trend.change) == ("stable", None)  # nothing in the window before
    assert [(p.date, ratios(p.metrics)) for p in press2.periods] == [
        (date(2025, 6, 7), r(1, 1, 1, 1)),
        (date(2025, 6, 9), r(12 / 16, 0.5, 1, 0.375)),
    ]

    # ROBOT1: 15 of 16 h, ideal (2520 + 2880) x 10 s = 15 h: performance 1; 5380 of 5400 good.
    assert ratios(robot.metrics) == r(15 / 16, 1, 5380 / 5400, 15 / 16 * 5380 / 5400)


async def test_oee_per_week_and_shift(conn: asyncpg.Connection) -> None:
    press1 = (await analytics.oee(conn, WINDOW, PlantScope(equipment=("PRESS1",)), "week"))[0]
    # Sunday 8 June is in ISO week 23, Monday 9 and Tuesday 10 June in week 24: 24 h planned, 18 h operating,
    # 12096 x 5 s = 16.8 h ideal, 11880 of 12096 good → 16.8 / 24 x 11880 / 12096 = 0.6875.
    assert [(p.date, p.week, ratios(p.metrics)) for p in press1.periods] == [
        (date(2025, 6, 2), "2025-W23", r(1, 1, 1, 1)),
        (date(2025, 6, 9), "2025-W24", r(0.75, 16.8 / 18, 11880 / 12096, 0.6875)),
    ]
    assert ratios(press1.metrics) == r(26 / 32, 24.8 / 26, 17640 / 17856, 0.765625)  # the window is the same

    press1 = (await analytics.oee(conn, WINDOW, PlantScope(equipment=("PRESS1",)), "shift"))[0]
    assert [(p.date, p.shift, ratios(p.metrics)) for p in press1.periods] == [
        (date(2025, 6, 8), analytics.ShiftRef("EARLY", "Early"), r(1, 1, 1, 1)),
        # 6 of 8 h; 3456 x 5 s = 4.8 h of 6 h; 3240 of 3456 good
        (date(2025, 6, 9), analytics.ShiftRef("EARLY", "Early"), r(0.75, 0.8, 0.9375, 0.5625)),
        (date(2025, 6, 9), analytics.ShiftRef("LATE", "Late"), r(1, 1, 1, 1)),
        (date(2025, 6, 10), analytics.ShiftRef("EARLY", "Early"), r(0.5, 1, 1, 0.5)),
    ]


async def test_oee_filtered_by_shift_and_plant(conn: asyncpg.Connection) -> None:
    # The early shifts of both sites only.  PRESS1 without its late shift: 24 h planned, 18 h operating,
    # (5760 + 3456 + 2880) x 5 s = 16.8 h ideal, 11880 of 12096 good → 0.6875; the window before is 6 June's
    # early shift (0.8): down by 0.1125.
    got = await analytics.oee(conn, WINDOW, PlantScope(shifts=("EARLY",)))
    assert [item.equipment.code for item in got] == ["CNC1", "PRESS1", "PRESS2", "ROBOT1"]
    press1 = got[1]
    assert ratios(press1.metrics) == r(0.75, 16.8 / 18, 11880 / 12096, 0.6875)
    assert (press1.trend.direction, press1.trend.change) == ("down", approx(0.6875 - 0.8))
    assert ratios(got[2].metrics) == r(1, 0.5, 1, 0.5)  # PRESS2's early shift of 9 June only
    assert ratios(got[3].metrics) == r(7 / 8, 1, 2500 / 2520, 7 / 8 * 2500 / 2520)  # ROBOT1's early shift

    assert [item.equipment.code for item in await analytics.oee(conn, WINDOW, PlantScope(sites=("PLANT2",)))] == [
        "ROBOT1"]
    assert await analytics.oee(conn, WINDOW, PlantScope(work_centers=("SPARE",))) == []
    # A window with no record at all
    assert await analytics.oee(conn, Window(ts("2024-01-01 00:00"), ts("2024-01-02 00:00")), PlantScope()) == []


async def test_oee_trend(fresh_database: Database) -> None:
    """Up, down, and stable under one OEE point, on days of PRESS1 that differ only in parts made (8 h planned
    and operating, 5 s per bracket: 5760 parts is OEE 1)."""
    conn = await asyncpg.connect(fresh_database.dsn)
    try:
        await apply_schema(conn)
        keys = await sync_dimensions(conn, PLANT)
        await conn.executemany(
            "INSERT INTO fact_production (equipment_id, shift_id, date_id, product_id, start_time, end_time, "
            "planned_production_time, operating_time, planned_parts, total_parts_produced, good_parts) "
            "VALUES ($1, $2, $3, $4, $5::timestamptz, $5::timestamptz + interval '8 hours', $6, $6, 0, $7, $7)",
            [(keys.equipment["PRESS1"], keys.shifts[("PLANT1", "EARLY")], day, keys.products["BRACKET"],
              ts(f"2025-01-{day % 100:02} 04:00"), 8 * H, parts)
             for day, parts in ((20250106, 5760), (20250107, 5730), (20250108, 5600), (20250109, 5760))])

        async def trend(day: int) -> analytics.Trend:
            window = Window(ts(f"2025-01-{day:02} 00:00"), ts(f"2025-01-{day + 1:02} 00:00"))
            return (await analytics.oee(conn, window, PlantScope()))[0].trend

        assert await trend(7) == analytics.Trend("stable", approx(5730 / 5760 - 1))  # -0.0052
        assert await trend(8) == analytics.Trend("down", approx((5600 - 5730) / 5760))  # -0.0226
        assert await trend(9) == analytics.Trend("up", approx((5760 - 5600) / 5760))  # +0.0278
        assert await trend(6) == analytics.Trend("stable", None)  # no record the day before
    finally:
        await conn.close()


async def test_production(conn: asyncpg.Connection) -> None:
    got = await analytics.production(conn, WINDOW, PlantScope())
    # Parts: PRESS1 17856 (17640 good), PRESS2 12000, CNC1 100 (90), ROBOT1 5400 (5380).
    # Efficiency = ideal time of the parts / planned time: PRESS1 24.8 / 32, PRESS2 10 / 20, ROBOT1 15 / 16;
    # CNC1 has no ideal cycle time, so its efficiency, and the plant's, is unknown.
    assert got.summary == analytics.ProductionTotals(35356, 35110, 246, 76.0, None)
    assert [(e.equipment.code, e.totals.total_parts, e.totals.good_parts, e.totals.scrap_parts,
             e.totals.planned_hours, e.totals.efficiency) for e in got.by_equipment] == [
        ("CNC1", 100, 90, 10, 8.0, None),
        ("PRESS1", 17856, 17640, 216, 32.0, approx(0.775)),
        ("PRESS2", 12000, 12000, 0, 20.0, approx(0.5)),
        ("ROBOT1", 5400, 5380, 20, 16.0, approx(0.9375)),
    ]
    # The press shop alone: (24.8 + 10) / (32 + 20) h.
    got = await analytics.production(conn, WINDOW, PlantScope(areas=("PRESSHOP",)))
    assert got.summary == analytics.ProductionTotals(29856, 29640, 216, 52.0, approx(34.8 / 52))
    assert [e.equipment.code for e in got.by_equipment] == ["PRESS1", "PRESS2"]
    # Nothing in scope: zero parts, efficiency unknown, no equipment.
    got = await analytics.production(conn, WINDOW, PlantScope(work_centers=("SPARE",)))
    assert got == analytics.Production(analytics.ProductionTotals(0, 0, 0, 0.0, None), [])


async def test_downtime_pareto(conn: asyncpg.Connection) -> None:
    pareto = await analytics.downtime_pareto(conn, WINDOW, PlantScope())
    assert pareto.total_hours == 15.0
    got = pareto.reasons
    # OEE downtime in the window: mechanical 0.5 + 2 (PRESS1) + 2 (CNC1) = 4.5 h, no operator 4 h, electrical
    # 1.5 + 1 = 2.5 h, material 2 h, tool change 2 h: 15 h.  Scheduled maintenance does not affect OEE; the
    # ROBOT1 failures of 7 and 11 June are outside.  Material shortage crosses 80 % (73.3 % → 86.7 %): in the head.
    assert [(x.code, x.category, x.occurrences, x.hours, x.hours_per_equipment, x.share, x.cumulative_share,
             x.in_head) for x in got] == [
        ("MECH_FAIL", "Unscheduled Downtime", 3, 4.5, 2.25, approx(0.3), approx(0.3), True),
        ("NO_OPER", "External Downtime", 1, 4.0, 4.0, approx(4 / 15), approx(8.5 / 15), True),
        ("ELEC_FAIL", "Unscheduled Downtime", 2, 2.5, 1.25, approx(2.5 / 15), approx(11 / 15), True),
        ("MAT_SHORT", "External Downtime", 1, 2.0, 2.0, approx(2 / 15), approx(13 / 15), True),
        ("TOOL_CHANGE", "Scheduled Downtime", 1, 2.0, 2.0, approx(2 / 15), approx(1.0), False),
    ]
    assert got[0].description == "Mechanical failure"
    # Early shifts only (by the production record covering each stop's start): no-operator was in a night shift.
    got = (await analytics.downtime_pareto(conn, WINDOW, PlantScope(shifts=("EARLY",)))).reasons
    assert [(x.code, x.hours, x.cumulative_share, x.in_head) for x in got] == [
        ("MECH_FAIL", 4.5, approx(4.5 / 11), True),
        ("ELEC_FAIL", 2.5, approx(7 / 11), True),
        ("MAT_SHORT", 2.0, approx(9 / 11), True),
        ("TOOL_CHANGE", 2.0, approx(1.0), False),
    ]
    got = (await analytics.downtime_pareto(conn, WINDOW, PlantScope(equipment=("ROBOT1",)))).reasons
    assert [(x.code, x.occurrences, x.hours, x.share, x.in_head) for x in got] == [("ELEC_FAIL", 1, 1.0, 1.0, True)]


async def test_reliability(conn: asyncpg.Connection) -> None:
    got = await analytics.reliability(conn, WINDOW, PlantScope())
    # CNC1: 4 h operating, one 2 h failure.  PRESS1: 8 + 6 + 8 + 4 = 26 h, failures of 0.5, 1.5 and 2 h.
    # ROBOT1: 15 h, one 1 h failure (the others are outside the window).  PRESS2 never failed: unknown, last.
    assert [(x.equipment.code, x.failures, x.operating_hours, x.failure_hours, x.mtbf_hours, x.mttr_hours)
            for x in got] == [
        ("CNC1", 1, 4.0, 2.0, 4.0, 2.0),
        ("PRESS1", 3, 26.0, 4.0, approx(26 / 3), approx(4 / 3)),
        ("ROBOT1", 1, 15.0, 1.0, 15.0, 1.0),
        ("PRESS2", 0, 16.0, 0.0, None, None),
    ]
    got = await analytics.reliability(conn, WINDOW, PlantScope(sites=("PLANT2",)))
    assert [x.equipment.code for x in got] == ["ROBOT1"]
    with pytest.raises(analytics.NotPerShift):
        await analytics.reliability(conn, WINDOW, PlantScope(shifts=("EARLY",)))


async def test_live_oee(conn: asyncpg.Connection) -> None:
    # 05:00 UTC: 07:00 in Berlin, PLANT1's early shift of 9 June; 05:00 at PLANT2, before its first shift.
    got = await analytics.live_oee(conn, ts("2025-06-09 05:00"), PlantScope())
    assert [(x.equipment.code, x.site, x.shift, x.date, ratios(x.metrics), x.last_update) for x in got] == [
        ("PRESS2", "PLANT1", analytics.ShiftRef("EARLY", "Early"), date(2025, 6, 9), r(1, 0.5, 1, 0.5),
         ts("2025-06-09 12:00")),
        ("PRESS1", "PLANT1", analytics.ShiftRef("EARLY", "Early"), date(2025, 6, 9), r(0.75, 0.8, 0.9375, 0.5625),
         ts("2025-06-09 12:00")),
        ("CNC1", "PLANT1", analytics.ShiftRef("EARLY", "Early"), date(2025, 6, 9), r(0.5, None, 0.9, None),
         ts("2025-06-09 12:00")),
    ]
    # 07:00 UTC: both sites' early shifts; only ROBOT1 asked for.
    got = await analytics.live_oee(conn, ts("2025-06-09 07:00"), PlantScope(equipment=("ROBOT1",), shifts=("EARLY",)))
    assert [(x.equipment.code, x.site, x.shift.name, ratios(x.metrics)) for x in got] == [
        ("ROBOT1", "PLANT2", "Early (plant 2)", r(7 / 8, 1, 2500 / 2520, 7 / 8 * 2500 / 2520))]
    assert await analytics.live_oee(conn, ts("2025-06-09 07:00"), PlantScope(shifts=("LATE",))) == []


async def test_plant_tree(conn: asyncpg.Connection) -> None:
    ids = {row["equipment_code"]: row["equipment_id"] for row in
           await conn.fetch("SELECT equipment_code, equipment_id FROM dim_equipment")}
    mech = await conn.fetchval("SELECT reason_id FROM dim_downtime_reason WHERE reason_code = 'MECH_FAIL'")
    await conn.execute("DELETE FROM derive_stop")
    await conn.executemany(
        "INSERT INTO derive_stop (equipment_id, start_time, end_time, open_at, state_value, planned_state, reason_id) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7)", [
            (ids["PRESS1"], ts("2025-06-10 09:00"), ts("2025-06-10 11:00"), None, 3.0, False, mech),  # over
            (ids["PRESS1"], ts("2025-06-11 11:00"), None, ts("2025-06-11 11:05"), 3.0, False, mech),  # going on
            (ids["PRESS2"], ts("2025-06-11 03:00"), None, ts("2025-06-11 03:30"), 2.0, True, None),
        ])
    await conn.execute("DELETE FROM live_equipment_state")
    elec = await conn.fetchval("SELECT reason_id FROM dim_downtime_reason WHERE reason_code = 'ELEC_FAIL'")
    await conn.executemany(
        "INSERT INTO live_equipment_state (equipment_id, state, since, state_value, reason_id, updated_at) "
        "VALUES ($1, $2, $3, $4, $5, $6)", [
            # PRESS1 runs again since 11:30; the derivation has not caught up (its open stop is still shown)
            (ids["PRESS1"], "running", ts("2025-06-11 11:30"), 1.0, None, ts("2025-06-11 11:31")),
            # ROBOT1 stopped, an electrical failure; the derivation has not seen it yet
            (ids["ROBOT1"], "stopped", ts("2025-06-11 08:00"), 7.0, elec, ts("2025-06-11 08:00:02")),
        ])
    tree = await analytics.plant(conn, PlantScope())
    shape = [(s.code, s.timezone, [(a.code, [(w.code, [e.code for e in w.equipment]) for w in a.work_centers])
                                   for a in s.areas]) for s in tree]
    assert shape == [
        ("PLANT1", "Europe/Berlin", [("MACHINING", [("MILL", ["CNC1"])]), ("PRESSHOP", [("LINE1", ["PRESS1", "PRESS2"])])]),
        ("PLANT2", "UTC", [("ASSEMBLY", [("CELL", ["ROBOT1"]), ("SPARE", [])]), ("STORES", [])]),
        ("PLANT3", "UTC", []),
    ]
    equipment = {e.code: e for s in tree for a in s.areas for w in a.work_centers for e in w.equipment}
    press1 = equipment["PRESS1"]
    assert (press1.name, press1.type, press1.active) == ("Press 1", "press", True)
    mech_fail = analytics.Reason("MECH_FAIL", "Mechanical failure", "Unscheduled Downtime")
    assert press1.status == analytics.EquipmentStatus(
        "running", ts("2025-06-11 11:30"), None, 1.0, ts("2025-06-11 11:31"),
        analytics.OpenStop(ts("2025-06-11 11:00"), False, ts("2025-06-11 11:05"), mech_fail), ts("2025-06-11 12:00"))
    assert equipment["ROBOT1"].status == analytics.EquipmentStatus(
        "stopped", ts("2025-06-11 08:00"), analytics.Reason("ELEC_FAIL", "Electrical failure", "Unscheduled Downtime"),
        7.0, ts("2025-06-11 08:00:02"), None, ts("2025-06-10 22:00"))
    # No live state: the open stop the derivation saw (planned, no reason), then nothing at all.
    assert equipment["PRESS2"].status == analytics.EquipmentStatus(
        "planned_stop", ts("2025-06-11 03:00"), None, None, None,
        analytics.OpenStop(ts("2025-06-11 03:00"), True, ts("2025-06-11 03:30"), None), ts("2025-06-11 04:00"))
    assert equipment["CNC1"].status == analytics.EquipmentStatus(
        "unknown", None, None, None, None, None, ts("2025-06-09 12:00"))
    await conn.execute("DELETE FROM live_equipment_state WHERE equipment_id = $1", ids["PRESS1"])
    press1 = next(e for s in await analytics.plant(conn, PlantScope(equipment=("PRESS1",)))
                  for a in s.areas for w in a.work_centers for e in w.equipment)
    assert (press1.status.state, press1.status.since, press1.status.reason) == (
        "stopped", ts("2025-06-11 11:00"), mech_fail)  # the ongoing stop, from the derivation

    # A scope keeps only the branches that lead to its equipment.
    tree = await analytics.plant(conn, PlantScope(areas=("ASSEMBLY", "MACHINING")))
    assert [(s.code, [(a.code, [(w.code, [e.code for e in w.equipment]) for w in a.work_centers]) for a in s.areas])
            for s in tree] == [("PLANT1", [("MACHINING", [("MILL", ["CNC1"])])]),
                               ("PLANT2", [("ASSEMBLY", [("CELL", ["ROBOT1"])])])]
    assert await analytics.plant(conn, PlantScope(work_centers=("SPARE",))) == []


async def test_the_api_queries_compute_no_ratio_themselves() -> None:
    """OEE comes from oee_ratios() and MTBF/MTTR from reliability(): the API's files only group records."""
    from ingestor.database import queries

    for name, formula in (("api_oee", "oee_ratios("), ("mtbf_mttr", "reliability(")):
        sql = queries.load(name)
        assert formula in sql and "NULLIF" not in sql.upper(), name
    # the records' sums (and their ideal time) come from production_sums() (0006), as tested in
    # test_production_rollup.py against production_ideal_time
    assert "production_sums(" in queries.load("api_oee") and "production_sums(" in queries.load("api_production")


# ---------------------------------------------------------------------------------------------------------
# The endpoints, through the application on the same database


class Api:
    """The application on a real database, driven by an ``httpx.AsyncClient`` on an event loop of its own, so
    that plain and hypothesis tests can share one application (and its pool) per module."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.loop = asyncio.new_event_loop()
        self._client = api_client(api_state(dsn))
        self.client = self.loop.run_until_complete(self._client.__aenter__())

    def get(self, path: str, params: Any = None) -> httpx.Response:
        return self.loop.run_until_complete(self.client.get(path, params=params))

    def close(self) -> None:
        self.loop.run_until_complete(self._client.__aexit__(None, None, None))
        self.loop.close()


@pytest.fixture(scope="module")
def api(plant: Database) -> Iterator[Api]:
    app = Api(plant.dsn)
    yield app
    app.close()


IN_WINDOW = {"from": "2025-06-08T00:00:00Z", "to": "2025-06-11T00:00:00Z"}


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["title"]
    return body


def test_oee_endpoint(api: Api) -> None:
    body = ok(api.get("/api/manufacturing-metrics/oee", {**IN_WINDOW, "equipment": "PRESS1,PRESS2"}))
    assert [item["equipment"] for item in body] == [
        {"id": item["equipment"]["id"], "code": code, "name": name}
        for item, (code, name) in zip(body, [("PRESS1", "Press 1"), ("PRESS2", "Press 2")], strict=True)]
    press1, press2 = body
    assert press1["metrics"] == {"availability": approx(26 / 32), "performance": approx(24.8 / 26),
                                 "quality": approx(17640 / 17856), "oee": approx(0.765625)}
    assert press1["trend"] == {"direction": "down", "change": approx(0.765625 - 0.8)}
    assert press1["periods"] == [
        {"date": "2025-06-08", "week": None, "shift": None,
         "metrics": {"availability": 1.0, "performance": 1.0, "quality": 1.0, "oee": 1.0}},
        {"date": "2025-06-09", "week": None, "shift": None,
         "metrics": {"availability": approx(0.875), "performance": approx(12.8 / 14), "quality": approx(9000 / 9216),
                     "oee": approx(0.78125)}},
        {"date": "2025-06-10", "week": None, "shift": None,
         "metrics": {"availability": 0.5, "performance": 1.0, "quality": 1.0, "oee": 0.5}},
    ]
    assert press2["trend"] == {"direction": "stable", "change": None}

    # The same instants written with an offset, and without one (UTC); shift periods; a shift filter.
    same = ok(api.get("/api/manufacturing-metrics/oee", {"from": "2025-06-08T02:00:00+02:00",
                                                          "to": "2025-06-11T00:00:00", "equipment": "PRESS1"}))
    assert same == [press1]
    weeks = ok(api.get("/api/manufacturing-metrics/oee", {**IN_WINDOW, "equipment": "PRESS1", "granularity": "week"}))
    assert [(p["date"], p["week"], p["metrics"]["oee"]) for p in weeks[0]["periods"]] == [
        ("2025-06-02", "2025-W23", 1.0), ("2025-06-09", "2025-W24", approx(0.6875))]
    shifts = ok(api.get("/api/manufacturing-metrics/oee", [*IN_WINDOW.items(), ("equipment", "PRESS1"),
                                                           ("granularity", "shift"), ("shift", "EARLY"),
                                                           ("shift", "LATE")]))
    assert [(p["date"], p["shift"], p["metrics"]["oee"]) for p in shifts[0]["periods"]] == [
        ("2025-06-08", {"code": "EARLY", "name": "Early"}, 1.0),
        ("2025-06-09", {"code": "EARLY", "name": "Early"}, approx(0.5625)),
        ("2025-06-09", {"code": "LATE", "name": "Late"}, 1.0),
        ("2025-06-10", {"code": "EARLY", "name": "Early"}, 0.5),
    ]
    early = ok(api.get("/api/manufacturing-metrics/oee", {**IN_WINDOW, "shift": "EARLY", "site": "PLANT2"}))
    assert [(x["equipment"]["code"], x["metrics"]["oee"]) for x in early] == [("ROBOT1", approx(7 / 8 * 2500 / 2520))]


def test_production_endpoint(api: Api) -> None:
    body = ok(api.get("/api/manufacturing-metrics/production", IN_WINDOW))
    assert body["dateRange"] == {"start": "2025-06-08T00:00:00Z", "end": "2025-06-11T00:00:00Z"}
    assert body["summary"] == {"totalParts": 35356, "goodParts": 35110, "scrapParts": 246, "plannedHours": 76.0,
                               "efficiency": None}
    assert [{k: v for k, v in e.items() if k != "equipmentId"} for e in body["byEquipment"]] == [
        {"equipmentCode": "CNC1", "equipmentName": "CNC 1", "production": 100, "goodParts": 90, "scrapParts": 10,
         "plannedHours": 8.0, "efficiency": None},
        {"equipmentCode": "PRESS1", "equipmentName": "Press 1", "production": 17856, "goodParts": 17640,
         "scrapParts": 216, "plannedHours": 32.0, "efficiency": approx(0.775)},
        {"equipmentCode": "PRESS2", "equipmentName": "Press 2", "production": 12000, "goodParts": 12000,
         "scrapParts": 0, "plannedHours": 20.0, "efficiency": 0.5},
        {"equipmentCode": "ROBOT1", "equipmentName": "Robot 1", "production": 5400, "goodParts": 5380,
         "scrapParts": 20, "plannedHours": 16.0, "efficiency": 0.9375},
    ]
    presses = ok(api.get("/api/manufacturing-metrics/production", {**IN_WINDOW, "workCenter": "LINE1"}))
    assert presses["summary"]["efficiency"] == approx(34.8 / 52)


def test_downtime_endpoint(api: Api) -> None:
    body = ok(api.get("/api/manufacturing-metrics/downtime", {**IN_WINDOW, "shift": "EARLY"}))
    assert body["dateRange"] == {"start": "2025-06-08T00:00:00Z", "end": "2025-06-11T00:00:00Z"}
    assert body["totalHours"] == 11.0
    assert body["reasons"][0] == {"reasonCode": "MECH_FAIL", "description": "Mechanical failure",
                                  "category": "Unscheduled Downtime", "occurrences": 3, "hours": 4.5,
                                  "hoursPerEquipment": 2.25, "share": approx(4.5 / 11),
                                  "cumulativeShare": approx(4.5 / 11), "inHead": True}
    assert [(x["reasonCode"], x["inHead"]) for x in body["reasons"]] == [
        ("MECH_FAIL", True), ("ELEC_FAIL", True), ("MAT_SHORT", True), ("TOOL_CHANGE", False)]
    empty = ok(api.get("/api/manufacturing-metrics/downtime", {**IN_WINDOW, "area": "STORES"}))
    assert (empty["totalHours"], empty["reasons"]) == (0.0, [])


def test_reliability_endpoint(api: Api) -> None:
    body = ok(api.get("/api/manufacturing-metrics/reliability", {**IN_WINDOW, "area": "PRESSHOP"}))
    assert [{k: v for k, v in x.items() if k != "equipment"} | {"code": x["equipment"]["code"]}
            for x in body["equipment"]] == [
        {"code": "PRESS1", "failures": 3, "operatingHours": 26.0, "failureHours": 4.0, "mtbfHours": approx(26 / 3),
         "mttrHours": approx(4 / 3), "openFailures": 0, "openFailureHours": 0.0},
        {"code": "PRESS2", "failures": 0, "operatingHours": 16.0, "failureHours": 0.0, "mtbfHours": None,
         "mttrHours": None, "openFailures": 0, "openFailureHours": 0.0},
    ]
    assert "no shift filter" in problem(api.get("/api/manufacturing-metrics/reliability", {"shift": "EARLY"}),
                                        400)["detail"]


def test_live_oee_endpoint(api: Api) -> None:
    body = ok(api.get("/api/manufacturing-metrics/oee/live", {"at": "2025-06-09T09:00:00+02:00", "site": "PLANT1"}))
    assert body["at"] == "2025-06-09T07:00:00Z"
    assert body["equipment"][0] == {
        "equipment": {"id": body["equipment"][0]["equipment"]["id"], "code": "PRESS2", "name": "Press 2"},
        "site": "PLANT1", "shift": {"code": "EARLY", "name": "Early"}, "date": "2025-06-09",
        "metrics": {"availability": 1.0, "performance": 0.5, "quality": 1.0, "oee": 0.5},
        "lastUpdate": "2025-06-09T12:00:00Z"}
    assert [x["equipment"]["code"] for x in body["equipment"]] == ["PRESS2", "PRESS1", "CNC1"]
    everywhere = ok(api.get("/api/manufacturing-metrics/oee/live", {"at": "2025-06-09T07:00:00"}))
    assert [x["equipment"]["code"] for x in everywhere["equipment"]] == ["PRESS2", "PRESS1", "ROBOT1", "CNC1"]
    now = ok(api.get("/api/manufacturing-metrics/oee/live"))  # now: no record of this plant is that recent
    assert now["equipment"] == []
    assert abs(datetime.fromisoformat(now["at"]) - datetime.now(UTC)) < timedelta(minutes=5)


def test_plant_endpoint(api: Api) -> None:
    body = ok(api.get("/api/plant", {"site": "PLANT1", "equipment": "PRESS1,CNC1"}))
    site, = body["sites"]
    assert (site["code"], site["name"], site["timezone"]) == ("PLANT1", "Plant 1", "Europe/Berlin")
    assert [(a["code"], [(w["code"], [e["code"] for e in w["equipment"]]) for w in a["workCenters"]])
            for a in site["areas"]] == [("MACHINING", [("MILL", ["CNC1"])]), ("PRESSHOP", [("LINE1", ["PRESS1"])])]
    cnc = site["areas"][0]["workCenters"][0]["equipment"][0]
    assert {k: v for k, v in cnc.items() if k != "id"} == {
        "code": "CNC1", "name": "CNC 1", "type": None, "active": True,
        "status": {"state": "unknown", "since": None, "reason": None, "value": None, "updatedAt": None,
                   "openStop": None, "lastProductionEnd": "2025-06-09T12:00:00Z"}}
    whole = ok(api.get("/api/plant"))
    assert [s["code"] for s in whole["sites"]] == ["PLANT1", "PLANT2", "PLANT3"]

    async def robot_stops() -> None:
        conn = await asyncpg.connect(api.dsn)
        try:
            await conn.execute(
                "INSERT INTO live_equipment_state (equipment_id, state, since, state_value, reason_id, updated_at) "
                "SELECT e.equipment_id, 'stopped', '2025-06-11 08:00Z', 7, r.reason_id, '2025-06-11 08:00:02Z' "
                "FROM dim_equipment e, dim_downtime_reason r WHERE e.equipment_code = 'ROBOT1' "
                "AND r.reason_code = 'ELEC_FAIL' ON CONFLICT (equipment_id) DO UPDATE SET state = EXCLUDED.state, "
                "since = EXCLUDED.since, state_value = EXCLUDED.state_value, reason_id = EXCLUDED.reason_id, "
                "updated_at = EXCLUDED.updated_at")
        finally:
            await conn.close()
    asyncio.run(robot_stops())
    robot = ok(api.get("/api/plant", {"equipment": "ROBOT1"}))["sites"][0]["areas"][0]["workCenters"][0]["equipment"][0]
    assert robot["status"] == {
        "state": "stopped", "since": "2025-06-11T08:00:00Z",
        "reason": {"code": "ELEC_FAIL", "description": "Electrical failure", "category": "Unscheduled Downtime"},
        "value": 7.0, "updatedAt": "2025-06-11T08:00:02Z", "openStop": None, "lastProductionEnd": "2025-06-10T22:00:00Z"}


def test_unknown_codes_are_404_naming_them(api: Api) -> None:
    for path in ENDPOINTS:
        for params, named in (({"equipment": "PRESS1,PRESS9"}, "unknown equipment code 'PRESS9'"),
                              ({"site": "NOWHERE"}, "unknown site code 'NOWHERE'"),
                              ({"area": "X"}, "unknown area code 'X'"),
                              ({"workCenter": "LINE1", "equipment": "A\x00"}, "unknown equipment code 'A\\x00'"),
                              ({"workCenter": ["LINE1", "LINE7"]}, "unknown work center code 'LINE7'"),
                              ({"shift": "early"}, "unknown shift code 'early'")):
            if path == "/api/plant" and "shift" in params:
                continue  # the plant tree takes no shift
            if path.endswith("/reliability") and "shift" in params:
                continue  # a 400: reliability has no shift filter
            assert problem(api.get(path, params), 404)["detail"] == named, (path, params)


def test_bad_windows_are_400(api: Api) -> None:
    for path in ENDPOINTS[:4]:
        for params, says in (({"from": "yesterday"}, "from: expected an ISO 8601 timestamp"),
                             ({"to": "2025-13-01"}, "to: expected an ISO 8601 timestamp"),
                             ({"from": "2025-06-09T00:00:00 02:00"}, "from: expected"),  # a + not encoded
                             ({"from": "2025-06-09T00:00:00Z", "to": "2025-06-09T00:00:00Z"}, "must be before"),
                             ({"from": "2025-06-10T00:00:00Z", "to": "2025-06-09T00:00:00Z"}, "must be before"),
                             ({"from": "2000-01-01T00:00:00Z"}, "is longer than 1096 days"),  # until now
                             ({"from": "2020-01-01", "to": "2023-01-02"}, "is longer than 1096 days"),
                             ({"from": "0001-01-01T00:00:00+01:00"}, "from: out of range"),
                             ({"to": "0001-01-02T00:00:00Z"}, "too early for a default window")):
            assert says in problem(api.get(path, params), 400)["detail"], (path, params)
        ok(api.get(path, {"from": "2020-01-01", "to": "2023-01-01"}))  # three years, one leap: allowed
    body = problem(api.get(ENDPOINTS[0], {"granularity": "month"}), 400)
    assert body["errors"][0]["parameter"] == "granularity"
    problem(api.get("/api/manufacturing-metrics/oee/live", {"at": "soon"}), 400)


def test_the_default_window_is_the_7_days_before_now(api: Api) -> None:
    body = ok(api.get("/api/manufacturing-metrics/production"))
    start, end = (datetime.fromisoformat(body["dateRange"][k]) for k in ("start", "end"))
    assert end - start == timedelta(days=7)
    assert abs(end - datetime.now(UTC)) < timedelta(minutes=5)
    until = ok(api.get("/api/manufacturing-metrics/production", {"to": "2025-06-11T00:00:00Z"}))
    assert until["dateRange"] == {"start": "2025-06-04T00:00:00Z", "end": "2025-06-11T00:00:00Z"}
    assert until["summary"]["totalParts"] == 35356 + 4608 + 0  # the window before now counts too


async def test_the_endpoints_need_the_read_token_when_one_is_set(plant: Database) -> None:
    token = "read-token-0123456789abcdef"
    async with api_client(api_state(plant.dsn, environ={READ_TOKEN_ENV: token})) as client:
        for path in ENDPOINTS:
            assert (await client.get(path)).status_code == 401, path
            answer = await client.get(path, headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code == 200, (path, answer.text)


ENDPOINTS = ["/api/manufacturing-metrics/oee", "/api/manufacturing-metrics/production",
             "/api/manufacturing-metrics/downtime", "/api/manufacturing-metrics/reliability",
             "/api/manufacturing-metrics/oee/live", "/api/plant"]

PARAMETERS = ["from", "to", "site", "area", "workCenter", "equipment", "shift", "granularity", "at", "other"]
CODES = ["PLANT1", "PLANT2", "PRESSHOP", "LINE1", "SPARE", "PRESS1", "CNC1", "ROBOT1", "EARLY", "SWING"]
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=80)  # no lone surrogates: not sendable
VALUES = st.one_of(
    TEXT,
    st.sampled_from(CODES),
    st.lists(st.sampled_from(CODES), min_size=1, max_size=4).map(",".join),
    st.sampled_from(["day", "week", "shift", "", ",", " , ", "\x00", "2025-06-09", "2025-06-09T00:00:00Z",
                     "9999-12-31T23:59:59.999999-14:00", "0001-01-01", "-1", "1e309", "NaN", "2025-W24-1"]),
    st.integers().map(str),
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.datetimes().map(lambda d: d.isoformat()),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.dates().map(lambda d: d.isoformat()),
    TEXT.map(lambda t: t + "\x00" + t),
    st.text(min_size=1000, max_size=5000),
)
QUERIES = st.lists(st.tuples(st.sampled_from(PARAMETERS), VALUES), max_size=8)


@pytest.mark.parametrize("path", ENDPOINTS)
def test_fuzzed_parameters_never_make_a_5xx(api: Api, path: str) -> None:
    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow],
              database=None)
    @given(QUERIES)
    def check(query: list[tuple[str, str]]) -> None:
        response = api.get(path, query)
        assert response.status_code < 500, (query, response.text)
        if response.status_code >= 400:
            assert response.status_code in (400, 404), (query, response.text)
            problem(response, response.status_code)
        else:
            ok(response)

    check()
