"""Live events: what the API's WebSocket clients see (docs/api.md "Live events"), and ``live_equipment_state``.

One task per daemon, with its own database connection, emits events into ``api_event`` with
``emit_event()`` (migration 0005); PostgreSQL's NOTIFY carries them to every API process.

**Downtime, as it happens.**  The writer wakes the task right after each commit (``SpoolWriter(on_committed=
wake)``), and a poll every ``events.poll_interval`` covers anything else.  The task reads the state and
reason readings of this daemon's machines inserted since it last looked (``event_id`` above its watermark,
through the BRIN index, as the derivation does; :mod:`ingestor.derive.engine` says why that misses none of one
daemon's readings) and follows each machine's state reading by reading:

* running → a stop value: ``downtime`` *started* (state value, planned or not, the reason as far as known);
* a stop → running, or → another stop value (a new stop, as in the derivation): ``downtime`` *ended*, with
  ``durationSeconds`` and the stop's reason by the derivation's own rule (:func:`~ingestor.derive.states.
  reason_for`, so the event names the reason its ``fact_downtime`` row gets), and whether it was a micro-stop;
* the shift calendar as the derivation applies it: a stop is downtime only in scheduled time, so a stop that
  runs past the end of scheduled time *ends* there, and one that is still going when scheduled time begins
  *starts* then (the wall clock moves these boundaries for machines that report only on change, 10 s late so
  that readings in flight are not overtaken).

This does not wait for the derivation to settle: the latency is the writer's commit plus one query.  A
reading older than the newest state reading already applied for its machine (a late one, from a backlog or a
slow source) is not a transition; the derivation accounts for it in the facts.  The machine states, the
events and the watermark are written in one transaction, and every downtime event carries a dedupe key (the
machine and the stop's start), so a crash or restart re-reads from the watermark and re-emits nothing; after
a restart each machine's state comes from ``live_equipment_state``, not from memory.

**Production.**  After each derivation run that wrote a machine's production records (the task's
``on_derived``; not while the derivation is catching up on a backlog), and at least every
``events.production_interval`` while the machine runs: its current shift's OEE, availability, performance,
quality and parts, by ``oee_ratios()`` over ``production_ideal_time``, the one definition of OEE (migration
0004), and its theoretical rate.  A shift without a derived record yet has no periodic event.

**Quality alerts.**  The scrap rate (1 - quality) of a machine's current shift above ``events.scrap_rate_alert``
once it has ``scrap_alert_min_parts`` parts: once per machine and shift (dedupe key).  And the findings of
``check_data_quality()`` (``on_quality``, after every run of the checks): an alert when the set of failing
checks differs from the one the last such alert reported (also when they all pass again: ``resolved``).  The
dedupe key names the previous alert, so two daemons reporting the same change emit it once.

**Retention.**  Every ten minutes, ``prune_api_events(events.retention)``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import asyncpg
from prometheus_client import Counter

from ingestor.contract import ProblemLog, get_logger, now_us
from ingestor.contract.timeouts import wait_for
from ingestor.database.config import DatabaseConfig
from ingestor.database.connection import CONNECTION_ERRORS, DatabaseUnavailable, connect
from ingestor.derive.config import DerivationConfig, EventsConfig
from ingestor.derive.engine import DeriveReport
from ingestor.derive.plan import EquipmentPlan, build_plans
from ingestor.derive.segments import US, from_us, to_us
from ingestor.derive.states import reason_for
from ingestor.derive.store import load_ids, load_series
from ingestor.derive.task import QualityFinding
from ingestor.plant import PlantConfig

log = get_logger(__name__)

_OUTAGE: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, DatabaseUnavailable)
"""The database is unreachable or the connection is gone: wait and reconnect."""

EVENTS_EMITTED = Counter("ingestor_live_events_total", "Live events emitted into api_event", ["type"])
LATE_STATE_READINGS = Counter(
    "ingestor_live_late_state_readings_total",
    "State readings older than the newest one already applied for their machine (not taken as transitions)")

CALENDAR_GRACE_US = 10 * US  # the wall clock moves schedule boundaries this late, after readings in flight
BACKLOG_US = 60 * US         # readings all older than this are a backlog: the wall clock waits for them
PRUNE_EVERY_US = 600 * US
SINCE_LOOKBACK_US = 86_400 * US  # how far back a machine's first start looks for when its current state began

_FINITE = "value NOT IN ('NaN'::float8, 'Infinity'::float8, '-Infinity'::float8)"

# The readings inserted since the watermark: the highest id among all of them (the new watermark), and the
# state and reason readings among them in time order.  Watermark written into the text and equipment_id hidden
# from the planner, for the BRIN index on event_id (see ingestor.derive.engine.read_new_readings).
_FRESH = f"""
WITH fresh AS MATERIALIZED (
    SELECT event_id, equipment_id, parameter, event_ts, value, quality FROM fact_sensor_event
    WHERE event_id > {{last}}::bigint AND equipment_id + 0 = ANY($1::int[])
), top AS (
    SELECT max(event_id) AS highest, max(event_ts) AS newest FROM fresh
)
SELECT top.highest, top.newest, r.event_id, r.equipment_id, r.parameter, r.event_ts, r.value
FROM top
LEFT JOIN LATERAL (
    SELECT * FROM fresh WHERE parameter = ANY($2::text[]) AND quality < 2 AND {_FINITE}
) r ON true
ORDER BY r.event_ts, r.event_id
"""

_NEWEST = f"""
SELECT event_id, event_ts, value FROM fact_sensor_event
WHERE equipment_id = $1 AND parameter = $2 AND quality < 2 AND {_FINITE} AND event_id <= {{last}}::bigint
ORDER BY event_ts DESC, event_id DESC LIMIT 1
"""

_CHANGED_BEFORE = f"""
SELECT max(event_ts) FROM fact_sensor_event
WHERE equipment_id = $1 AND parameter = $2 AND quality < 2 AND {_FINITE}
  AND event_ts < $3 AND event_ts >= $4 AND value <> $5
"""

_FIRST_SINCE = f"""
SELECT min(event_ts) FROM fact_sensor_event
WHERE equipment_id = $1 AND parameter = $2 AND quality < 2 AND {_FINITE}
  AND event_ts > $3 AND event_ts <= $4 AND value = $5
"""

# The current shift's figures of some machines, by the schema's one definition of OEE.
_SHIFT_OEE = """
SELECT q.equipment_id, e.theoretical_rate, s.records, s.total_parts, s.good_parts, s.derived_until,
       r.availability, r.performance, r.quality, r.oee
FROM unnest($1::int[], $2::int[], $3::int[], $4::timestamptz[], $5::timestamptz[])
     AS q(equipment_id, date_id, shift_id, span_start, span_end)
JOIN dim_equipment e ON e.equipment_id = q.equipment_id
CROSS JOIN LATERAL (
    SELECT count(*) AS records,
           sum(p.operating_time) AS operating_time,
           sum(p.planned_production_time) AS planned_time,
           sum(p.theoretical_time) AS theoretical_time,
           bool_and(p.ideal_known) AS ideal_known,
           sum(p.total_parts_produced) AS total_parts,
           sum(p.good_parts) AS good_parts,
           max(p.end_time) AS derived_until
    FROM production_ideal_time p
    WHERE p.equipment_id = q.equipment_id AND p.date_id = q.date_id AND p.shift_id = q.shift_id
      AND p.start_time >= q.span_start AND p.start_time < q.span_end
) s
CROSS JOIN LATERAL oee_ratios(s.operating_time, s.planned_time, s.theoretical_time, s.ideal_known,
                              s.good_parts, s.total_parts) r
"""


def api_time(instant: int) -> str:
    """An instant as the API writes every time: UTC, milliseconds, ``Z`` (the schema's ``api_time()``)."""
    moment = from_us(instant)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class Emit:
    """One event to emit: ``emit_event(type, time, equipment, data, dedupe_key)``."""

    type: str
    instant: int
    equipment_id: int | None
    data: dict[str, Any]
    dedupe_key: str | None = None


@dataclass
class LiveMachine:
    """What the task knows of one machine with a state tag (mirrors its ``live_equipment_state`` row)."""

    plan: EquipmentPlan
    value: float | None = None       # the state value in force; None: no state reading yet (unknown)
    since: int | None = None         # when it began
    last_ts: int | None = None       # the newest state reading applied: an older one is late
    stop_start: int | None = None    # start of the stop whose 'started' stands (None: running, unscheduled)
    calendar_at: int | None = None   # schedule boundaries are applied up to here
    reason_id: int | None = None
    dirty: bool = False

    @property
    def stopped(self) -> bool:
        return self.value is not None and not self.plan.is_running(self.value)

    @property
    def state(self) -> str:
        if self.value is None:
            return "unknown"
        if self.plan.is_running(self.value):
            return "running"
        return "planned_stop" if self.plan.is_planned_state(self.value) else "stopped"


@dataclass
class StepReport:
    """What one step did."""

    readings: int = 0
    late: int = 0
    emitted: dict[str, int] = field(default_factory=dict)
    deduplicated: int = 0


class ScopeMoved(Exception):
    """Another process moved this task's watermark: the machine states in memory are stale."""


class LiveEvents:
    """The daemon's live-events task: ``run()`` until cancelled; ``wake()``, ``derived()`` and
    ``quality_checked()`` are its callbacks (they never block).  Tests drive ``prepare()`` and ``step()``."""

    def __init__(self, plant: PlantConfig, settings: EventsConfig, derivation: DerivationConfig,
                 database: DatabaseConfig, instance_id: str, url: str, schema_ready: asyncio.Event, *,
                 clock: Callable[[], int] | None = None) -> None:
        self._plant = plant
        self.settings = settings
        self._derivation = derivation
        self._database = database
        self.instance_id = instance_id
        self._url = url
        self._schema_ready = schema_ready
        self._clock = clock or now_us
        self._wake = asyncio.Event()
        self._production_due: set[int] = set()
        self._findings: list[QualityFinding] | None = None
        self._last_production: dict[int, int] = {}
        self._next_prune = 0
        self.plans: list[EquipmentPlan] = []
        self.machines: dict[int, LiveMachine] = {}
        self.position = 0
        self.reasons: dict[int, tuple[str, str]] = {}
        self.steps = 0
        self.last_report: StepReport | None = None

    # --- callbacks (called from other tasks of the daemon; never block) ----------------------------------------

    def wake(self) -> None:
        """New readings are committed: look at once (the writer's ``on_committed``)."""
        self._wake.set()

    def derived(self, report: DeriveReport) -> None:
        """A derivation run finished (the derivation task's ``on_derived``)."""
        if report.production_changed and not report.behind:
            self._production_due |= report.production_changed
            self._wake.set()

    def quality_checked(self, findings: list[QualityFinding]) -> None:
        """``check_data_quality()`` ran (the derivation task's ``on_quality``)."""
        self._findings = findings
        self._wake.set()

    # --- the task ------------------------------------------------------------------------------------------------

    async def run(self) -> None:
        if not self.settings.enabled:
            return
        await self._schema_ready.wait()
        conn: asyncpg.Connection | None = None
        prepared = False
        problems = ProblemLog(log, repeats_at_debug=True)
        try:
            while True:
                try:
                    if conn is None or conn.is_closed():
                        conn = await connect(self._url, self._database.connect_timeout)
                        prepared = False
                        problems.recovered("database", "live events reconnected")
                    if not prepared:
                        await self.prepare(conn)
                        prepared = True
                        log.info("live events ready", machines=[m.plan.code for m in self.machines.values()],
                                 watermark=self.position)
                    self._wake.clear()  # before the step: a commit during it makes the next one start at once
                    await self.step(conn)
                    await self.prune(conn)
                    try:
                        await wait_for(self._wake.wait(), self.settings.poll_interval)
                    except TimeoutError:
                        pass
                except _OUTAGE as exc:  # an outage: one line, not a traceback
                    problems.failed("database", "live events wait for the database", error=str(exc))
                    if conn is not None:
                        conn.terminate()
                    conn = None
                    await asyncio.sleep(2)
                except KeyError as exc:  # dimensions not synced yet
                    log.error("live events cannot start", error=str(exc.args[0]) if exc.args else str(exc))
                    prepared = False
                    await asyncio.sleep(5)
                except (asyncpg.PostgresError, ScopeMoved) as exc:  # the step rolled back; start over from the db
                    log.warning("live events step failed; retried", error=str(exc))
                    prepared = False
                    await asyncio.sleep(1)
                except Exception as exc:  # a bug: say so, keep the daemon running
                    log.error("live events failed", error=repr(exc), exc_info=True)
                    prepared = False
                    await asyncio.sleep(5)
        finally:
            if conn is not None and not conn.is_closed():
                conn.terminate()

    # --- startup: plans, watermark and machine states from the database -------------------------------------------

    @property
    def scope(self) -> str:
        ids = ",".join(str(i) for i in sorted(self.machines))
        return f"{self.instance_id}:{hashlib.sha256(ids.encode()).hexdigest()[:16]}"

    async def prepare(self, conn: asyncpg.Connection) -> None:
        """Read the dimension ids, the watermark and every machine's state (the database is the truth)."""
        self.plans = build_plans(self._plant, await load_ids(conn, self._plant), self._derivation)
        self.reasons = {r["reason_id"]: (r["reason_code"], r["reason_description"]) for r in await conn.fetch(
            "SELECT reason_id, reason_code, reason_description FROM dim_downtime_reason")}
        self.machines = {p.equipment_id: LiveMachine(p) for p in self.plans if p.state_parameter is not None}
        if not self.machines:
            return
        async with conn.transaction():
            position = await conn.fetchval(
                "SELECT last_event_id FROM live_watermark WHERE scope = $1 FOR UPDATE", self.scope)
            if position is None:
                position = await self._initial_position(conn)
                await conn.execute(
                    "INSERT INTO live_watermark (scope, instance_id, equipment_ids, last_event_id) "
                    "VALUES ($1, $2, $3, $4) ON CONFLICT (scope) DO NOTHING",
                    self.scope, self.instance_id, sorted(self.machines), position)
            self.position = int(position)
            rows = {r["equipment_id"]: r for r in await conn.fetch(
                "SELECT equipment_id, state, since, state_value, reason_id FROM live_equipment_state "
                "WHERE equipment_id = ANY($1::int[])", list(self.machines))}
            for machine in self.machines.values():
                await self._restore(conn, machine, rows.get(machine.plan.equipment_id))
            await self._write_states(conn)

    async def _initial_position(self, conn: asyncpg.Connection) -> int:
        """Where a new scope starts: this daemon's other scopes' lowest watermark (its machine set changed), else
        the newest state reading of these machines (so a first start does not replay history as events)."""
        found = await conn.fetchval("SELECT min(last_event_id) FROM live_watermark WHERE instance_id = $1",
                                    self.instance_id)
        if found is not None:
            return int(found)
        newest = 0
        for machine in self.machines.values():
            row = await conn.fetchrow(_NEWEST.format(last=2**63 - 1), machine.plan.equipment_id,
                                      machine.plan.state_parameter)
            if row is not None:
                newest = max(newest, int(row["event_id"]))
        return newest

    async def _restore(self, conn: asyncpg.Connection, machine: LiveMachine, row: asyncpg.Record | None) -> None:
        plan = machine.plan
        assert plan.state_parameter is not None
        newest = await conn.fetchrow(_NEWEST.format(last=int(self.position)), plan.equipment_id, plan.state_parameter)
        if row is not None and row["state"] != "unknown" and row["state_value"] is not None:
            machine.value = float(row["state_value"])
            machine.since = to_us(row["since"]) if row["since"] is not None else None
            machine.reason_id = row["reason_id"]
            machine.last_ts = to_us(newest["event_ts"]) if newest is not None else machine.since
            if machine.stopped and machine.since is not None:
                # the stop's events stand as the last run left them: replay the calendar from its start (what
                # was emitted already is de-duplicated)
                machine.stop_start = machine.since if plan.calendar.scheduled_at(machine.since) else None
                machine.calendar_at = machine.since
            else:
                machine.calendar_at = machine.last_ts
            return
        machine.dirty = True
        if newest is None:
            return  # unknown until its first state reading
        last, value = to_us(newest["event_ts"]), float(newest["value"])
        machine.value, machine.last_ts, machine.calendar_at = value, last, last
        machine.since = await self._began(conn, plan, last, value)
        if machine.stopped:
            if plan.calendar.scheduled_at(machine.since) and \
                    plan.calendar.scheduled_until(machine.since, last) >= last:
                machine.stop_start = machine.since
            machine.reason_id = await self._reason(conn, plan, machine.stop_start or machine.since, None, value)

    async def _began(self, conn: asyncpg.Connection, plan: EquipmentPlan, last: int, value: float) -> int:
        """When the state value held at ``last`` began (looking back at most a day)."""
        lookback = from_us(last - SINCE_LOOKBACK_US)
        other = await conn.fetchval(_CHANGED_BEFORE, plan.equipment_id, plan.state_parameter, from_us(last),
                                    lookback, value)
        first = await conn.fetchval(_FIRST_SINCE, plan.equipment_id, plan.state_parameter,
                                    other if other is not None else lookback - timedelta(microseconds=1),
                                    from_us(last), value)
        return to_us(first) if first is not None else last

    # --- one step --------------------------------------------------------------------------------------------------

    async def step(self, conn: asyncpg.Connection, now_us: int | None = None) -> StepReport:
        """Read the new state readings, follow the machines, and emit what is due, in one transaction."""
        now = now_us if now_us is not None else self._clock()
        report = StepReport()
        production_due = set(self._production_due)
        findings = self._findings
        emits: list[Emit] = []
        produced: dict[int, int] = {}
        async with conn.transaction():
            if self.machines:
                await self._follow_states(conn, now, emits, report)
            await self._production(conn, now, production_due, emits, produced)
            if findings is not None:
                await self._data_quality(conn, findings, now, emits)
            await self._write_states(conn)
            await self._emit(conn, emits, report)
        self._production_due -= production_due
        if self._findings is findings:
            self._findings = None
        self._last_production.update(produced)
        for kind, count in report.emitted.items():
            EVENTS_EMITTED.labels(kind).inc(count)
        self.steps += 1
        self.last_report = report
        return report

    async def prune(self, conn: asyncpg.Connection, now_us: int | None = None) -> int:
        """Delete events older than ``events.retention``, every ten minutes; returns how many."""
        now = now_us if now_us is not None else self._clock()
        if now < self._next_prune:
            return 0
        self._next_prune = now + PRUNE_EVERY_US
        removed = int(await conn.fetchval("SELECT prune_api_events($1::interval)",
                                          timedelta(seconds=self.settings.retention)))
        if removed:
            log.info("old live events deleted", events=removed, retention_s=self.settings.retention)
        return removed

    async def _follow_states(self, conn: asyncpg.Connection, now: int, emits: list[Emit],
                             report: StepReport) -> None:
        position = await conn.fetchval("SELECT last_event_id FROM live_watermark WHERE scope = $1 FOR UPDATE",
                                       self.scope)
        if position is None or int(position) != self.position:
            # another process moved this scope's watermark (or the row went away): start over from the database
            raise ScopeMoved(f"live_watermark {self.scope} moved from {self.position} to {position}")
        parameters = sorted({name for m in self.machines.values()
                             for name in (m.plan.state_parameter, m.plan.reason_parameter) if name})
        rows = await conn.fetch(_FRESH.format(last=int(self.position)), list(self.machines), parameters)
        highest = rows[0]["highest"] if rows else None
        newest = rows[0]["newest"] if rows else None
        reasons_seen: set[int] = set()
        for row in rows:
            if row["event_id"] is None:
                continue
            machine = self.machines.get(row["equipment_id"])
            if machine is None:
                continue
            instant, value = to_us(row["event_ts"]), float(row["value"])
            if row["parameter"] == machine.plan.state_parameter:
                report.readings += 1
                if not await self._apply_state(conn, machine, instant, value, emits):
                    report.late += 1
            if row["parameter"] == machine.plan.reason_parameter:
                reasons_seen.add(machine.plan.equipment_id)
        for equipment_id in reasons_seen:  # a reason reported during a stop names it (live state only)
            machine = self.machines[equipment_id]
            start = machine.stop_start if machine.stop_start is not None else machine.since
            if machine.stopped and machine.value is not None and start is not None:
                reason = await self._reason(conn, machine.plan, start, None, machine.value)
                if reason != machine.reason_id:
                    machine.reason_id, machine.dirty = reason, True
        # Schedule boundaries by the wall clock, for machines that report only on change; not while the readings
        # are a backlog (their own timestamps move the calendar then, and newer ones may still be on the way).
        if newest is None or to_us(newest) >= now - BACKLOG_US:
            for machine in self.machines.values():
                await self._advance_calendar(conn, machine, now - CALENDAR_GRACE_US, emits)
        if highest is not None and int(highest) > self.position:
            self.position = int(highest)
            await conn.execute("UPDATE live_watermark SET last_event_id = $2, updated_at = now() WHERE scope = $1",
                               self.scope, self.position)
        if report.late:
            LATE_STATE_READINGS.inc(report.late)

    async def _apply_state(self, conn: asyncpg.Connection, machine: LiveMachine, instant: int, value: float,
                           emits: list[Emit]) -> bool:
        """Apply one state reading; False when it is late (older than the newest one applied)."""
        if machine.last_ts is not None and instant < machine.last_ts:
            return False
        await self._advance_calendar(conn, machine, instant, emits)
        machine.last_ts = instant
        if machine.value is not None and value == machine.value:
            return True
        plan = machine.plan
        was_running = machine.value is not None and plan.is_running(machine.value)
        if was_running and plan.is_running(value):  # another running value: still running since then
            machine.value, machine.dirty = value, True
            return True
        if machine.stop_start is not None and machine.value is not None:
            emits.append(await self._ended(conn, machine, instant))
        machine.value, machine.since, machine.stop_start, machine.dirty = value, instant, None, True
        machine.calendar_at = max(machine.calendar_at or instant, instant)
        machine.reason_id = None
        if machine.stopped:
            if plan.calendar.scheduled_at(instant):
                machine.stop_start = instant
                emits.append(await self._started(conn, machine, instant))
            else:
                machine.reason_id = await self._reason(conn, plan, instant, None, value)
        return True

    async def _advance_calendar(self, conn: asyncpg.Connection, machine: LiveMachine, until: int,
                                emits: list[Emit]) -> None:
        """Apply the schedule boundaries up to ``until`` to a stopped machine: its stop ends where scheduled
        time ends and starts again where it begins (what the derivation records)."""
        at = machine.calendar_at
        if at is None or until <= at:
            return
        if machine.stopped:
            calendar = machine.plan.calendar
            for _ in range(10_000):  # a stop of years is still a bounded number of shifts; never loop for ever
                if machine.stop_start is not None:
                    end = calendar.scheduled_until(at, until)
                    if end >= until:
                        break
                    emits.append(await self._ended(conn, machine, end))
                    machine.stop_start, at = None, end
                else:
                    begins = [s.start for s in calendar.spans(at, until) if at <= s.start < until]
                    if not begins:
                        break
                    at = begins[0]
                    machine.stop_start = at
                    emits.append(await self._started(conn, machine, at))
                machine.dirty = True
        machine.calendar_at = until

    async def _reason(self, conn: asyncpg.Connection, plan: EquipmentPlan, start: int, end: int | None,
                      value: float) -> int | None:
        """The reason of a stop from ``start`` (to ``end``, or still going) by the derivation's rule."""
        window_end = start + plan.reason_window_us + 1
        until = window_end if end is None else min(window_end, end)
        series = None
        if plan.reason_parameter is not None:
            series = (await load_series(conn, plan.equipment_id, [plan.reason_parameter], start,
                                        max(until, start + 1)))[plan.reason_parameter]
        return reason_for(plan, start, window_end if end is None else end, value, plan.is_planned_state(value),
                          series)

    def _reason_fields(self, reason_id: int | None) -> dict[str, Any]:
        if reason_id is None:
            return {"reason": None}
        code, description = self.reasons.get(reason_id, (None, None))
        return {"reason": {"id": reason_id, "code": code, "description": description}}

    async def _started(self, conn: asyncpg.Connection, machine: LiveMachine, start: int) -> Emit:
        assert machine.value is not None
        plan = machine.plan
        machine.reason_id = await self._reason(conn, plan, start, None, machine.value)
        data = {"phase": "started", "state": machine.state, "stateValue": machine.value,
                "planned": plan.is_planned_state(machine.value), "startTime": api_time(start),
                **self._reason_fields(machine.reason_id)}
        return Emit("downtime", start, plan.equipment_id, data, f"downtime:started:{plan.equipment_id}:{start}")

    async def _ended(self, conn: asyncpg.Connection, machine: LiveMachine, end: int) -> Emit:
        assert machine.value is not None and machine.stop_start is not None
        plan, start, value = machine.plan, machine.stop_start, machine.value
        planned = plan.is_planned_state(value)
        reason = await self._reason(conn, plan, start, end, value)
        micro = not planned and plan.micro_stop_us > 0 and end - start < plan.micro_stop_us
        data = {"phase": "ended", "state": machine.state, "stateValue": value, "planned": planned,
                "startTime": api_time(start), "endTime": api_time(end),
                "durationSeconds": round((end - start) / US, 3), "microStop": micro, **self._reason_fields(reason)}
        return Emit("downtime", end, plan.equipment_id, data, f"downtime:ended:{plan.equipment_id}:{start}")

    async def _write_states(self, conn: asyncpg.Connection) -> None:
        dirty = [m for m in self.machines.values() if m.dirty]
        if not dirty:
            return
        await conn.executemany(
            "INSERT INTO live_equipment_state (equipment_id, state, since, state_value, reason_id, updated_at) "
            "VALUES ($1, $2, $3, $4, $5, now()) ON CONFLICT (equipment_id) DO UPDATE SET state = EXCLUDED.state, "
            "since = EXCLUDED.since, state_value = EXCLUDED.state_value, reason_id = EXCLUDED.reason_id, "
            "updated_at = now()",
            [(m.plan.equipment_id, m.state, None if m.since is None else from_us(m.since), m.value,
              m.reason_id if m.stopped else None) for m in dirty])
        for machine in dirty:
            machine.dirty = False

    # --- production and quality ------------------------------------------------------------------------------------

    def _running(self, plan: EquipmentPlan, now: int) -> bool:
        machine = self.machines.get(plan.equipment_id)
        if machine is not None:
            return machine.state == "running"
        return plan.calendar.scheduled_at(now)  # no state tag: running whenever scheduled (as derived)

    async def _production(self, conn: asyncpg.Connection, now: int, derived: set[int], emits: list[Emit],
                          produced: dict[int, int]) -> None:
        interval = round(self.settings.production_interval * US)
        due: list[tuple[EquipmentPlan, Any, bool]] = []
        for plan in self.plans:
            periodic = (self._running(plan, now)
                        and now - self._last_production.get(plan.equipment_id, -interval) >= interval)
            if plan.equipment_id not in derived and not periodic:
                continue
            span = plan.calendar.span_at(now)
            if span is not None:
                due.append((plan, span, plan.equipment_id in derived))
        if not due:
            return
        rows = {r["equipment_id"]: r for r in await conn.fetch(
            _SHIFT_OEE, [p.equipment_id for p, _, _ in due], [s.date_id for _, s, _ in due],
            [p.shift_ids[s.shift_code] for p, s, _ in due], [from_us(s.start) for _, s, _ in due],
            [from_us(s.end) for _, s, _ in due])}
        names = {shift.code: shift.name for plan in self.plans for shift in plan.calendar.shifts}
        for plan, span, _ in due:
            row = rows.get(plan.equipment_id)
            if row is None or not row["records"]:
                continue  # nothing derived in this shift yet
            total, good = int(row["total_parts"] or 0), int(row["good_parts"] or 0)
            data = {"shift": names.get(span.shift_code, span.shift_code), "shiftCode": span.shift_code,
                    "productionDay": span.date_id, "shiftStart": api_time(span.start), "shiftEnd": api_time(span.end),
                    "currentOEE": _ratio(row["oee"]), "availability": _ratio(row["availability"]),
                    "performance": _ratio(row["performance"]), "quality": _ratio(row["quality"]),
                    "partsProduced": total, "goodParts": good, "scrapParts": total - good,
                    "targetRate": None if row["theoretical_rate"] is None else float(row["theoretical_rate"]),
                    "derivedUntil": api_time(to_us(row["derived_until"]))}
            emits.append(Emit("production", now, plan.equipment_id, data))
            produced[plan.equipment_id] = now
            threshold = self.settings.scrap_rate_alert
            quality = row["quality"]
            if threshold is not None and quality is not None and total >= self.settings.scrap_alert_min_parts \
                    and 1.0 - quality > threshold:
                shift_id = plan.shift_ids[span.shift_code]
                emits.append(Emit("quality_alert", now, plan.equipment_id, {
                    "kind": "scrap_rate", "shift": data["shift"], "shiftCode": span.shift_code,
                    "productionDay": span.date_id, "scrapRate": _ratio(1.0 - quality), "threshold": threshold,
                    "scrapParts": total - good, "partsProduced": total},
                    f"quality:scrap_rate:{plan.equipment_id}:{span.date_id}:{shift_id}"))

    async def _data_quality(self, conn: asyncpg.Connection, findings: list[QualityFinding], now: int,
                            emits: list[Emit]) -> None:
        failing = sorted((f for f in findings if f.passed is False), key=lambda f: f.check)
        previous = await conn.fetchrow(
            "SELECT event_id, data FROM api_event WHERE event_type = 'quality_alert' "
            "AND data->>'kind' = 'data_quality' ORDER BY event_id DESC LIMIT 1")
        before: list[str] = []
        if previous is not None:
            data = json.loads(previous["data"]) if isinstance(previous["data"], str) else previous["data"]
            before = sorted(c["check"] for c in data.get("failedChecks", []))
        now_failing = [f.check for f in failing]
        if now_failing == before:
            return
        digest = hashlib.sha256(",".join(now_failing).encode()).hexdigest()[:16]
        emits.append(Emit("quality_alert", now, None, {
            "kind": "data_quality",
            "failedChecks": [{"check": f.check, "table": f.table, "violations": _count(f.violations),
                              "details": f.details} for f in failing],
            "resolved": sorted(set(before) - set(now_failing))},
            f"quality:data_quality:{previous['event_id'] if previous is not None else 0}:{digest}"))

    async def _emit(self, conn: asyncpg.Connection, emits: Iterable[Emit], report: StepReport) -> None:
        """Emit last in the transaction: emit_event() takes the event-order lock, held until the commit."""
        for item in emits:
            event_id = await conn.fetchval(
                "SELECT emit_event($1, $2, $3, $4::jsonb, $5)", item.type, from_us(item.instant), item.equipment_id,
                json.dumps(item.data), item.dedupe_key)
            if event_id is None:
                report.deduplicated += 1
                continue
            report.emitted[item.type] = report.emitted.get(item.type, 0) + 1


def _ratio(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 4)


def _count(value: float) -> float | int | None:
    if not math.isfinite(value):
        return None
    return int(value) if value == int(value) else value
