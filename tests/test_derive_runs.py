"""Deriving over time: restarts in the middle of a stop, runs that cut windows anywhere, late readings, a
reason reported after the window ended, ``ingestor derive`` run twice, the daemon's task, DST.

Machine M1 (site in Europe/Berlin, shifts EARLY 06-14, LATE 14-22, NIGHT 22-06) makes 10 parts in every
running minute and reports its counter at the end of each minute (a reading counts the parts finished by then); states 1 running, 2 planned stop, 3 unplanned
stop; reason tag 1 = MECH_FAIL, 4 = SCHED_MAINT; MAT_SHORT when no reason is given; stops under 2 minutes are
micro-stops (counted as running).  All times below are local.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
import yaml
from prometheus_client import REGISTRY

from ingestor.cli import main
from ingestor.config import IngestorConfig
from ingestor.database import analytics
from ingestor.database.dimensions import sync_dimensions
from ingestor.database.schema import apply_schema, refresh_view
from ingestor.derive.engine import Deriver
from ingestor.derive.segments import to_us
from ingestor.derive.store import read_facts
from ingestor.derive.task import DerivationTask

from . import test_derive_scenario as scenario
from .conftest import REPO, Database
from .helpers import free_port, http_get, wait_until

BERLIN = ZoneInfo("Europe/Berlin")
DAY = date(2025, 6, 2)  # a Monday, no DST change
SETTLE = 61 * 1_000_000

PLANT = """
instance_id: runs
database: {{url: "{dsn}"}}
derivation: {{settle: 1m, max_segment: 15m}}
plant:
  sites:
    - code: BER
      name: Berlin
      timezone: Europe/Berlin
      shifts:
        - {{code: EARLY, name: Early, start: "06:00", end: "14:00"}}
        - {{code: LATE, name: Late, start: "14:00", end: "22:00"}}
        - {{code: NIGHT, name: Night, start: "22:00", end: "06:00"}}
      areas:
        - code: A
          name: Area
          work_centers:
            - code: W
              name: Line
              equipment:
                - code: M1
                  name: Machine 1
                  theoretical_rate: 720
                  roles:
                    part_counter: {{parameter: parts, bits: 16}}
                    state:
                      parameter: state
                      running: [1]
                      planned_stop: [2]
                      reason_parameter: reason
                      reasons: {{1: MECH_FAIL, 4: SCHED_MAINT}}
                      default_unplanned_reason: MAT_SHORT
                      default_planned_reason: SCHED_MAINT
                      micro_stop: 2m
"""


def local(hh: int, mm: int = 0, ss: int = 0, day: date = DAY) -> datetime:
    return datetime(day.year, day.month, day.day, hh, mm, ss, tzinfo=BERLIN).astimezone(UTC)


def config_for(dsn: str) -> IngestorConfig:
    return IngestorConfig.model_validate(yaml.safe_load(PLANT.format(dsn=dsn)))


def machine_readings(equipment: int, start: datetime, end: datetime,
                     stops: Iterable[tuple[datetime, datetime, float, float | None, datetime | None]]
                     ) -> list[tuple[Any, ...]]:
    """M1's readings from ``start`` to ``end``: ``stops`` are (from, to, state, reason, when the reason is
    reported: None = at the stop's start)."""
    stops = list(stops)
    rows: list[tuple[Any, ...]] = [(equipment, start, "parts", 0.0, None, 0),
                                   (equipment, start, "state", 1.0, None, 0)]
    for begin, finish, state, reason, said in stops:
        rows.append((equipment, begin, "state", state, None, 0))
        rows.append((equipment, finish, "state", 1.0, None, 0))
        if reason is not None:
            rows.append((equipment, said or begin, "reason", reason, None, 0))
            rows.append((equipment, finish, "reason", 0.0, None, 0))
    parts, moment = 0, start
    while moment < end:
        if not any(b <= moment < f for b, f, *_ in stops):
            parts = (parts + 10) % 65_536
        moment += timedelta(minutes=1)
        rows.append((equipment, moment, "parts", float(parts), None, 0))  # the minute's parts, at its end
    return rows


async def insert(conn: asyncpg.Connection, rows: list[tuple[Any, ...]]) -> None:
    await conn.copy_records_to_table("fact_sensor_event", records=rows, columns=[
        "equipment_id", "event_ts", "parameter", "value", "unit_id", "quality"])


async def clear(conn: asyncpg.Connection, readings: bool = True) -> None:
    await conn.execute("DELETE FROM fact_downtime; DELETE FROM fact_scrap; DELETE FROM fact_production; "
                       "DELETE FROM derive_stop; DELETE FROM derive_equipment; DELETE FROM derive_watermark; "
                       "DELETE FROM live_equipment_state")
    if readings:
        await conn.execute("DELETE FROM fact_sensor_event")


@pytest.fixture
async def conn(database: Database) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database.dsn)
    try:
        await apply_schema(connection)
        await clear(connection)
        yield connection
    finally:
        await connection.close()


async def prepared(conn: asyncpg.Connection, dsn: str, instance: str = "runs") -> tuple[Deriver, int]:
    config = config_for(dsn)
    keys = await sync_dimensions(conn, config.plant)
    deriver = Deriver(config.plant, config.derivation, instance)
    await deriver.prepare(conn)
    return deriver, keys.equipment["M1"]


async def downtime(conn: asyncpg.Connection) -> list[tuple[datetime, datetime, str]]:
    return [(r["start_time"], r["end_time"], r["reason_code"]) for r in await conn.fetch(
        "SELECT d.start_time, d.end_time, r.reason_code FROM fact_downtime d JOIN dim_downtime_reason r "
        "USING (reason_id) ORDER BY d.start_time")]


async def operating_minutes(conn: asyncpg.Connection) -> float:
    return float(await conn.fetchval("SELECT coalesce(sum(operating_time), 0) FROM fact_production")) / 60_000


# ---------------------------------------------------------------------------------------------------------
# Restarts and windows
# ---------------------------------------------------------------------------------------------------------

async def test_a_restart_in_the_middle_of_a_stop_gives_one_downtime_row(conn: asyncpg.Connection,
                                                                       database: Database) -> None:
    deriver, m1 = await prepared(conn, database.dsn)
    await insert(conn, machine_readings(m1, local(6), local(10), [(local(8, 5), local(8, 40), 3, 1, None)]))
    await deriver.run_once(conn, to_us(local(8, 20)) + SETTLE)  # derives up to 08:15, the stop is going on
    assert await downtime(conn) == []
    stop = await conn.fetchrow("SELECT start_time, end_time, open_at FROM derive_stop")
    assert (stop["start_time"], stop["end_time"], stop["open_at"]) == (local(8, 5), None, local(8, 15))
    assert await operating_minutes(conn) == 135 - 10  # 06:00-08:15, stopped since 08:05

    restarted, _ = await prepared(conn, database.dsn)  # the daemon restarts
    await restarted.run_once(conn, to_us(local(9, 1)) + SETTLE)
    assert await downtime(conn) == [(local(8, 5), local(8, 40), "MECH_FAIL")]
    await restarted.run_once(conn, to_us(local(10)) + SETTLE)
    assert await downtime(conn) == [(local(8, 5), local(8, 40), "MECH_FAIL")]
    assert await operating_minutes(conn) == 240 - 35


async def test_runs_cut_anywhere_give_the_facts_of_one_derivation(database: Database) -> None:
    """The three-day scenario derived in one go, and again by a daemon that runs every 47 minutes and
    restarts every fifth run: the same facts, column for column."""
    conn = await asyncpg.connect(database.dsn)
    try:
        await apply_schema(conn)
        await clear(conn)
        config = IngestorConfig.model_validate(scenario.CONFIG)
        keys = await sync_dimensions(conn, config.plant)
        ids = [keys.equipment[c] for c in ("PRESS", "CNC", "ROBOT")]
        await insert(conn, scenario.readings({c: keys.equipment[c] for c in ("PRESS", "CNC", "ROBOT")}))
        end = to_us(scenario.END) + SETTLE
        once = Deriver(config.plant, config.derivation, "once")
        await once.prepare(conn)
        await once.derive_range(conn, to_us(scenario.KOCHI_START) - 3600 * 10**6, end, now_us=end)
        expected = await read_facts(conn, ids)
        assert len(expected[0]) == 145 + 145 + 96 and len(expected[1]) == len(scenario.EXPECTED_DOWNTIME)

        await clear(conn, readings=False)
        now, step = to_us(scenario.KOCHI_START), 47 * 60 * 10**6
        deriver: Deriver | None = None
        for run in range(10_000):
            if run % 5 == 0:
                deriver = Deriver(config.plant, config.derivation, "daemon")
                await deriver.prepare(conn)
            assert deriver is not None
            now = min(now + step, end)
            while (await deriver.run_once(conn, now)).behind:
                pass
            if now == end:
                break
        assert await read_facts(conn, ids) == expected
    finally:
        await conn.close()


async def test_a_reason_reported_after_the_window_ended_still_counts(conn: asyncpg.Connection,
                                                                    database: Database) -> None:
    """The stop (state 3, unplanned) begins 5 s before a window ends; its reason, SCHED_MAINT (which is not
    planned production time), comes 8 s after it began, in the next window.  Until then the stop is a loss
    (MAT_SHORT, the default); the next run goes back to the stop's cell and corrects that."""
    deriver, m1 = await prepared(conn, database.dsn)
    await insert(conn, machine_readings(m1, local(6), local(11), [
        (local(10, 14, 55), local(10, 30), 3, 4, local(10, 15, 3))]))
    await deriver.run_once(conn, to_us(local(10, 15, 30)) + SETTLE)
    assert float(await conn.fetchval("SELECT sum(planned_production_time) FROM fact_production")) / 1000 == (
        4 * 3600 + 15 * 60)  # not yet known to be planned time
    await deriver.run_once(conn, to_us(local(11)) + SETTLE)
    assert await downtime(conn) == [(local(10, 14, 55), local(10, 30), "SCHED_MAINT")]
    planned = await conn.fetchval("SELECT sum(planned_production_time) FROM fact_production")
    operating = await conn.fetchval("SELECT sum(operating_time) FROM fact_production")
    assert planned == operating == (5 * 3600 - (15 * 60 + 5)) * 1000


async def test_a_micro_stop_cut_by_a_window_is_still_a_micro_stop(conn: asyncpg.Connection,
                                                                  database: Database) -> None:
    deriver, m1 = await prepared(conn, database.dsn)
    await insert(conn, machine_readings(m1, local(6), local(7), [(local(6, 14, 30), local(6, 15, 30), 3, None, None)]))
    await deriver.run_once(conn, to_us(local(6, 15, 10)) + SETTLE)
    assert await operating_minutes(conn) == 14.5  # a stop so far
    await deriver.run_once(conn, to_us(local(7)) + SETTLE)
    assert await downtime(conn) == []
    assert await operating_minutes(conn) == 60  # a micro-stop runs


# ---------------------------------------------------------------------------------------------------------
# Late readings
# ---------------------------------------------------------------------------------------------------------

async def test_late_readings_are_derived_again(conn: asyncpg.Connection, database: Database) -> None:
    """A spool backlog arrives two hours late: the stop it holds replaces what the facts said."""
    deriver, m1 = await prepared(conn, database.dsn)
    await insert(conn, machine_readings(m1, local(6), local(12), []))
    await deriver.run_once(conn, to_us(local(12)) + SETTLE)
    assert await operating_minutes(conn) == 360 and await downtime(conn) == []
    before = await conn.fetch("SELECT production_id, start_time FROM fact_production ORDER BY start_time")

    await insert(conn, [(m1, local(9, 50), "state", 3.0, None, 0), (m1, local(10, 20), "state", 1.0, None, 0),
                        (m1, local(9, 50), "reason", 1.0, None, 0)])
    report = await deriver.run_once(conn, to_us(local(12)) + SETTLE)
    assert report.changed
    assert await downtime(conn) == [(local(9, 50), local(10, 20), "MECH_FAIL")]
    assert await operating_minutes(conn) == 330
    after = await conn.fetch("SELECT production_id, start_time FROM fact_production ORDER BY start_time")
    assert [tuple(r) for r in after] == [tuple(r) for r in before]  # rows updated in place, ids kept

    derived = await read_facts(conn, [m1])
    await clear(conn, readings=False)
    fresh, _ = await prepared(conn, database.dsn, "fresh")
    await fresh.derive_range(conn, to_us(local(0)), to_us(local(12)), now_us=to_us(local(12)) + SETTLE)
    assert await read_facts(conn, [m1]) == derived


async def parts_per_segment(conn: asyncpg.Connection) -> dict[datetime, int]:
    return {r["start_time"]: r["total_parts_produced"] for r in await conn.fetch(
        "SELECT start_time, total_parts_produced FROM fact_production ORDER BY start_time")}


async def test_a_counter_reading_on_a_boundary_counts_in_the_segment_that_ends_there(conn: asyncpg.Connection,
                                                                                     database: Database) -> None:
    """A counter reading shows the parts finished by its instant: one taken exactly where a segment (or a
    shift: NIGHT ends at 06:00) ends belongs to the segment that ends there, (start, end].  Hand-computed:
    05:30 0 (the baseline), 05:45 5, 06:00 12, 06:07 20, 06:15 30, 06:30 31 give 05:30-05:45: 5,
    05:45-06:00: 7, 06:00-06:15: 8 + 10, 06:15-06:30: 1, 06:30-06:45: 0.  Checked three ways: the reading at
    06:00 arriving after the window ending there was derived (a late reading on the boundary must re-derive
    the segment before it), a daemon whose window ends at 06:00 with the reading there, and one range."""
    deriver, m1 = await prepared(conn, database.dsn)
    counts = [(local(5, 30), 0.0), (local(5, 45), 5.0), (local(6), 12.0), (local(6, 7), 20.0), (local(6, 15), 30.0),
              (local(6, 30), 31.0)]
    rows = [(m1, local(5, 30), "state", 1.0, None, 0), *((m1, t, "parts", v, None, 0) for t, v in counts)]
    expected = {local(5, 30): 5, local(5, 45): 7, local(6): 18, local(6, 15): 1, local(6, 30): 0}

    await insert(conn, [r for r in rows if r[1] < local(6)])
    await deriver.run_once(conn, to_us(local(6)) + SETTLE)  # derives up to 06:00, before the 06:00 reading came
    await insert(conn, [r for r in rows if r[1] >= local(6)])
    await deriver.run_once(conn, to_us(local(6, 45)) + SETTLE)
    assert await parts_per_segment(conn) == expected

    await clear(conn, readings=False)
    daemon, _ = await prepared(conn, database.dsn, "boundary")
    await daemon.run_once(conn, to_us(local(6)) + SETTLE)  # a window that ends at 06:00, the reading there
    assert (await parts_per_segment(conn))[local(5, 45)] == 7
    await daemon.run_once(conn, to_us(local(6, 45)) + SETTLE)
    assert await parts_per_segment(conn) == expected

    await clear(conn, readings=False)
    once, _ = await prepared(conn, database.dsn, "once")
    await once.derive_range(conn, to_us(local(5)), to_us(local(6, 45)), now_us=to_us(local(6, 45)) + SETTLE)
    assert await parts_per_segment(conn) == expected


async def test_a_reference_to_a_vanished_segment_moves_to_its_successor(conn: asyncpg.Connection,
                                                                        database: Database) -> None:
    """Scrap recorded against a production record whose segment disappears (a product change arrived late and
    moved its start) is moved to the record now covering that instant, not left to block the derivation."""
    deriver, m1 = await prepared(conn, database.dsn)
    await insert(conn, machine_readings(m1, local(6), local(7), []))
    await deriver.run_once(conn, to_us(local(7)) + SETTLE)
    production_id = await conn.fetchval("SELECT production_id FROM fact_production WHERE start_time = $1",
                                        local(6, 15))
    await conn.execute("INSERT INTO fact_scrap (production_id, equipment_id, scrap_code, scrap_qty) "
                       "VALUES ($1, $2, 'SC-1', 3)", production_id, m1)
    await conn.execute("UPDATE fact_production SET start_time = start_time + interval '1 minute' "
                       "WHERE production_id = $1", production_id)  # a segment the derivation no longer makes
    await deriver.derive_range(conn, to_us(local(6)), to_us(local(7)), now_us=to_us(local(7)) + SETTLE)
    moved = await conn.fetchval("SELECT p.start_time FROM fact_scrap s JOIN fact_production p USING (production_id)")
    assert moved == local(6, 15)


# ---------------------------------------------------------------------------------------------------------
# A breakdown still going
# ---------------------------------------------------------------------------------------------------------

async def reliability_of(conn: asyncpg.Connection, m1: int) -> asyncpg.Record:
    await refresh_view(conn, "view_reliability_summary")
    return await conn.fetchrow("SELECT * FROM view_reliability_summary WHERE equipment_id = $1", m1)


async def test_a_breakdown_in_progress_is_a_failure(conn: asyncpg.Connection, database: Database) -> None:
    """M1 ran from three hours ago, failed for 30 minutes (MECH_FAIL), and broke down again an hour ago; its
    data ends there (it is still down).  The open breakdown is a failure with its repair time so far (an hour
    until the view's refresh), in the view, the API and the plant tree; MTTR is the mean of the restored
    failures only.  Then the live state says it restarted 20 minutes ago: the repair took 40 minutes, before
    and after the derivation writes its downtime row (never counted twice, never dropped)."""
    deriver, m1 = await prepared(conn, database.dsn)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    broke = now - timedelta(minutes=60)
    await insert(conn, machine_readings(m1, now - timedelta(hours=3), broke, [
        (now - timedelta(minutes=150), now - timedelta(minutes=120), 3, 1, None)]))
    await insert(conn, [(m1, broke, "state", 3.0, None, 0), (m1, broke, "reason", 1.0, None, 0)])
    await deriver.run_once(conn, to_us(now))
    assert await downtime(conn) == [(now - timedelta(minutes=150), now - timedelta(minutes=120), "MECH_FAIL")]

    row = await reliability_of(conn, m1)
    so_far = (row["window_end"] - broke) / timedelta(hours=1)
    assert row["failure_count"] == 2
    assert row["open_failure_count"] == 1
    assert float(row["open_failure_hours"]) == pytest.approx(so_far)
    assert float(row["total_failure_hours"]) == pytest.approx(0.5 + so_far)
    assert float(row["mttr_hours"]) == pytest.approx(0.5)  # the restored failure only
    assert float(row["mtbf_hours"]) == pytest.approx(float(row["operating_hours"]) / 2)

    window = analytics.Window(now - timedelta(days=1), now + timedelta(minutes=1))
    (api,) = await analytics.reliability(conn, window, analytics.PlantScope(equipment=("M1",)))
    assert (api.failures, api.open_failures, api.mttr_hours) == (2, 1, pytest.approx(0.5))
    assert api.open_failure_hours == pytest.approx((datetime.now(UTC) - broke) / timedelta(hours=1), abs=0.01)
    (site,) = await analytics.plant(conn, analytics.PlantScope(equipment=("M1",)))
    status = site.areas[0].work_centers[0].equipment[0].status
    assert (status.state, status.since) == ("stopped", broke)  # the derivation's open stop: no live state yet

    restarted = now - timedelta(minutes=20)
    await insert(conn, [(m1, restarted, "state", 1.0, None, 0), (m1, restarted, "reason", 0.0, None, 0)])
    await conn.execute("INSERT INTO live_equipment_state (equipment_id, state, since, state_value) "
                       "VALUES ($1, 'running', $2, 1)", m1, restarted)
    for derived in (False, True):  # the live state knows first, the derivation follows
        row = await reliability_of(conn, m1)
        assert (row["failure_count"], row["open_failure_count"]) == (2, 0), derived
        assert float(row["total_failure_hours"]) == pytest.approx(0.5 + 40 / 60), derived
        assert float(row["mttr_hours"]) == pytest.approx((0.5 + 40 / 60) / 2), derived
        await deriver.run_once(conn, to_us(now))
    assert await downtime(conn) == [(now - timedelta(minutes=150), now - timedelta(minutes=120), "MECH_FAIL"),
                                    (broke, restarted, "MECH_FAIL")]


# ---------------------------------------------------------------------------------------------------------
# ingestor derive, the daemon's task, DST
# ---------------------------------------------------------------------------------------------------------

def run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


async def test_ingestor_derive_twice_gives_the_same_facts(conn: asyncpg.Connection, database: Database,
                                                         tmp_path: Path) -> None:
    _, m1 = await prepared(conn, database.dsn)
    await insert(conn, machine_readings(m1, local(6), local(14), [(local(9), local(9, 30), 3, 1, None),
                                                                  (local(12), local(12, 20), 2, None, None)]))
    path = tmp_path / "config.yaml"
    path.write_text(PLANT.format(dsn=database.dsn))
    argv = ("derive", "--from", "2025-06-02T06:00+02:00", "--to", "2025-06-02T14:00+02:00", "-c", str(path))
    code, first = await asyncio.to_thread(run_cli, *argv)
    assert code == 0, first
    assert "fact_production: 32 inserted, 0 updated, 0 deleted" in first
    assert "fact_downtime:   2 inserted" in first
    facts = await read_facts(conn, [m1])
    code, second = await asyncio.to_thread(run_cli, *argv)
    assert code == 0
    assert "fact_production: 0 inserted, 0 updated, 0 deleted" in second
    assert "fact_downtime:   0 inserted, 0 updated, 0 deleted" in second
    assert await read_facts(conn, [m1]) == facts
    assert await downtime(conn) == [(local(9), local(9, 30), "MECH_FAIL"), (local(12), local(12, 20), "SCHED_MAINT")]
    code, _ = await asyncio.to_thread(run_cli, "derive", "--from", "2025-06-02", "--to", "2025-06-01", "-c", str(path))
    assert code == 2


async def test_the_daemon_task_derives_and_exports_data_quality(conn: asyncpg.Connection,
                                                                database: Database) -> None:
    _, m1 = await prepared(conn, database.dsn)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    await insert(conn, machine_readings(m1, now - timedelta(hours=2), now, [
        (now - timedelta(minutes=90), now - timedelta(minutes=80), 3, 1, None)]))
    config = IngestorConfig.model_validate(
        {**yaml.safe_load(PLANT.format(dsn=database.dsn)),
         "derivation": {"interval": "200ms", "settle": "0s", "check_data_quality": "200ms"}})
    ready = asyncio.Event()
    ready.set()
    task = DerivationTask(config.plant, config.derivation, config.database, config.instance_id, database.dsn, ready)
    running = asyncio.create_task(task.run())
    try:
        async def derived() -> bool:
            return bool(await conn.fetchval("SELECT count(*) FROM fact_downtime")) and task.runs >= 2
        deadline = asyncio.get_running_loop().time() + 30
        while not await derived():
            assert asyncio.get_running_loop().time() < deadline, "the task derived nothing in 30 s"
            await asyncio.sleep(0.1)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert await downtime(conn) == [(now - timedelta(minutes=90), now - timedelta(minutes=80), "MECH_FAIL")]
    assert REGISTRY.get_sample_value("ingestor_derive_runs_total", {"result": "ok"}) >= 2
    assert REGISTRY.get_sample_value("ingestor_data_quality_check_passed", {"check": "overlapping_downtime"}) == 1.0
    assert await conn.fetchval("SELECT count(*) FROM view_oee_daily") > 0  # refreshed after the change


async def test_a_night_shift_across_the_spring_dst_change_is_seven_hours(conn: asyncpg.Connection,
                                                                        database: Database) -> None:
    _, m1 = await prepared(conn, database.dsn)
    saturday = date(2025, 3, 29)  # the clocks go forward on Sunday 30 March at 02:00
    start, end = local(22, day=saturday), local(6, day=date(2025, 3, 30))
    await insert(conn, machine_readings(m1, start, end, []))
    deriver, _ = await prepared(conn, database.dsn)
    await deriver.derive_range(conn, to_us(start), to_us(end), now_us=to_us(end) + SETTLE)
    rows = await conn.fetch("SELECT date_id, sum(planned_production_time) AS planned, sum(total_parts_produced) "
                            "AS parts, count(*) AS n FROM fact_production GROUP BY date_id")
    assert [(r["date_id"], r["planned"], r["parts"], r["n"]) for r in rows] == [(20250329, 7 * 3_600_000, 7 * 600, 28)]
    assert end - start == timedelta(hours=7)


DAEMON = PLANT + """
derivation: {{interval: 200ms, settle: 0s, check_data_quality: 200ms}}
connectors:
  - type: generate
    name: gen
    interval: 100ms
    tags:
      - {{equipment: M1, parameter: state, unit: state, signal: cycle, values: [1, 3], period: 2s}}
      - {{equipment: M1, parameter: parts, unit: pcs, signal: counter, rate: 5}}
pipeline: {{batch_age: 200ms, spool_dir: "{spool}"}}
http: {{listen: "127.0.0.1:{port}"}}
logging: {{format: json}}
"""


def test_the_daemon_derives_history_and_exports_data_quality(database: Database, tmp_path: Path) -> None:
    """`ingestor run` with readings of yesterday's early shift already in the database: the daemon derives them
    (and everything since) and exports the data-quality checks."""
    async def history() -> None:
        conn = await asyncpg.connect(database.dsn)
        try:
            await apply_schema(conn)
            await clear(conn)
            _, m1 = await prepared(conn, database.dsn)
            yesterday = datetime.now(BERLIN).date() - timedelta(days=1)
            await insert(conn, machine_readings(m1, local(6, day=yesterday), local(14, day=yesterday),
                                                [(local(9, day=yesterday), local(9, 30, day=yesterday), 3, 1, None)]))
        finally:
            await conn.close()

    async def count(sql: str) -> int:
        conn = await asyncpg.connect(database.dsn)
        try:
            return int(await conn.fetchval(sql))
        finally:
            await conn.close()

    asyncio.run(history())
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(DAEMON.format(dsn=database.dsn, port=port, spool=tmp_path / "spool").replace(
        "derivation: {settle: 1m, max_segment: 15m}\n", ""))
    env = {k: v for k, v in os.environ.items() if k != "INGESTOR_DATABASE_URL"}
    log_path = tmp_path / "daemon.log"
    with log_path.open("w") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "ingestor", "run", "-c", str(config)], cwd=REPO, env=env,
                                   stdout=log_file, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: asyncio.run(count(
            "SELECT count(*) FROM fact_downtime d JOIN dim_downtime_reason r USING (reason_id) "
            "WHERE r.reason_code = 'MECH_FAIL' AND d.end_time - d.start_time = interval '30 minutes'")) == 1,
            60, "yesterday's breakdown in fact_downtime")
        metrics = wait_until(lambda: (lambda m: m if 'ingestor_data_quality_check_passed{check="overlapping_downtime"} 1.0'
                                      in m else "")(http_get(f"http://127.0.0.1:{port}/metrics")[1]),
                             30, "data-quality metrics")
        assert 'ingestor_derive_runs_total{result="ok"}' in metrics
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    assert any(line["event"] == "derivation ready" for line in lines)
    assert not [line for line in lines if line.get("level") == "error"], log_path.read_text()
