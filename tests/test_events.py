"""Live events end to end: the schema's emit_event() and NOTIFY (ordering, dedupe, retention, the maintenance
trigger), the daemon's live task on real readings (downtime as it is committed, restarts, late readings, the
shift calendar, production and quality alerts), and the WebSocket endpoint on a real uvicorn server.

Machine M1 (site in Europe/Berlin): state 1 running, 2 planned stop, 3 unplanned stop; reason tag 1 =
MECH_FAIL, 4 = SCHED_MAINT; micro-stops under 30 s.  All times below are local.
"""

from __future__ import annotations

import asyncio
import json
import socket as socket_module
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest
import websockets
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestor.api.events import EventHub
from ingestor.api.routes.events import EventPage
from ingestor.config import IngestorConfig
from ingestor.contract import ReconnectConfig
from ingestor.database.dimensions import sync_dimensions
from ingestor.database.schema import apply_schema
from ingestor.derive.engine import Deriver
from ingestor.derive.live import LiveEvents
from ingestor.derive.segments import to_us
from ingestor.derive.task import data_quality_findings

from .api_helpers import api_state, served
from .conftest import Database
from .helpers import async_wait_until
from .private_postgres import PrivatePostgres

BERLIN = ZoneInfo("Europe/Berlin")
DAY = date(2025, 6, 2)

PLANT = """
instance_id: live
database: {{url: "{dsn}"}}
derivation: {{settle: 1m, max_segment: 15m}}
events: {{production_interval: 1m, scrap_rate_alert: 0.1, scrap_alert_min_parts: 20}}
plant:
  sites:
    - code: BER
      name: Berlin
      timezone: Europe/Berlin
      shifts:
{shifts}
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
                    part_counter: {{parameter: parts, bits: 32}}
                    scrap_counter: {{parameter: scrap, bits: 32}}
                    state:
                      parameter: state
                      running: [1]
                      planned_stop: [2]
                      reason_parameter: reason
                      reasons: {{1: MECH_FAIL, 4: SCHED_MAINT}}
                      default_unplanned_reason: MAT_SHORT
                      default_planned_reason: SCHED_MAINT
                      micro_stop: 30s
                - {{code: M2, name: Machine 2}}
"""
ALL_DAY = """        - {code: EARLY, name: Early shift, start: "06:00", end: "14:00"}
        - {code: LATE, name: Late shift, start: "14:00", end: "22:00"}
        - {code: NIGHT, name: Night shift, start: "22:00", end: "06:00"}"""
NO_NIGHT = """        - {code: EARLY, name: Early shift, start: "06:00", end: "14:00"}
        - {code: LATE, name: Late shift, start: "14:00", end: "22:00"}"""

EVENT_TABLES = "api_event, live_equipment_state, live_watermark, derive_watermark, derive_equipment, derive_stop"


def local(hh: int, mm: int = 0, ss: int = 0, day: date = DAY) -> datetime:
    return datetime(day.year, day.month, day.day, hh, mm, ss, tzinfo=BERLIN).astimezone(UTC)


def config_for(dsn: str, shifts: str = ALL_DAY) -> IngestorConfig:
    return IngestorConfig.model_validate(yaml.safe_load(PLANT.format(dsn=dsn, shifts=shifts)))


async def insert(conn: asyncpg.Connection, rows: list[tuple[Any, ...]]) -> None:
    await conn.copy_records_to_table("fact_sensor_event", records=rows, columns=[
        "equipment_id", "event_ts", "parameter", "value", "unit_id", "quality"])


def state(equipment: int, at: datetime, value: float, reason: float | None = None) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = [(equipment, at, "state", value, None, 0)]
    if reason is not None:
        rows.append((equipment, at, "reason", reason, None, 0))
    return rows


async def events(conn: asyncpg.Connection, kind: str | None = None) -> list[dict[str, Any]]:
    """Every event as the API sends it, in id order."""
    rows = await conn.fetch("SELECT api_event_json(e)::text AS envelope FROM api_event e "
                            "WHERE $1::text IS NULL OR event_type = $1 ORDER BY event_id", kind)
    return [json.loads(r["envelope"]) for r in rows]


@pytest.fixture
async def conn(database: Database) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database.dsn)
    try:
        await apply_schema(connection)
        await connection.execute(f"TRUNCATE {EVENT_TABLES}, fact_sensor_event, fact_downtime, fact_scrap, "
                                 "fact_maintenance, fact_production")
        yield connection
    finally:
        await connection.close()


async def live_task(conn: asyncpg.Connection, dsn: str, shifts: str = ALL_DAY) -> tuple[LiveEvents, dict[str, int]]:
    config = config_for(dsn, shifts)
    keys = await sync_dimensions(conn, config.plant)
    ready = asyncio.Event()
    ready.set()
    live = LiveEvents(config.plant, config.events, config.derivation, config.database, config.instance_id, dsn,
                      ready)
    await live.prepare(conn)
    return live, dict(keys.equipment)


# ---------------------------------------------------------------------------------------------------------
# The schema: emit_event, NOTIFY, order, retention, maintenance
# ---------------------------------------------------------------------------------------------------------

async def test_emit_event_notifies_once_per_dedupe_key_with_the_envelope(conn: asyncpg.Connection,
                                                                         database: Database) -> None:
    _, ids = await live_task(conn, database.dsn)
    listener = await asyncpg.connect(database.dsn)
    payloads: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener("ingestor_event", lambda *args: payloads.put_nowait(args[3]))
    try:
        emit = "SELECT emit_event($1, $2, $3, $4::jsonb, $5)"
        first = await conn.fetchval(emit, "downtime", local(8), ids["M1"], '{"phase": "started"}', "stop:1")
        assert await conn.fetchval(emit, "downtime", local(8), ids["M1"], '{"phase": "again"}', "stop:1") is None
        plain = await conn.fetchval(emit, "production", local(8, 1), ids["M1"], '{"currentOEE": 0.5}', None)
        assert plain > first
        big = await conn.fetchval(emit, "quality_alert", local(8, 2), None, json.dumps({"x": "y" * 9000}), None)

        notified = [json.loads(await asyncio.wait_for(payloads.get(), 10)) for _ in range(3)]
        assert notified[0] == {"id": first, "type": "downtime", "timestamp": "2025-06-02T06:00:00.000Z",
                               "equipmentId": ids["M1"], "equipmentCode": "M1", "data": {"phase": "started"}}
        assert notified[1]["id"] == plain and notified[1]["data"] == {"currentOEE": 0.5}
        # too big for NOTIFY's 8000 bytes: only the id, for the listener to read the row
        assert notified[2] == {"id": big, "type": "quality_alert", "equipmentId": None, "truncated": True}
        assert payloads.empty()
        stored = await events(conn)
        assert [e["id"] for e in stored] == [first, plain, big]
        assert stored[0] == notified[0] and len(stored[2]["data"]["x"]) == 9000
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.fetchval(emit, "gossip", local(8), None, "{}", None)
    finally:
        await listener.close()


async def test_event_ids_are_handed_out_in_commit_order(conn: asyncpg.Connection, database: Database) -> None:
    """A transaction that emits holds the order lock to its commit, so one that emits after it gets a
    higher id and commits after it: since=<id> can never skip an event committed late."""
    other = await asyncpg.connect(database.dsn)
    listener = await asyncpg.connect(database.dsn)
    order: list[int] = []
    await listener.add_listener("ingestor_event", lambda *args: order.append(json.loads(args[3])["id"]))
    try:
        first = conn.transaction()
        await first.start()
        early = await conn.fetchval("SELECT emit_event('maintenance', now(), NULL, '{}')")
        pid = other.get_server_pid()
        second = asyncio.create_task(other.fetchval("SELECT emit_event('maintenance', now(), NULL, '{}')"))

        async def waiting() -> bool:
            return bool(await conn.fetchval(
                "SELECT count(*) FROM pg_locks WHERE pid = $1 AND locktype = 'advisory' AND NOT granted", pid))
        await async_wait_until(waiting, 10, "the second emitter to wait for the order lock")
        assert not second.done()
        await first.commit()
        late = await asyncio.wait_for(second, 10)
        assert late > early
        await async_wait_until(lambda: len(order) == 2, 10, "both notifications")
        assert order == [early, late]
    finally:
        await other.close()
        await listener.close()


async def test_a_maintenance_record_written_by_plain_sql_emits_an_event(conn: asyncpg.Connection,
                                                                         database: Database) -> None:
    _, ids = await live_task(conn, database.dsn)
    maintenance = await conn.fetchval(
        "INSERT INTO fact_maintenance (equipment_id, work_order_number, maintenance_type, start_time, end_time, "
        "labor_hours, material_cost, description) VALUES ($1, 'WO-17', 'Corrective', $2, $3, 1.5, 120.00, "
        "'bearing replaced') RETURNING maintenance_id", ids["M1"], local(9), local(10, 30))
    (event,) = await events(conn, "maintenance")
    assert event["equipmentId"] == ids["M1"] and event["equipmentCode"] == "M1"
    assert event["data"] == {"maintenanceId": maintenance, "workOrderNumber": "WO-17",
                             "maintenanceType": "Corrective", "startTime": "2025-06-02T07:00:00.000Z",
                             "endTime": "2025-06-02T08:30:00.000Z", "laborHours": 1.5, "materialCost": 120.00,
                             "description": "bearing replaced", "change": "created", "batchId": None, "undo": False}
    assert await conn.fetchval("SELECT dedupe_key FROM api_event WHERE event_id = $1", event["id"]) == \
        f"maintenance:{maintenance}"
    # a rolled-back insert emits nothing
    with pytest.raises(asyncpg.CheckViolationError):
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO fact_maintenance (equipment_id, work_order_number, maintenance_type, start_time, "
                "end_time) VALUES ($1, 'WO-18', 'Preventive', $2, $2)", ids["M1"], local(9))
            await conn.execute("INSERT INTO fact_maintenance (equipment_id, work_order_number, maintenance_type, "
                               "start_time, end_time) VALUES ($1, 'WO-19', 'Gossip', $2, $2)", ids["M1"], local(9))
    assert len(await events(conn, "maintenance")) == 1
    # a change by plain SQL is an 'updated' event, a delete a 'deleted' one (migration 0009); no change, none
    await conn.execute("UPDATE fact_maintenance SET labor_hours = 2 WHERE maintenance_id = $1", maintenance)
    await conn.execute("UPDATE fact_maintenance SET labor_hours = 2 WHERE maintenance_id = $1", maintenance)
    await conn.execute("DELETE FROM fact_maintenance WHERE maintenance_id = $1", maintenance)
    assert [(e["data"]["change"], e["data"]["laborHours"]) for e in await events(conn, "maintenance")] == [
        ("created", 1.5), ("updated", 2.0), ("deleted", 2.0)]


async def test_retention_deletes_a_prefix_of_ids_and_records_how_far(conn: asyncpg.Connection) -> None:
    ids = [await conn.fetchval("SELECT emit_event('maintenance', now(), NULL, '{}')") for _ in range(5)]
    await conn.execute("UPDATE api_event SET created_at = now() - interval '2 days' WHERE event_id = ANY($1)",
                       [ids[0], ids[2]])  # ids[1] is newer than the cut but older than ids[2]: goes too
    assert await conn.fetchval("SELECT prune_api_events(interval '1 day')") == 3
    assert [e["id"] for e in await events(conn)] == ids[3:]
    assert await conn.fetchval("SELECT pruned_through FROM api_event_retention") == ids[2]
    assert await conn.fetchval("SELECT prune_api_events(interval '1 day')") == 0
    with pytest.raises(asyncpg.RaiseError, match="keep must be positive"):
        await conn.fetchval("SELECT prune_api_events(interval '0')")


# ---------------------------------------------------------------------------------------------------------
# The live task: downtime from the state readings
# ---------------------------------------------------------------------------------------------------------

async def machine_state(conn: asyncpg.Connection, equipment: int) -> tuple[Any, ...]:
    row = await conn.fetchrow(
        "SELECT s.state, s.since, s.state_value, r.reason_code FROM live_equipment_state s "
        "LEFT JOIN dim_downtime_reason r USING (reason_id) WHERE s.equipment_id = $1", equipment)
    return tuple(row) if row is not None else ()


async def test_downtime_started_and_ended_follow_the_state_readings_across_a_restart(
        conn: asyncpg.Connection, database: Database) -> None:
    live, ids = await live_task(conn, database.dsn)
    m1 = ids["M1"]
    assert await machine_state(conn, m1) == ("unknown", None, None, None)
    now = to_us(local(12))

    await insert(conn, state(m1, local(6), 1))
    report = await live.step(conn, now)
    assert report.readings == 1 and report.emitted == {}
    assert await machine_state(conn, m1) == ("running", local(6), 1.0, None)

    # the stop is an event as soon as its reading is committed: no derivation has run
    await insert(conn, state(m1, local(8, 5), 3, reason=1))
    assert (await live.step(conn, now)).emitted == {"downtime": 1}
    (started,) = await events(conn, "downtime")
    assert started["timestamp"] == "2025-06-02T06:05:00.000Z" and started["equipmentCode"] == "M1"
    mech_fail = await conn.fetchval("SELECT reason_id FROM dim_downtime_reason WHERE reason_code = 'MECH_FAIL'")
    assert started["data"] == {"phase": "started", "state": "stopped", "stateValue": 3.0, "planned": False,
                               "startTime": "2025-06-02T06:05:00.000Z",
                               "reason": {"id": mech_fail, "code": "MECH_FAIL", "description": "Mechanical failure"}}
    assert await machine_state(conn, m1) == ("stopped", local(8, 5), 3.0, "MECH_FAIL")
    assert await conn.fetchval("SELECT count(*) FROM derive_equipment") == 0

    # the daemon restarts in the middle of the stop: the new task knows it from the database
    restarted, _ = await live_task(conn, database.dsn)
    assert restarted.machines[m1].state == "stopped" and restarted.machines[m1].stop_start == to_us(local(8, 5))
    assert (await restarted.step(conn, now)).emitted == {}
    await insert(conn, state(m1, local(8, 40), 1, reason=0))
    assert (await restarted.step(conn, now)).emitted == {"downtime": 1}
    ended = (await events(conn, "downtime"))[-1]
    assert ended["timestamp"] == "2025-06-02T06:40:00.000Z"
    assert ended["data"] == {
        "phase": "ended", "state": "stopped", "stateValue": 3.0, "planned": False,
        "startTime": "2025-06-02T06:05:00.000Z", "endTime": "2025-06-02T06:40:00.000Z", "durationSeconds": 2100.0,
        "microStop": False, "reason": {"id": mech_fail, "code": "MECH_FAIL", "description": "Mechanical failure"}}
    assert await machine_state(conn, m1) == ("running", local(8, 40), 1.0, None)

    # a late reading (older than the newest state applied) is no transition
    await insert(conn, state(m1, local(8, 30), 3))
    report = await restarted.step(conn, now)
    assert report.late == 1 and report.emitted == {}
    assert await machine_state(conn, m1) == ("running", local(8, 40), 1.0, None)

    # a short unplanned stop without a reason code: the default reason, and a micro-stop
    await insert(conn, state(m1, local(9), 3) + state(m1, local(9, 0, 20), 1))
    assert (await restarted.step(conn, now)).emitted == {"downtime": 2}
    short = (await events(conn, "downtime"))[-1]["data"]
    assert (short["durationSeconds"], short["microStop"], short["reason"]["code"]) == (20.0, True, "MAT_SHORT")

    # a crash before anything was recorded: everything is read again, and nothing is emitted twice
    await conn.execute("UPDATE live_watermark SET last_event_id = 0; DELETE FROM live_equipment_state")
    again, _ = await live_task(conn, database.dsn)
    report = await again.step(conn, now)
    assert report.emitted == {} and report.deduplicated == 4
    assert len(await events(conn, "downtime")) == 4
    assert await machine_state(conn, m1) == ("running", local(9, 0, 20), 1.0, None)


async def test_a_stop_value_changing_to_another_is_a_new_stop_and_planned_stops_say_so(
        conn: asyncpg.Connection, database: Database) -> None:
    live, ids = await live_task(conn, database.dsn)
    m1 = ids["M1"]
    now = to_us(local(12))
    await insert(conn, state(m1, local(6), 1) + state(m1, local(7), 2, reason=4))
    await live.step(conn, now)
    await insert(conn, state(m1, local(7, 10), 3, reason=1) + state(m1, local(7, 30), 1, reason=0))
    await live.step(conn, now)
    phases = [(e["data"]["phase"], e["data"]["state"], e["data"]["reason"]["code"], e["data"].get("durationSeconds"))
              for e in await events(conn, "downtime")]
    assert phases == [("started", "planned_stop", "SCHED_MAINT", None), ("ended", "planned_stop", "SCHED_MAINT", 600.0),
                      ("started", "stopped", "MECH_FAIL", None), ("ended", "stopped", "MECH_FAIL", 1200.0)]
    assert [e["data"]["planned"] for e in await events(conn, "downtime")] == [True, True, False, False]


async def test_a_stop_ends_where_scheduled_time_ends_and_starts_again_with_the_next_shift(
        conn: asyncpg.Connection, database: Database) -> None:
    """No night shift: a stop from 21:50 is downtime until 22:00, and again from 06:00, as the derivation
    records it; the wall clock moves the boundary for a machine that reports only on change."""
    live, ids = await live_task(conn, database.dsn, NO_NIGHT)
    m1 = ids["M1"]
    await insert(conn, state(m1, local(21), 1) + state(m1, local(21, 50), 2, reason=4))
    await live.step(conn, to_us(local(21, 51)))
    assert [e["data"]["phase"] for e in await events(conn, "downtime")] == ["started"]
    await live.step(conn, to_us(local(22, 0, 5)))  # within the grace for readings in flight
    assert len(await events(conn, "downtime")) == 1
    await live.step(conn, to_us(local(22, 0, 11)))
    ended = (await events(conn, "downtime"))[-1]["data"]
    assert (ended["phase"], ended["endTime"], ended["durationSeconds"]) == ("ended", "2025-06-02T20:00:00.000Z",
                                                                              600.0)
    assert await machine_state(conn, m1) == ("planned_stop", local(21, 50), 2.0, "SCHED_MAINT")

    # the next morning the machine is still stopped when the shift begins, and runs from 06:10
    tomorrow = DAY + timedelta(days=1)
    await insert(conn, state(m1, local(6, 10, day=tomorrow), 1))
    await live.step(conn, to_us(local(6, 11, day=tomorrow)))
    phases = [(e["data"]["phase"], e["data"]["startTime"], e["data"].get("durationSeconds"))
              for e in (await events(conn, "downtime"))[2:]]
    assert phases == [("started", "2025-06-03T04:00:00.000Z", None), ("ended", "2025-06-03T04:00:00.000Z", 600.0)]
    assert await machine_state(conn, m1) == ("running", local(6, 10, day=tomorrow), 1.0, None)


async def test_the_task_wakes_on_commit_and_emits_at_once(conn: asyncpg.Connection, database: Database) -> None:
    live, ids = await live_task(conn, database.dsn)
    live.settings = live.settings.model_copy(update={"poll_interval": 60.0})  # only a wake can find it soon
    await insert(conn, state(ids["M1"], datetime.now(UTC) - timedelta(seconds=5), 1))
    task = asyncio.create_task(live.run())
    try:
        await async_wait_until(lambda: live.steps >= 1, 20, "the first step")
        await insert(conn, state(ids["M1"], datetime.now(UTC), 3, reason=1))
        live.wake()  # what the writer does after its commit
        await async_wait_until(lambda: events(conn, "downtime"), 5, "the downtime event")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# ---------------------------------------------------------------------------------------------------------
# The live task: production and quality alerts
# ---------------------------------------------------------------------------------------------------------

def production_readings(m1: int, start: datetime, end: datetime) -> list[tuple[Any, ...]]:
    """M1 runs from ``start``: 10 parts a minute, 2 of them scrap."""
    rows = state(m1, start, 1)
    moment, parts = start, 0
    while moment <= end:
        rows += [(m1, moment, "parts", float(parts), None, 0), (m1, moment, "scrap", float(parts // 5), None, 0)]
        parts += 10
        moment += timedelta(minutes=1)
    return rows


async def test_production_events_carry_the_shifts_oee_by_the_schemas_formula(conn: asyncpg.Connection,
                                                                             database: Database) -> None:
    live, ids = await live_task(conn, database.dsn)
    m1 = ids["M1"]
    config = config_for(database.dsn)
    deriver = Deriver(config.plant, config.derivation, "live")
    await deriver.prepare(conn)
    await insert(conn, production_readings(m1, local(6), local(7)))
    now = to_us(local(7, 1, 30))
    await live.step(conn, now)  # running, but nothing derived in this shift yet: no production event
    assert await events(conn, "production") == []

    report = await deriver.run_once(conn, now)
    assert report.production_changed == {m1}
    live.derived(report)
    assert (await live.step(conn, now)).emitted == {"production": 1, "quality_alert": 1}
    (production,) = await events(conn, "production")
    expected = await conn.fetchrow("SELECT * FROM oee_by_shift($1, $2) WHERE equipment_id = $3",
                                   local(6), local(14), m1)
    data = production["data"]
    assert data["shift"] == "Early shift" and data["shiftCode"] == "EARLY" and data["productionDay"] == 20250602
    assert data["currentOEE"] == round(expected["oee"], 4)
    assert (data["availability"], data["performance"], data["quality"]) == (
        round(expected["availability"], 4), round(expected["performance"], 4), round(expected["quality"], 4))
    # the counters' readings on the minutes up to 07:00 inclusive: the one at 07:00 counts parts finished by
    # then, so it belongs to the record ending there ((start, end], docs/oee.md)
    assert (data["partsProduced"], data["goodParts"], data["scrapParts"]) == (600, 480, 120)
    assert data["targetRate"] == 720.0 and data["derivedUntil"] == "2025-06-02T05:00:00.000Z"

    (alert,) = await events(conn, "quality_alert")
    assert alert["equipmentCode"] == "M1"
    assert alert["data"] == {"kind": "scrap_rate", "shift": "Early shift", "shiftCode": "EARLY",
                             "productionDay": 20250602, "scrapRate": 0.2, "threshold": 0.1, "scrapParts": 120,
                             "partsProduced": 600}

    # a minute later the running machine gets its periodic update; the shift's alert is not repeated
    assert (await live.step(conn, now + 30 * 10**6)).emitted == {}
    assert (await live.step(conn, now + 60 * 10**6)).emitted == {"production": 1}
    assert len(await events(conn, "quality_alert")) == 1


async def test_data_quality_findings_alert_once_per_change(conn: asyncpg.Connection, database: Database) -> None:
    live, ids = await live_task(conn, database.dsn)
    shift = await conn.fetchval("SELECT shift_id FROM dim_shift WHERE shift_code = 'EARLY'")
    bad = await conn.fetchval(
        "INSERT INTO fact_production (date_id, shift_id, equipment_id, start_time, end_time, "
        "planned_production_time, operating_time, planned_parts, total_parts_produced, good_parts) "
        "VALUES (20250101, $1, $2, '2025-01-01 06:00+00', '2025-01-01 14:00+00', 1000, 2000, 1, 1, 1) "
        "RETURNING production_id", shift, ids["M2"])
    for _ in range(2):  # the same findings twice: one alert
        live.quality_checked(await data_quality_findings(conn))
        await live.step(conn)
    (alert,) = await events(conn, "quality_alert")
    assert alert["equipmentId"] is None
    assert [(c["check"], c["violations"]) for c in alert["data"]["failedChecks"]] == [
        ("operating_time_exceeds_planned", 1)]
    assert alert["data"]["failedChecks"][0]["details"]["sample_ids"] == [bad]

    await conn.execute("DELETE FROM fact_production WHERE production_id = $1", bad)
    live.quality_checked(await data_quality_findings(conn))
    await live.step(conn)
    resolved = (await events(conn, "quality_alert"))[-1]["data"]
    assert resolved == {"kind": "data_quality", "failedChecks": [], "resolved": ["operating_time_exceeds_planned"]}


# ---------------------------------------------------------------------------------------------------------
# The WebSocket endpoint and the hub, on a real uvicorn server
# ---------------------------------------------------------------------------------------------------------

def ws_url(base: str, **query: Any) -> str:
    text = "&".join(f"{k}={v}" for k, v in query.items())
    return base.replace("http://", "ws://") + "/api/events" + (f"?{text}" if text else "")


def client(url: str, **options: Any) -> Any:
    options.setdefault("proxy", None)
    options.setdefault("open_timeout", 10)
    return websockets.connect(url, **options)


async def receive(socket: Any, count: int, timeout: float = 20) -> list[dict[str, Any]]:
    return [json.loads(await asyncio.wait_for(socket.recv(), timeout)) for _ in range(count)]


async def emit(conn: asyncpg.Connection, kind: str, equipment: int | None, **data: Any) -> int:
    event_id: int = await conn.fetchval("SELECT emit_event($1, now(), $2, $3::jsonb)", kind, equipment,
                                        json.dumps(data))
    return event_id


async def closed_with(socket: Any, timeout: float = 20) -> tuple[int, str]:
    """Read until the server closes; its close code and reason."""
    with pytest.raises(websockets.ConnectionClosed) as closed:
        async with asyncio.timeout(timeout):
            while True:
                await socket.recv()
    assert closed.value.rcvd is not None, "closed without a close frame"
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def test_websocket_filters_replays_since_and_goes_live(conn: asyncpg.Connection, database: Database) -> None:
    _, ids = await live_task(conn, database.dsn)
    m1, m2 = ids["M1"], ids["M2"]
    before = [await emit(conn, "downtime", m1, n=1), await emit(conn, "downtime", m2, n=2),
              await emit(conn, "production", m1, n=3), await emit(conn, "quality_alert", None, n=4),
              await emit(conn, "downtime", m1, n=5)]
    async with served(api_state(database.dsn)) as base:
        async with client(ws_url(base, since=before[0] - 1, types="downtime,quality_alert", equipment="M1")) as one, \
                client(ws_url(base)) as everything:
            replayed = await receive(one, 2)
            assert [e["id"] for e in replayed] == [before[0], before[4]]
            assert replayed[0] == (await events(conn))[0]  # the envelope, as stored
            assert set(replayed[0]) == {"id", "type", "timestamp", "equipmentId", "equipmentCode", "data"}
            # live: only what matches; the plant-wide alert is not about M1
            live = [await emit(conn, "quality_alert", None, n=6), await emit(conn, "downtime", m2, n=7),
                    await emit(conn, "quality_alert", m1, n=8), await emit(conn, "maintenance", m1, n=9),
                    await emit(conn, "downtime", m1, n=10)]
            assert [e["data"]["n"] for e in await receive(one, 2)] == [8, 10]
            # without since=: live events only, all of them, in order
            assert [e["id"] for e in await receive(everything, 5)] == live


async def test_bad_parameters_close_with_the_reason(conn: asyncpg.Connection, database: Database) -> None:
    await live_task(conn, database.dsn)
    await emit(conn, "maintenance", None)
    async with served(api_state(database.dsn)) as base:
        for query, code, words in (({"types": "downtime,gossip"}, 1008, "unknown event type gossip"),
                                   ({"equipment": "M1,NOPE"}, 1008, "unknown equipment NOPE"),
                                   ({"since": "yesterday"}, 1008, "since: expected the id of an event"),
                                   ({"since": "999999999"}, 4410, "no such event in this database")):
            async with client(ws_url(base, **query)) as socket:
                got_code, reason = await closed_with(socket)
                assert (got_code, words in reason) == (code, True), reason


async def test_an_equipment_code_no_dimension_could_hold_is_unknown_not_a_database_error(
        conn: asyncpg.Connection, database: Database) -> None:
    """A NUL (which PostgreSQL text refuses) or an over-long code is an unknown equipment, as in the analytics
    endpoints: 404 and 1008, never a 503 or 1013 "database unavailable" (found by the fuzz test)."""
    await live_task(conn, database.dsn)
    async with served(api_state(database.dsn)) as base, httpx.AsyncClient(base_url=base) as http:
        for code in ("M1,\x00", "X" * 51):
            response = await http.get("/api/events", params={"equipment": code})
            assert response.status_code == 404 and "unknown equipment" in response.json()["detail"], response.text
            url = base.replace("http://", "ws://") + "/api/events?" + urlencode({"equipment": code})
            async with client(url) as socket:
                got, reason = await closed_with(socket)
                assert got == 1008 and "unknown equipment" in reason, reason


async def test_a_websocket_without_the_read_token_is_closed_with_1008_and_the_reason(
        conn: asyncpg.Connection, database: Database) -> None:
    """Accepted, then closed with 1008 and why, never a refused handshake: a browser sees a refused handshake
    only as 1006, which the operator page cannot tell from a network drop."""
    await live_task(conn, database.dsn)
    token = "read-token-0123456789abcdef"
    async with served(api_state(database.dsn, environ={"INGESTOR_API_READ_TOKEN": token})) as base:
        for query, reason in (({}, "authentication required"), ({"access_token": "x" * 26}, "not allowed")):
            async with client(ws_url(base, **query)) as socket:
                assert await closed_with(socket) == (1008, reason)
        async with client(ws_url(base, access_token=token)) as socket, \
                client(ws_url(base), additional_headers={"Authorization": f"Bearer {token}"}) as bearer:
            event = await emit(conn, "maintenance", None)
            assert [e["id"] for e in await receive(socket, 1)] == [event]
            assert [e["id"] for e in await receive(bearer, 1)] == [event]


async def test_a_client_dropped_mid_stream_resumes_with_since_and_misses_nothing(
        conn: asyncpg.Connection, database: Database) -> None:
    """Two emitters commit 400 events concurrently while the client reads, loses its connection without a
    close (a network drop), and reconnects with since=<last id received>: it gets every event exactly once,
    in id order."""
    _, ids = await live_task(conn, database.dsn)
    start = await emit(conn, "maintenance", None, n=0)
    other = await asyncpg.connect(database.dsn)

    async def emitter(db: asyncpg.Connection, who: str) -> None:
        for n in range(200):
            await emit(db, "downtime", ids["M1"], who=who, n=n)

    try:
        async with served(api_state(database.dsn)) as base:
            seen: list[int] = []
            socket = await client(ws_url(base, since=start))
            producers = asyncio.gather(emitter(conn, "a"), emitter(other, "b"))
            seen += [e["id"] for e in await receive(socket, 60)]
            socket.transport.abort()  # gone without a close frame
            await asyncio.sleep(0)
            async with client(ws_url(base, since=seen[-1])) as again:
                while len(seen) < 400:
                    seen += [e["id"] for e in await receive(again, 1)]
            await producers
            stored = [e["id"] for e in await events(conn, "downtime")]
            assert seen == stored and len(stored) == 400
    finally:
        await other.close()


async def test_a_slow_client_is_closed_and_the_others_keep_up(conn: asyncpg.Connection, database: Database) -> None:
    await live_task(conn, database.dsn)
    state_ = api_state(database.dsn)
    hub = EventHub(database.dsn, client_queue=20)
    state_.services["events"] = hub
    async with served(state_) as base:
        host, port = base.removeprefix("http://").split(":")
        sock = socket_module.socket()
        sock.setsockopt(socket_module.SOL_SOCKET, socket_module.SO_RCVBUF, 8192)
        sock.connect((host, int(port)))
        async with client(ws_url(base), max_queue=1, compression=None, sock=sock) as slow, \
                client(ws_url(base), compression=None) as fast:
            await async_wait_until(lambda: hub.subscribers == 2, 10, "two subscribers")
            first = await conn.fetchval(
                "SELECT min(emit_event('production', now(), NULL, jsonb_build_object('n', g, 'pad', "
                "repeat(md5(g::text), 120)))) FROM generate_series(1, 3000) g")
            got = [e["id"] for e in await receive(fast, 3000, timeout=60)]
            assert got == list(range(first, first + 3000))  # one transaction: consecutive ids
            assert hub.subscribers == 1  # the slow one was dropped, the fast one kept everything
            # the slow client reads what was on the way, then the close frame telling it what to do
            slow_ids: list[int] = []
            with pytest.raises(websockets.ConnectionClosed) as closed:
                async with asyncio.timeout(60):
                    while True:
                        slow_ids.append(json.loads(await slow.recv())["id"])
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1013 and "reconnect with since=" in closed.value.rcvd.reason
            assert slow_ids == got[:len(slow_ids)] and len(slow_ids) < 3000
        async with client(ws_url(base, since=slow_ids[-1])) as resumed:
            rest = [e["id"] for e in await receive(resumed, 3000 - len(slow_ids), timeout=60)]
        assert slow_ids + rest == got


async def test_the_rest_listing_pages_through_the_same_envelopes(conn: asyncpg.Connection, database: Database) -> None:
    _, ids = await live_task(conn, database.dsn)
    made = [await emit(conn, "downtime" if n % 2 else "production", ids["M1"], n=n) for n in range(5)]
    async with served(api_state(database.dsn)) as base, httpx.AsyncClient(base_url=base) as http:
        page = await http.get("/api/events", params={"since": made[0] - 1, "limit": 2})
        assert page.status_code == 200 and page.headers["content-type"] == "application/json"
        body = EventPage.model_validate(page.json())
        assert [e.id for e in body.events] == made[:2] and body.more and body.next_since == made[1]
        assert page.json()["events"] == (await events(conn))[:2]
        rest = (await http.get("/api/events", params={"since": body.next_since, "types": "downtime"})).json()
        assert [e["id"] for e in rest["events"]] == [made[3]] and rest["more"] is False
        assert rest["nextSince"] == made[3]
        missing = await http.get("/api/events", params={"equipment": "NOPE"})
        assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
        assert (await http.get("/api/events", params={"types": "gossip"})).status_code == 400
        await conn.execute("UPDATE api_event SET created_at = now() - interval '2 days' WHERE event_id = $1",
                           made[1])
        await conn.execute("SELECT prune_api_events()")
        gone = await http.get("/api/events", params={"since": made[0]})
        assert gone.status_code == 410 and "deleted" in gone.json()["detail"]
        assert [e["id"] for e in (await http.get("/api/events", params={"since": 0})).json()["events"]] == made[2:]


EVENT_PARAMETERS = ["since", "limit", "types", "equipment", "other"]
EVENT_VALUES = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=60),
    st.sampled_from(["downtime", "production,downtime", "quality_alert,maintenance", "M1", "M1,M2", "NOPE", "",
                     ",", " , ", "\x00", "-1", "0", "1e309", "NaN", "9223372036854775808", "1000", "1001"]),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.lists(st.sampled_from(["downtime", "production", "gossip", "M1", "M2", "NOPE"]), min_size=1,
             max_size=4).map(",".join),
)
EVENT_QUERIES = st.lists(st.tuples(st.sampled_from(EVENT_PARAMETERS), EVENT_VALUES), max_size=6)


@pytest.fixture
async def events_api(conn: asyncpg.Connection, database: Database) -> AsyncIterator[str]:
    """The API served on the module's database with one event in it (hypothesis reuses it across examples)."""
    _, ids = await live_task(conn, database.dsn)
    await emit(conn, "downtime", ids["M1"], n=1)
    async with served(api_state(database.dsn)) as base:
        yield base


FUZZ = settings(max_examples=60, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@FUZZ
@given(query=EVENT_QUERIES)
async def test_fuzzed_event_listing_parameters_never_make_a_5xx(events_api: str,
                                                                 query: list[tuple[str, str]]) -> None:
    """GET /api/events answers 200 or a problem document (400, 404, 410, 422), whatever the query."""
    async with httpx.AsyncClient(base_url=events_api, timeout=20) as http:
        response = await http.get("/api/events", params=query)
    assert response.status_code in (200, 400, 404, 410, 422), (query, response.text)
    if response.status_code != 200:
        assert response.headers["content-type"] == "application/problem+json", (query, response.text)


@FUZZ
@given(query=EVENT_QUERIES)
async def test_fuzzed_websocket_parameters_stream_or_close_with_a_documented_code(
        events_api: str, query: list[tuple[str, str]]) -> None:
    """The WebSocket streams, or closes with 1008 or 4410 and a reason; never 1011 (an internal error)."""
    url = events_api.replace("http://", "ws://") + "/api/events?" + urlencode(query)
    async with client(url) as socket:
        try:
            await asyncio.wait_for(socket.recv(), 0.2)  # a replay, a close, or nothing yet
        except TimeoutError:
            return
        except websockets.ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code in (1008, 4410), (query, closed.rcvd)
            assert closed.rcvd.reason, query


async def test_the_hub_survives_a_database_restart_and_backfills(tmp_path: Any) -> None:
    """The listener's database stops and starts again; events committed before the hub is back are sent
    from the table: the client, connected all along, misses none."""
    server = PrivatePostgres()
    try:
        server.start()
        conn = await asyncpg.connect(server.dsn())
        await apply_schema(conn)
        state_ = api_state(server.dsn())
        # the hub waits 4 s between attempts: long enough for the server to restart and the events after it
        # to be committed before it listens again
        hub = EventHub(server.dsn(), retry=ReconnectConfig(initial=4.0, max=4.0, jitter=0.0), keepalive=1.0)
        state_.services["events"] = hub
        async with served(state_) as base, client(ws_url(base)) as socket:
            before = [await emit(conn, "maintenance", None, n=n) for n in range(3)]
            assert [e["id"] for e in await receive(socket, 3)] == before
            await conn.close()
            server.stop("fast")
            await async_wait_until(lambda: not hub.connected, 20, "the hub to notice")
            server.start()
            conn = await asyncpg.connect(server.dsn())
            after = [await emit(conn, "maintenance", None, n=n) for n in range(3, 8)]
            assert not hub.connected, "the hub came back before the events were committed: no backfill to test"
            assert [e["id"] for e in await receive(socket, 5, timeout=30)] == after
            assert hub.connects == 2 and hub.backfilled == 5
            await conn.close()
    finally:
        server.close()


# ---------------------------------------------------------------------------------------------------------
# The whole path: the OPC UA simulator, the daemon, its API, a WebSocket client
# ---------------------------------------------------------------------------------------------------------

DAEMON = """
instance_id: live-e2e
database: {{url: "{dsn}"}}
derivation: {{interval: 1s, settle: 1s, max_segment: 1m, check_data_quality: 1s}}
events: {{production_interval: 5s, scrap_rate_alert: 0.2, scrap_alert_min_parts: 5}}
plant:
  sites:
    - code: S1
      name: Site
      timezone: Europe/Berlin
      areas:
        - code: A1
          name: Area
          work_centers:
            - code: W1
              name: Line
              equipment:
                - code: PRESS-01
                  name: Press 1
                  theoretical_rate: 7200
                  roles:
                    part_counter: {{parameter: parts_total, bits: 32}}
                    good_counter: {{parameter: parts_good, bits: 32}}
                    state:
                      parameter: state
                      running: [1]
                      planned_stop: [2]
                      reason_parameter: reason
                      reasons: {{1: MECH_FAIL, 2: ELEC_FAIL, 3: TOOL_CHANGE, 4: MAT_SHORT, 5: SCHED_MAINT}}
                      default_unplanned_reason: MECH_FAIL
                      default_planned_reason: SCHED_MAINT
                - {{code: M2, name: Machine without roles}}
connectors:
  - type: opcua
    name: press
    endpoint: {endpoint}
    reconnect: {{initial: 200ms, max: 1s}}
    groups:
      - name: production
        publishing_interval: 100ms
        sampling_interval: 0
        queue_size: 20
        tags:
          - {{node: "ns=2;s=PRESS-01.parts_total", equipment: PRESS-01, parameter: parts_total}}
          - {{node: "ns=2;s=PRESS-01.parts_good", equipment: PRESS-01, parameter: parts_good}}
          - {{node: "ns=2;s=PRESS-01.state", equipment: PRESS-01, parameter: state}}
          - {{node: "ns=2;s=PRESS-01.reason", equipment: PRESS-01, parameter: reason}}
pipeline: {{batch_rows: 100, batch_age: 100ms, spool_dir: "{spool}"}}
http: {{listen: "127.0.0.1:{port}"}}
logging: {{format: json}}
"""


async def the_specifications_endpoints_match_the_readings(base: str, conn: asyncpg.Connection) -> None:
    """``/production`` and ``/oee`` of the daemon's own API over the records it derived from the simulator, set
    against the raw counter readings it stored (not against the facts the endpoints read): the parts made
    between the first record's start and the last record's end, good and scrap, and the quality ratio."""
    now = datetime.now(UTC)
    window = {"from": (now - timedelta(hours=1)).isoformat(), "to": (now + timedelta(minutes=5)).isoformat()}
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        production = await http.get("/api/manufacturing-metrics/production", params=window)
        oee = await http.get("/api/manufacturing-metrics/oee", params={**window, "granularity": "shift"})
    assert production.status_code == 200 and oee.status_code == 200, (production.text, oee.text)
    span = await conn.fetchrow(
        "SELECT min(p.start_time) AS first, max(p.end_time) AS last, sum(p.planned_production_time) AS planned, "
        "sum(p.operating_time) AS operating "
        "FROM fact_production p JOIN dim_equipment e USING (equipment_id) WHERE e.equipment_code = 'PRESS-01'")

    async def counted(parameter: str) -> int:
        # the counter's increase over the records' span, from the readings (no wrap: the press starts at 0)
        value = await conn.fetchval(
            "SELECT (SELECT value FROM fact_sensor_event WHERE parameter = $1 AND equipment_id = e.equipment_id "
            "        AND event_ts <= $2 ORDER BY event_ts DESC LIMIT 1) "
            "     - (SELECT value FROM fact_sensor_event WHERE parameter = $1 AND equipment_id = e.equipment_id "
            "        ORDER BY event_ts LIMIT 1) "
            "FROM dim_equipment e WHERE e.equipment_code = 'PRESS-01'",
            parameter, span["last"])
        return int(value)

    total, good = await counted("parts_total"), await counted("parts_good")
    assert total > 0
    body = production.json()
    assert body["summary"]["totalParts"] == total and body["summary"]["goodParts"] == good
    assert body["summary"]["scrapParts"] == total - good
    assert [e["equipmentCode"] for e in body["byEquipment"]] == ["PRESS-01"]
    assert body["byEquipment"][0]["production"] == total
    [press] = oee.json()
    assert press["equipment"]["code"] == "PRESS-01"
    metrics = press["metrics"]
    assert metrics["quality"] == pytest.approx(good / total)
    assert metrics["availability"] == pytest.approx(float(span["operating"] / span["planned"]))
    assert metrics["oee"] == pytest.approx(metrics["availability"] * metrics["performance"] * metrics["quality"])
    assert press["periods"] and all(p["shift"]["code"] for p in press["periods"])


@pytest.mark.slow
async def test_the_four_event_types_from_the_simulator_through_the_daemon(fresh_database: Database,
                                                                            tmp_path: Any) -> None:
    """A press served by the OPC UA simulator (a part every 0.5 s, 40 % scrap), read by the daemon, whose own
    API serves the events: a stop and its end as soon as the state is committed, the shift's OEE after the
    derivation, the scrap alert, a maintenance record, a data-quality finding; then the client drops and
    resumes with since= without missing anything."""
    from ingestor.config import load_config
    from ingestor.daemon.runtime import Daemon
    from simulators.machine import Machine, MachineProfile
    from simulators.opcua import OpcUaSimulator, SimulatorOptions

    from .helpers import free_port

    press = Machine("PRESS-01", MachineProfile(cycle_time=0.5, scrap_rate=0.4, mean_time_between_failures=1e9,
                                               mean_time_between_planned_stops=1e9))
    simulator = OpcUaSimulator(SimulatorOptions(port=free_port(), interval=0.1), machines=[press])
    port = free_port()
    path = tmp_path / "config.yaml"
    path.write_text(DAEMON.format(dsn=fresh_database.dsn, endpoint=simulator.endpoint, spool=tmp_path / "spool",
                                  port=port))
    base = f"http://127.0.0.1:{port}"
    await simulator.start()
    daemon = Daemon(load_config(path, environ={}))
    serving = asyncio.create_task(daemon.serve())
    conn: asyncpg.Connection | None = None
    seen: list[dict[str, Any]] = []

    async def until(socket: Any, wanted: Any, timeout: float) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                event = json.loads(await socket.recv())
                seen.append(event)
                if wanted(event):
                    return event

    try:
        await async_wait_until(lambda: daemon.schema_ready.is_set(), 30, "the schema")
        conn = await asyncpg.connect(fresh_database.dsn)

        async def running() -> bool:
            return await conn.fetchval("SELECT state FROM live_equipment_state") == "running"  # type: ignore[union-attr]
        await async_wait_until(running, 30, "PRESS-01 running in live_equipment_state")
        socket = await client(ws_url(base, since=0))

        # a stop, and its end, each as soon as its state reading is committed
        await simulator.write("PRESS-01", "reason", 1)
        await simulator.write("PRESS-01", "state", 3)
        written = asyncio.get_running_loop().time()
        started = await until(socket, lambda e: e["type"] == "downtime" and e["data"]["phase"] == "started", 20)
        latency = asyncio.get_running_loop().time() - written
        assert started["equipmentCode"] == "PRESS-01" and started["data"]["reason"]["code"] == "MECH_FAIL"
        assert latency < 5, f"the stop took {latency:.2f} s from the simulator to the WebSocket"
        print(f"stop written in the simulator -> downtime event on the WebSocket: {latency * 1000:.0f} ms")
        await simulator.write("PRESS-01", "state", 1)
        await simulator.write("PRESS-01", "reason", 0)
        ended = await until(socket, lambda e: e["type"] == "downtime" and e["data"]["phase"] == "ended", 20)
        assert ended["data"]["durationSeconds"] > 0 and ended["data"]["reason"]["code"] == "MECH_FAIL"
        assert ended["data"]["startTime"] == started["data"]["startTime"]

        # the shift's OEE once the derivation wrote a production record (the first one-minute cell ends),
        # and the scrap alert of the shift
        production = await until(socket, lambda e: e["type"] == "production", 100)
        assert production["data"]["partsProduced"] > 0 and production["data"]["targetRate"] == 7200.0
        assert 0 < production["data"]["currentOEE"] <= 1 and production["data"]["quality"] < 0.9
        await the_specifications_endpoints_match_the_readings(base, conn)
        alert = await until(socket, lambda e: e["type"] == "quality_alert" and e["data"]["kind"] == "scrap_rate",
                            60)
        assert alert["data"]["scrapRate"] > 0.2

        # a maintenance record written by SQL, and a data-quality finding
        m2 = await conn.fetchval("SELECT equipment_id FROM dim_equipment WHERE equipment_code = 'M2'")
        await conn.execute(
            "INSERT INTO fact_maintenance (equipment_id, work_order_number, maintenance_type, start_time, end_time) "
            "VALUES ($1, 'WO-1', 'Preventive', now() - interval '1 hour', now())", m2)
        maintenance = await until(socket, lambda e: e["type"] == "maintenance", 20)
        assert maintenance["equipmentCode"] == "M2" and maintenance["data"]["workOrderNumber"] == "WO-1"
        shift = await conn.fetchval("SELECT shift_id FROM dim_shift LIMIT 1")
        await conn.execute(
            "INSERT INTO fact_production (date_id, shift_id, equipment_id, start_time, end_time, "
            "planned_production_time, operating_time, planned_parts, total_parts_produced, good_parts) "
            "VALUES (20250101, $1, $2, '2025-01-01 06:00+00', '2025-01-01 14:00+00', 1000, 2000, 1, 1, 1)",
            shift, m2)
        finding = await until(socket, lambda e: e["type"] == "quality_alert" and e["data"]["kind"] == "data_quality",
                              30)
        assert [c["check"] for c in finding["data"]["failedChecks"]] == ["operating_time_exceeds_planned"]

        # the network drops; what happens meanwhile is replayed after the reconnect with since=
        socket.transport.abort()
        await conn.execute(
            "INSERT INTO fact_maintenance (equipment_id, work_order_number, maintenance_type, start_time, end_time) "
            "VALUES ($1, 'WO-2', 'Corrective', now() - interval '1 hour', now())", m2)
        async with client(ws_url(base, since=seen[-1]["id"])) as again:
            await until(again, lambda e: e["type"] == "maintenance" and e["data"]["workOrderNumber"] == "WO-2", 20)
        stored = [r["event_id"] for r in await conn.fetch("SELECT event_id FROM api_event ORDER BY event_id")]
        assert [e["id"] for e in seen] == stored[:len(seen)], "every event once, in order, across the drop"
        daemon.stop()
        assert await serving == 0
    finally:
        if conn is not None:
            await conn.close()
        if not serving.done():
            daemon.stop()
            await asyncio.wait_for(serving, 30)
        await simulator.stop()
