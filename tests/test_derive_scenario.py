"""Three days of three machines, derived from synthetic readings, against numbers worked out by hand.

The plant (dates are local; D0 is four days before today, so the reliability view's 90-day window holds it):

* Site KOCHI (Asia/Kolkata, UTC+05:30, no DST) works round the clock: DAY 06:00-18:00 and NIGHT 18:00-06:00.
  A NIGHT shift belongs to the day it starts on.
* Site UTC (UTC) works EARLY 06:00-14:00 and LATE 14:00-22:00; 22:00-06:00 is not scheduled.
* Segments are at most 30 minutes.

How the machines behave.  Each machine makes its parts in every minute in which it is running, and reports
its counters at the end of each minute (a counter reading counts the parts finished by its instant, so the
reading at a shift's end belongs to that shift); it reports its state on every change and again every five
minutes.  So the parts of a shift are (parts per minute) x (minutes running in the shift).

PRESS (KOCHI) makes 10 parts a minute, 9 of them good.  Its 16-bit part counter starts at 65 000 and wraps in
the first hour; the 16-bit good counter starts at 64 000 and wraps too.  It makes product P1 (ideal cycle
4 s) until D1 10:10, then P2 (5 s).  States: 1 running, 2 planned stop, 3 unplanned stop; a reason tag
(1 MECH_FAIL, 2 ELEC_FAIL, 3 TOOL_CHANGE, 5 SCHED_MAINT; 0 when running; MAT_SHORT when none is given).
  E1  D0 09:00-09:30  state 3, reason 1 reported 3 s after the stop began     MECH_FAIL, a failure
  E2  D0 12:00-13:00  state 2, reason 5                                        SCHED_MAINT: not in planned time
  E3  D0 17:30-18:30  state 3, reason 2 set 2 s before the stop, across the shift change: ELEC_FAIL, one row
  E4  D1 23:50-D2 00:20  state 3, reason 1, across midnight in D1's NIGHT    MECH_FAIL
  E5  D2 10:00-10:20  state 2, reason 3                                        TOOL_CHANGE: planned but a loss
  E6  D2 14:00-14:01  state 3, no reason                                       MAT_SHORT (the default)

CNC (KOCHI) makes 2 parts a minute, one of them scrap (a 32-bit scrap counter), ideal cycle 20 s (its
theoretical rate of 180/h; it reports no product).  Its state value is its reason (10 MECH_FAIL, 11 NO_OPER;
4 is a planned stop, SCHED_MAINT by default).  Stops shorter than 2 minutes are micro-stops, counted as
running.  Its order number is 4711, then 4712 from D1 18:00, then 4713 from D2 09:35.
  C1  D0 07:00-07:01  state 10: a micro-stop (running time without parts; no downtime row)
  C2  D0 08:00-08:45  state 10                                                  MECH_FAIL, a failure
  C3  D1 02:00-04:00  state 11 (D0's NIGHT)                                     NO_OPER
  C4  D1 12:00-12:10  state 4                                                   SCHED_MAINT, not in planned time
  and at D1 14:00 the PLC resets its part counter (the reading at 14:01 shows 2: parts since the reset).

ROBOT (UTC) makes 5 parts a minute, all good, ideal cycle 10 s (theoretical rate 360/h), a 64-bit counter at
10**12.  It stops (state 0, no reason: NO_OPER by default) at 21:30 every day and starts again at 06:10 the
next morning; only the scheduled parts count: 21:30-22:00 and 06:00-06:10 are two downtime rows.  On D0 it
starts at 06:00.
  R1  D1 10:00-11:00  state 7                                                   ELEC_FAIL, a failure
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
import yaml
from prometheus_client import REGISTRY

from ingestor.config import IngestorConfig
from ingestor.database.dimensions import sync_dimensions
from ingestor.database.schema import apply_schema, refresh_view
from ingestor.derive.engine import Deriver
from ingestor.derive.segments import to_us
from ingestor.derive.store import read_facts
from ingestor.derive.task import export_data_quality

from .conftest import Database

D0 = datetime.now(UTC).date() - timedelta(days=4)
IST = ZoneInfo("Asia/Kolkata")
MINUTE = timedelta(minutes=1)

CONFIG = yaml.safe_load("""
instance_id: scenario
derivation: {max_segment: 30m}
plant:
  sites:
    - code: KOCHI
      name: Kochi
      timezone: Asia/Kolkata
      shifts:
        - {code: DAY, name: Day, start: "06:00", end: "18:00"}
        - {code: NIGHT, name: Night, start: "18:00", end: "06:00"}
      areas:
        - code: KA
          name: Shop
          work_centers:
            - code: KW
              name: Line
              equipment:
                - code: PRESS
                  name: Press
                  theoretical_rate: 720
                  roles:
                    part_counter: {parameter: parts, bits: 16}
                    good_counter: {parameter: good, bits: 16}
                    state:
                      parameter: state
                      running: [1]
                      planned_stop: [2]
                      reason_parameter: reason
                      reasons: {1: MECH_FAIL, 2: ELEC_FAIL, 3: TOOL_CHANGE, 5: SCHED_MAINT}
                      default_unplanned_reason: MAT_SHORT
                      default_planned_reason: SCHED_MAINT
                    product:
                      parameter: product
                      codes: {1: P1, 2: P2}
                - code: CNC
                  name: CNC
                  theoretical_rate: 180
                  roles:
                    part_counter: {parameter: parts, bits: 32}
                    scrap_counter: {parameter: scrap, bits: 32}
                    state:
                      parameter: state
                      running: [1]
                      planned_stop: [4]
                      reasons: {10: MECH_FAIL, 11: NO_OPER}
                      default_unplanned_reason: MECH_FAIL
                      default_planned_reason: SCHED_MAINT
                      micro_stop: 2m
                    order_number: order
    - code: UTC
      name: UTC site
      timezone: UTC
      shifts:
        - {code: EARLY, name: Early, start: "06:00", end: "14:00"}
        - {code: LATE, name: Late, start: "14:00", end: "22:00"}
      areas:
        - code: UA
          name: Cell
          work_centers:
            - code: UW
              name: Cell
              equipment:
                - code: ROBOT
                  name: Robot
                  theoretical_rate: 360
                  roles:
                    part_counter: {parameter: parts, bits: 64}
                    state:
                      parameter: state
                      running: [1]
                      reasons: {7: ELEC_FAIL}
                      default_unplanned_reason: NO_OPER
  products:
    - {code: P1, name: Part 1, target_cycle_time: 4s}
    - {code: P2, name: Part 2, target_cycle_time: 5s}
""")


def at(day: int, hh: int, mm: int = 0, zone: ZoneInfo | None = IST, ss: int = 0) -> datetime:
    """Local time on day D0 + ``day`` at a site (KOCHI unless zone=None for UTC), as an aware instant."""
    wall = datetime.combine(D0 + timedelta(days=day), datetime.min.time()).replace(hour=hh, minute=mm, second=ss)
    return wall.replace(tzinfo=zone or UTC).astimezone(UTC)


@dataclass(frozen=True)
class StopEvent:
    start: datetime
    end: datetime
    state: float
    reason: float | None = None
    reason_offset_s: int = 0


PRESS_STOPS = [
    StopEvent(at(0, 9), at(0, 9, 30), 3, 1, reason_offset_s=3),
    StopEvent(at(0, 12), at(0, 13), 2, 5),
    StopEvent(at(0, 17, 30), at(0, 18, 30), 3, 2, reason_offset_s=-2),
    StopEvent(at(1, 23, 50), at(2, 0, 20), 3, 1),
    StopEvent(at(2, 10), at(2, 10, 20), 2, 3),
    StopEvent(at(2, 14), at(2, 14, 1), 3, None),
]
CNC_STOPS = [
    StopEvent(at(0, 7), at(0, 7, 1), 10),
    StopEvent(at(0, 8), at(0, 8, 45), 10),
    StopEvent(at(1, 2), at(1, 4), 11),
    StopEvent(at(1, 12), at(1, 12, 10), 4),
]
ROBOT_STOPS = [StopEvent(at(d, 21, 30, None), at(d + 1, 6, 10, None), 0) for d in range(3)] + [
    StopEvent(at(1, 10, zone=None), at(1, 11, zone=None), 7)]

KOCHI_START, KOCHI_END = at(0, 6), at(3, 6)
ROBOT_START, ROBOT_END = at(0, 6, zone=None), at(2, 22, zone=None)
END = KOCHI_END  # the derivation runs up to here


def state_at(stops: list[StopEvent], moment: datetime) -> float:
    return next((s.state for s in stops if s.start <= moment < s.end), 1.0)


def minutes(start: datetime, end: datetime) -> Iterator[datetime]:
    moment = start
    while moment < end:
        yield moment
        moment += timedelta(minutes=1)


def readings(ids: dict[str, int]) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []

    def add(machine: str, moment: datetime, parameter: str, value: float) -> None:
        rows.append((ids[machine], moment, parameter, float(value), None, 0))

    def states(machine: str, stops: list[StopEvent], start: datetime, end: datetime) -> None:
        changes = {start} | {s.start for s in stops} | {s.end for s in stops if s.end < end}
        repeats = set(list(minutes(start, end))[::5])
        for moment in sorted(changes | repeats):
            if moment < end:
                add(machine, moment, "state", state_at(stops, moment))

    # PRESS
    states("PRESS", PRESS_STOPS, KOCHI_START, KOCHI_END)
    for stop in PRESS_STOPS:
        if stop.reason is not None:
            add("PRESS", stop.start + timedelta(seconds=stop.reason_offset_s), "reason", stop.reason)
        add("PRESS", stop.end, "reason", 0)
    parts, good = 65_000, 64_000
    add("PRESS", KOCHI_START, "parts", parts)
    add("PRESS", KOCHI_START, "good", good)
    for moment in minutes(KOCHI_START, KOCHI_END):
        if state_at(PRESS_STOPS, moment) == 1:
            parts, good = (parts + 10) % 65_536, (good + 9) % 65_536
        add("PRESS", moment + MINUTE, "parts", parts)  # the minute's parts, at its end
        add("PRESS", moment + MINUTE, "good", good)
        if moment.minute % 5 == 0:
            add("PRESS", moment, "product", 1 if moment < at(1, 10, 10) else 2)

    # CNC
    states("CNC", CNC_STOPS, KOCHI_START, KOCHI_END)
    parts, scrap = 1_000_000, 0
    add("CNC", KOCHI_START, "parts", parts)
    add("CNC", KOCHI_START, "scrap", scrap)
    for moment in minutes(KOCHI_START, KOCHI_END):
        if moment == at(1, 14):
            parts = 0  # the PLC resets its counter
        if state_at(CNC_STOPS, moment) == 1:
            parts, scrap = parts + 2, scrap + 1
        add("CNC", moment + MINUTE, "parts", parts)
        add("CNC", moment + MINUTE, "scrap", scrap)
        if moment.minute % 5 == 0:
            add("CNC", moment, "order", 4711 if moment < at(1, 18) else 4712 if moment < at(2, 9, 35) else 4713)

    # ROBOT
    states("ROBOT", ROBOT_STOPS, ROBOT_START, ROBOT_END)
    parts = 10**12
    add("ROBOT", ROBOT_START, "parts", parts)
    for moment in minutes(ROBOT_START, ROBOT_END):
        if state_at(ROBOT_STOPS, moment) == 1:
            parts += 5
        add("ROBOT", moment + MINUTE, "parts", parts)
    return rows


# What the shifts should come to, worked out from the story above (minutes, parts, ideal seconds):
# (machine, day, shift, planned min, operating min, parts, good, ideal seconds of the parts made)
EXPECTED = [
    # PRESS: 720-minute shifts; parts = 10 x running minutes, good = 9 x; ideal 4 s (P1) or 5 s (P2) a part
    ("PRESS", 0, "DAY", 660, 600, 6000, 5400, 24_000),   # E2 out of planned time; E1 30 + E3 30 lost
    ("PRESS", 0, "NIGHT", 720, 690, 6900, 6210, 27_600),  # E3's second half, 30 lost
    ("PRESS", 1, "DAY", 720, 720, 7200, 6480, 33_500),    # 250 min of P1 (2500 x 4 s) + 470 of P2 (4700 x 5 s)
    ("PRESS", 1, "NIGHT", 720, 690, 6900, 6210, 34_500),  # E4 across midnight, 30 lost
    ("PRESS", 2, "DAY", 720, 699, 6990, 6291, 34_950),    # E5 20 + E6 1 lost
    ("PRESS", 2, "NIGHT", 720, 720, 7200, 6480, 36_000),
    # CNC: parts = 2 x producing minutes, half scrap, 20 s a part
    ("CNC", 0, "DAY", 720, 675, 1348, 674, 26_960),       # C2 45 lost; C1's minute runs without parts
    ("CNC", 0, "NIGHT", 720, 600, 1200, 600, 24_000),     # C3 120 lost
    ("CNC", 1, "DAY", 710, 710, 1420, 710, 28_400),       # C4 10 out of planned time; the reset loses nothing
    ("CNC", 1, "NIGHT", 720, 720, 1440, 720, 28_800),
    ("CNC", 2, "DAY", 720, 720, 1440, 720, 28_800),
    ("CNC", 2, "NIGHT", 720, 720, 1440, 720, 28_800),
    # ROBOT: 480-minute shifts, 5 parts a running minute, 10 s a part
    ("ROBOT", 0, "EARLY", 480, 480, 2400, 2400, 24_000),
    ("ROBOT", 0, "LATE", 480, 450, 2250, 2250, 22_500),   # stops at 21:30
    ("ROBOT", 1, "EARLY", 480, 410, 2050, 2050, 20_500),  # starts at 06:10; R1 60 lost
    ("ROBOT", 1, "LATE", 480, 450, 2250, 2250, 22_500),
    ("ROBOT", 2, "EARLY", 480, 470, 2350, 2350, 23_500),
    ("ROBOT", 2, "LATE", 480, 450, 2250, 2250, 22_500),
]

# (machine, start, end, reason): one row per stop, E3 and E4 not split at the shift change or midnight
EXPECTED_DOWNTIME = [
    ("PRESS", at(0, 9), at(0, 9, 30), "MECH_FAIL"),
    ("PRESS", at(0, 12), at(0, 13), "SCHED_MAINT"),
    ("PRESS", at(0, 17, 30), at(0, 18, 30), "ELEC_FAIL"),
    ("PRESS", at(1, 23, 50), at(2, 0, 20), "MECH_FAIL"),
    ("PRESS", at(2, 10), at(2, 10, 20), "TOOL_CHANGE"),
    ("PRESS", at(2, 14), at(2, 14, 1), "MAT_SHORT"),
    ("CNC", at(0, 8), at(0, 8, 45), "MECH_FAIL"),
    ("CNC", at(1, 2), at(1, 4), "NO_OPER"),
    ("CNC", at(1, 12), at(1, 12, 10), "SCHED_MAINT"),
    ("ROBOT", at(0, 21, 30, None), at(0, 22, zone=None), "NO_OPER"),
    ("ROBOT", at(1, 6, zone=None), at(1, 6, 10, None), "NO_OPER"),
    ("ROBOT", at(1, 10, zone=None), at(1, 11, zone=None), "ELEC_FAIL"),
    ("ROBOT", at(1, 21, 30, None), at(1, 22, zone=None), "NO_OPER"),
    ("ROBOT", at(2, 6, zone=None), at(2, 6, 10, None), "NO_OPER"),
    ("ROBOT", at(2, 21, 30, None), at(2, 22, zone=None), "NO_OPER"),
]

# (machine, failures, failure minutes): failures are MECH_FAIL and ELEC_FAIL stops
EXPECTED_FAILURES = {"PRESS": (3, 30 + 60 + 30), "CNC": (1, 45), "ROBOT": (1, 60)}


def date_id(day: int) -> int:
    d = D0 + timedelta(days=day)
    return d.year * 10_000 + d.month * 100 + d.day


@dataclass
class Scenario:
    dsn: str
    ids: dict[str, int]
    shifts: dict[str, int]
    reasons: dict[str, int]
    facts: tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]


@pytest.fixture(scope="module")
def scenario(database: Database) -> Scenario:
    async def build() -> Scenario:
        conn = await asyncpg.connect(database.dsn)
        try:
            await apply_schema(conn)
            config = IngestorConfig.model_validate(CONFIG)
            keys = await sync_dimensions(conn, config.plant)
            ids = {code: keys.equipment[code] for code in ("PRESS", "CNC", "ROBOT")}
            await conn.copy_records_to_table(
                "fact_sensor_event", records=readings(ids),
                columns=["equipment_id", "event_ts", "parameter", "value", "unit_id", "quality"])
            deriver = Deriver(config.plant, config.derivation, config.instance_id)
            await deriver.prepare(conn)
            now = to_us(END) + 61 * 1_000_000
            while (await deriver.run_once(conn, now)).behind:
                pass
            for view in ("view_oee_daily", "view_reliability_summary"):
                await refresh_view(conn, view)
            shifts = {code: i for (_, code), i in keys.shifts.items()}
            return Scenario(database.dsn, ids, shifts, keys.reasons, await read_facts(conn, list(ids.values())))
        finally:
            await conn.close()

    return asyncio.run(build())


async def fetch(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def test_each_shift_matches_the_hand_computed_numbers(scenario: Scenario) -> None:
    rows = await fetch(scenario.dsn, """
        SELECT equipment_id, date_id, shift_id, sum(planned_production_time) AS planned,
               sum(operating_time) AS operating, sum(total_parts_produced) AS parts, sum(good_parts) AS good,
               sum(scrap_parts) AS scrap, min(start_time) AS first_start, max(end_time) AS last_end
        FROM fact_production GROUP BY 1, 2, 3""")
    found = {(r["equipment_id"], r["date_id"], r["shift_id"]): r for r in rows}
    assert len(found) == len(EXPECTED)
    for machine, day, shift, planned, operating, parts, good, _ in EXPECTED:
        row = found[(scenario.ids[machine], date_id(day), scenario.shifts[shift])]
        what = f"{machine} D{day} {shift}"
        assert row["planned"] == planned * 60_000, what
        assert row["operating"] == operating * 60_000, what
        assert (row["parts"], row["good"], row["scrap"]) == (parts, good, parts - good), what


async def test_segments_are_cut_at_shifts_products_orders_and_30_minutes(scenario: Scenario) -> None:
    rows = await fetch(scenario.dsn, "SELECT equipment_id, start_time, end_time, shift_id, product_id, order_number "
                                     "FROM fact_production ORDER BY equipment_id, start_time")
    press = [r for r in rows if r["equipment_id"] == scenario.ids["PRESS"]]
    for a, b in pairwise(press):
        assert a["end_time"] == b["start_time"]  # round the clock: no gap, no overlap
    assert all(r["end_time"] - r["start_time"] <= timedelta(minutes=30) for r in rows)
    assert len(press) == 3 * 48 + 1  # 30-minute cells, and the product change at D1 10:10 cuts one
    before, after = (next(r for r in press if r["end_time"] == at(1, 10, 10)),
                     next(r for r in press if r["start_time"] == at(1, 10, 10)))
    assert before["start_time"] == at(1, 10) and after["end_time"] == at(1, 10, 30)
    assert before["product_id"] != after["product_id"] and after["product_id"] is not None
    cnc = [r for r in rows if r["equipment_id"] == scenario.ids["CNC"]]
    assert len(cnc) == 3 * 48 + 1  # the order change at D2 09:35 cuts one; the one at D1 18:00 is a shift change
    assert [r["order_number"] for r in cnc if at(2, 9) <= r["start_time"] < at(2, 10)] == ["4712", "4712", "4713"]
    robot = [r for r in rows if r["equipment_id"] == scenario.ids["ROBOT"]]
    assert len(robot) == 3 * 32 and min(r["start_time"] for r in robot) == ROBOT_START
    assert all(at(d, 6, zone=None) <= r["start_time"] < at(d, 22, zone=None)
               for r in robot for d in [(r["start_time"].date() - D0).days])


async def test_the_oee_view_matches(scenario: Scenario) -> None:
    rows = await fetch(scenario.dsn, "SELECT * FROM view_oee_daily")
    found = {(r["equipment_id"], r["date_id"], r["shift_id"]): r for r in rows}
    assert len(found) == len(EXPECTED)
    for machine, day, shift, planned, operating, parts, good, ideal_s in EXPECTED:
        row = found[(scenario.ids[machine], date_id(day), scenario.shifts[shift])]
        availability = operating / planned
        performance = ideal_s / (operating * 60)
        quality = good / parts
        what = f"{machine} D{day} {shift}"
        assert row["production_date"] == D0 + timedelta(days=day), what
        assert row["availability"] == pytest.approx(availability, abs=1e-9), what
        assert row["performance"] == pytest.approx(performance, abs=1e-9), what
        assert row["quality"] == pytest.approx(quality, abs=1e-9), what
        assert row["oee"] == pytest.approx(availability * performance * quality, abs=1e-9), what


async def test_one_downtime_row_per_stop_with_its_reason(scenario: Scenario) -> None:
    rows = await fetch(scenario.dsn, """
        SELECT d.equipment_id, d.start_time, d.end_time, d.downtime_duration, r.reason_code, d.is_planned,
               p.start_time AS p_start, p.end_time AS p_end
        FROM fact_downtime d JOIN dim_downtime_reason r USING (reason_id)
        LEFT JOIN fact_production p USING (production_id) ORDER BY d.equipment_id, d.start_time""")
    by_id = {v: k for k, v in scenario.ids.items()}
    found = sorted((by_id[r["equipment_id"]], r["start_time"], r["end_time"], r["reason_code"]) for r in rows)
    assert found == sorted(EXPECTED_DOWNTIME)
    for row in rows:
        assert row["downtime_duration"] == (row["end_time"] - row["start_time"]) // timedelta(milliseconds=1)
        assert row["p_start"] <= row["start_time"] < row["p_end"]  # linked to the record covering its start
        assert row["is_planned"] == (row["reason_code"] in ("SCHED_MAINT", "TOOL_CHANGE"))


async def test_the_reliability_view_matches(scenario: Scenario) -> None:
    rows = {r["equipment_code"]: r for r in await fetch(scenario.dsn, "SELECT * FROM view_reliability_summary")}
    for machine, (failures, failure_minutes) in EXPECTED_FAILURES.items():
        operating_hours = sum(e[4] for e in EXPECTED if e[0] == machine) / 60
        row = rows[machine]
        assert row["failure_count"] == failures, machine
        assert float(row["operating_hours"]) == pytest.approx(operating_hours), machine
        assert float(row["total_failure_hours"]) == pytest.approx(failure_minutes / 60), machine
        assert float(row["mtbf_hours"]) == pytest.approx(operating_hours / failures), machine
        assert float(row["mttr_hours"]) == pytest.approx(failure_minutes / 60 / failures), machine
    # by hand: PRESS ran 4119 min in 3 failures -> MTBF 22.88 h, MTTR 40 min
    assert float(rows["PRESS"]["mtbf_hours"]) == pytest.approx(4119 / 60 / 3)
    assert float(rows["PRESS"]["mttr_hours"]) == pytest.approx(2 / 3)


async def test_data_quality_checks_pass_and_are_exported(scenario: Scenario) -> None:
    conn = await asyncpg.connect(scenario.dsn)
    try:
        results = await export_data_quality(conn)
    finally:
        await conn.close()
    assert results and all(results.values()), results
    sample = REGISTRY.get_sample_value
    assert sample("ingestor_data_quality_check_passed", {"check": "overlapping_downtime"}) == 1.0
    assert sample("ingestor_data_quality_check_passed", {"check": "oee_range_check"}) == 1.0
    assert sample("ingestor_data_quality_violations", {"check": "operating_time_exceeds_planned"}) == 0.0


async def test_deriving_again_changes_nothing(scenario: Scenario) -> None:
    config = IngestorConfig.model_validate(CONFIG)
    conn = await asyncpg.connect(scenario.dsn)
    try:
        deriver = Deriver(config.plant, config.derivation, "another-instance")
        await deriver.prepare(conn)
        report, first, last = await deriver.derive_range(conn, to_us(at(0, 0)), to_us(END),
                                                         now_us=to_us(END) + 61 * 1_000_000)
        assert report.windows > 0 and not report.changed, report.writes
        assert await read_facts(conn, list(scenario.ids.values())) == scenario.facts
        assert first <= to_us(KOCHI_START) and last >= to_us(END)
    finally:
        await conn.close()


def test_the_story_is_what_the_readings_say() -> None:
    """The readings generator agrees with the story (a check of the test itself)."""
    assert date(D0.year, D0.month, D0.day) == D0
    assert state_at(PRESS_STOPS, at(0, 9, 29)) == 3 and state_at(PRESS_STOPS, at(0, 9, 30)) == 1
    assert sum(1 for m in minutes(at(0, 6), at(0, 18)) if state_at(PRESS_STOPS, m) == 1) == 600
    assert sum(1 for m in minutes(at(0, 6, zone=None), at(0, 22, zone=None)) if state_at(ROBOT_STOPS, m) == 1) == 930
