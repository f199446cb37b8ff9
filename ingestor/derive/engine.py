"""Which windows need deriving, and deriving them: late readings, stops in progress, restarts.

**Windows.** A machine's facts are derived window by window, each window a run of whole cells
(:mod:`ingestor.derive.segments`) written in one transaction under a per-machine advisory lock.  The daemon
derives from where the machine stands (``derive_equipment.derived_until``) up to the last cell that ended
``settle`` ago, at most ``batch`` at a time; ``ingestor derive --from --to`` derives the cells of its range.

**Stops across windows.** When a window starts inside a stop, the stop recorded in ``derive_stop`` by the
window before is continued, not started again: it keeps its start and reason, its end is what this window
finds, and its one ``fact_downtime`` row is rewritten.  A stop still going at a window's end gets no
downtime row until it ends.  So a restart, or any cut between windows, in the middle of a stop gives one
downtime row.  A stop whose reason or micro-stop status could still change (it began less than
``reason_window`` or ``micro_stop`` before the window) is not continued: the window moves back to the cell
where it began.

**Late readings.** ``fact_sensor_event.event_id`` grows with insertion order. Each run reads the readings inserted
since the last one (``event_id`` above the scope's watermark, through a BRIN index) and marks the earliest
``event_ts`` among each machine's role readings as pending (``derive_equipment.pending_from``) when it lies before
``derived_until``: the next windows start there. A counter reading counts for the window that ends at its instant
(:mod:`ingestor.derive.facts`), so a counter reading at ``t`` makes ``t`` - 1 µs pending: one arriving late
exactly at ``derived_until`` re-derives the window before. The watermark and the pending marks move in one
transaction, so a crash loses nothing and a restart double-counts nothing (facts are replaced, never added).

Why the watermark is safe although identity values are cached per session (CACHE 1000), so that event_id
order is not commit order across sessions: a daemon's readings are written by its one writer connection,
which commits one transaction at a time; within one session ids only grow, and a new session (after a
reconnect) draws a new block above every id handed out before.  So the readings of the machines a daemon
derives become visible in event_id order, and "event_id above the highest one seen for these machines"
misses none of them.  The watermark is kept per daemon *and* set of machines (``scope``), so two daemons
never move each other's.  What this does not cover: the same machine's tags written by two sessions at once
(two daemons feeding one machine, or readings inserted by hand) may be missed when they arrive late; run
``ingestor derive`` over the affected time after such an import (docs/oee.md).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta

import asyncpg

from ingestor.contract import get_logger
from ingestor.derive.config import DerivationConfig
from ingestor.derive.facts import WindowFacts, derive_window
from ingestor.derive.plan import EquipmentPlan, build_plans
from ingestor.derive.segments import US, from_us, to_us
from ingestor.derive.series import Series
from ingestor.derive.states import Stop
from ingestor.derive.store import (
    WriteResult,
    first_reading,
    load_ids,
    load_window,
    state_before,
    state_change_after,
    stop_covering,
    write_window,
)
from ingestor.plant import PlantConfig

log = get_logger(__name__)

LOCK_CLASS = 0x0DE7_1FE5  # pg_advisory_xact_lock(class, equipment_id): one derivation per machine at a time
RECENT_US = 3600 * US     # a new watermark starts at the readings of the last hour of data (see _initial_watermark)


@dataclass
class DeriveReport:
    """What a run (or a range) derived."""

    windows: int = 0
    writes: WriteResult = field(default_factory=WriteResult)
    behind: bool = False
    stops_without_reason: int = 0
    parts_outside_schedule: int = 0
    oldest_derived_until: int | None = None
    production_changed: set[int] = field(default_factory=set)
    """The machines (equipment ids) whose ``fact_production`` rows this run inserted, updated or deleted."""

    @property
    def changed(self) -> bool:
        return self.writes.changed

    def add(self, facts: WindowFacts, writes: WriteResult, equipment_id: int | None = None) -> None:
        self.windows += 1
        if equipment_id is not None and any(
                counts.get("fact_production") for counts in (writes.inserted, writes.updated, writes.deleted)):
            self.production_changed.add(equipment_id)
        self.writes.add(writes)
        self.stops_without_reason += facts.stops_without_reason
        self.parts_outside_schedule += facts.parts_outside_schedule


class Deriver:
    """Derives the facts of a plant's machines; ``prepare`` it on a connection first."""

    def __init__(self, plant: PlantConfig, config: DerivationConfig, instance_id: str = "ingestor") -> None:
        self.plant = plant
        self.config = config
        self.instance_id = instance_id
        self.plans: list[EquipmentPlan] = []

    async def prepare(self, conn: asyncpg.Connection) -> list[EquipmentPlan]:
        """Read the dimension ids and build a plan per derivable machine."""
        self.plans = build_plans(self.plant, await load_ids(conn, self.plant), self.config)
        return self.plans

    @property
    def scope(self) -> str:
        ids = ",".join(str(p.equipment_id) for p in sorted(self.plans, key=lambda p: p.equipment_id))
        return f"{self.instance_id}:{hashlib.sha256(ids.encode()).hexdigest()[:16]}"

    # --- the daemon's run -------------------------------------------------------------------------------------

    async def run_once(self, conn: asyncpg.Connection, now_us: int | None = None,
                       max_windows: int = 8) -> DeriveReport:
        """Read the readings inserted since the last run, then derive every machine up to ``now - settle``
        (at most ``max_windows`` windows per machine; ``behind`` says when there is more)."""
        report = DeriveReport()
        if not self.plans:
            return report
        now = now_us if now_us is not None else time.time_ns() // 1000
        horizon = now - round(self.config.settle * US)
        await self.read_new_readings(conn)
        oldest: int | None = None
        for plan in self.plans:
            for _ in range(max_windows):
                done = await self._derive_next(conn, plan, horizon, report)
                if done is None or done >= plan.calendar.floor(horizon):
                    break
            else:
                report.behind = True
            until = await conn.fetchval(
                "SELECT LEAST(derived_until, pending_from) FROM derive_equipment WHERE equipment_id = $1",
                plan.equipment_id)
            if until is not None:
                oldest = to_us(until) if oldest is None else min(oldest, to_us(until))
        report.oldest_derived_until = oldest
        return report

    async def read_new_readings(self, conn: asyncpg.Connection) -> int:
        """Mark what the readings inserted since the last run make pending; returns how many machines got a
        pending mark."""
        ids = [p.equipment_id for p in self.plans]
        roles = {(p.equipment_id, name) for p in self.plans for name in p.parameters()}
        # a counter reading at t counts parts finished by t: it belongs to the window ending at t
        counters = {(p.equipment_id, name) for p in self.plans for name in p.counter_parameters()}
        marked = 0
        async with conn.transaction():
            row = await conn.fetchrow("SELECT last_event_id FROM derive_watermark WHERE scope = $1 FOR UPDATE",
                                      self.scope)
            last = int(row["last_event_id"]) if row is not None else await self._initial_watermark(conn)
            earliest: dict[int, int] = {}
            highest = last
            # The watermark is written into the statement and equipment_id is hidden from the planner
            # (+ 0): with a parameter, or with equipment_id indexable, the planner may scan a whole machine's
            # history through the composite index instead of the newest pages through the BRIN index on
            # event_id (measured: docs/oee.md).
            for r in await conn.fetch(
                    "SELECT equipment_id, parameter, max(event_id) AS last_id, "
                    "min(event_ts) FILTER (WHERE quality < 2) AS earliest FROM fact_sensor_event "
                    f"WHERE event_id > {int(last)}::bigint AND equipment_id + 0 = ANY($1::int[]) "
                    "GROUP BY equipment_id, parameter", ids):
                highest = max(highest, int(r["last_id"]))
                if (r["equipment_id"], r["parameter"]) in roles and r["earliest"] is not None:
                    instant = to_us(r["earliest"]) - ((r["equipment_id"], r["parameter"]) in counters)
                    equipment = r["equipment_id"]
                    earliest[equipment] = min(earliest.get(equipment, instant), instant)
            for equipment, instant in earliest.items():
                status = await conn.execute(
                    "UPDATE derive_equipment SET pending_from = LEAST(pending_from, $2), updated_at = now() "
                    "WHERE equipment_id = $1 AND $2 < derived_until "
                    "AND (pending_from IS NULL OR $2 < pending_from)", equipment, from_us(instant))
                marked += status == "UPDATE 1"
            await conn.execute(
                "INSERT INTO derive_watermark (scope, instance_id, equipment_ids, last_event_id) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT (scope) DO UPDATE SET last_event_id = EXCLUDED.last_event_id, "
                "updated_at = now()", self.scope, self.instance_id, ids, highest)
        if marked:
            log.info("late readings: facts will be derived again", machines=marked)
        return marked

    async def _initial_watermark(self, conn: asyncpg.Connection) -> int:
        """Where a new scope starts reading.  Lower is always safe (it only re-reads), higher is not.  The
        lowest watermark of this daemon's other scopes (its machine set changed), else of any scope, else the
        highest id among the last hour of these machines' readings: everything visible now that this could
        skip is derived anyway by the first windows of machines never derived before."""
        for sql, args in (("SELECT min(last_event_id) FROM derive_watermark WHERE instance_id = $1",
                           (self.instance_id,)),
                          ("SELECT min(last_event_id) FROM derive_watermark", ())):
            found = await conn.fetchval(sql, *args)
            if found is not None:
                return int(found)
        latest = await conn.fetchval(
            "SELECT max(m.latest) FROM unnest($1::int[], $2::text[]) AS r(equipment_id, parameter) "
            "CROSS JOIN LATERAL (SELECT max(event_ts) AS latest FROM fact_sensor_event f "
            "WHERE f.equipment_id = r.equipment_id AND f.parameter = r.parameter) m",
            [p.equipment_id for p in self.plans], [p.timeline_parameter for p in self.plans])
        if latest is None:
            return 0
        found = await conn.fetchval(
            "SELECT max(event_id) FROM fact_sensor_event WHERE equipment_id = ANY($1::int[]) AND event_ts >= $2",
            [p.equipment_id for p in self.plans], latest - timedelta(microseconds=RECENT_US))
        return int(found or 0)

    async def _derive_next(self, conn: asyncpg.Connection, plan: EquipmentPlan, horizon: int,
                           report: DeriveReport) -> int | None:
        """Derive this machine's next window; returns where its facts now stand, None when nothing was due."""
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", LOCK_CLASS, plan.equipment_id)
            row = await conn.fetchrow(
                "SELECT derived_until, pending_from FROM derive_equipment WHERE equipment_id = $1 FOR UPDATE",
                plan.equipment_id)
            if row is None:
                start = await first_reading(conn, plan)
                if start is None:
                    return None
                derived_until, pending = None, None
            else:
                derived_until = to_us(row["derived_until"])
                pending = None if row["pending_from"] is None else to_us(row["pending_from"])
                start = derived_until if pending is None else min(derived_until, pending)
            end = window_end(plan, start, min(horizon, start + round(self.config.batch * US)), horizon)
            if end <= plan.calendar.floor(start):
                return None
            facts, writes = await self._derive(conn, plan, start, end, horizon)
            report.add(facts, writes, plan.equipment_id)
            new_until = end if derived_until is None else max(derived_until, end)
            new_pending = pending if pending is not None and pending >= end else (
                end if pending is not None and derived_until is not None and end < derived_until else None)
            await conn.execute(
                "INSERT INTO derive_equipment (equipment_id, derived_until, pending_from) VALUES ($1, $2, $3) "
                "ON CONFLICT (equipment_id) DO UPDATE SET derived_until = EXCLUDED.derived_until, "
                "pending_from = EXCLUDED.pending_from, updated_at = now()",
                plan.equipment_id, from_us(new_until), None if new_pending is None else from_us(new_pending))
            return new_until if new_pending is None else new_pending

    # --- a range, for ingestor derive ---------------------------------------------------------------------------

    async def derive_range(self, conn: asyncpg.Connection, start_us: int, end_us: int, now_us: int | None = None,
                           equipment: Iterable[str] | None = None) -> tuple[DeriveReport, int, int]:
        """Derive again every cell of ``[start_us, end_us)`` (widened to whole cells, and ending at the last
        cell that ended ``settle`` ago) for the given machines (default all).  Returns the report and the
        window actually derived (the start may be earlier when it lay inside a stop that was not settled)."""
        now = now_us if now_us is not None else time.time_ns() // 1000
        horizon = now - round(self.config.settle * US)
        wanted = set(equipment) if equipment is not None else None
        report = DeriveReport()
        first_start, last_end = end_us, start_us
        for plan in self.plans:
            if wanted is not None and plan.code not in wanted:
                continue
            stop_at = ceil_cell(plan, min(end_us, horizon), horizon)
            at = start_us
            while at < stop_at:
                end = window_end(plan, at, min(stop_at, at + round(self.config.batch * US)), horizon)
                if end <= plan.calendar.floor(at):
                    break
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", LOCK_CLASS, plan.equipment_id)
                    facts, writes = await self._derive(conn, plan, at, end, horizon)
                report.add(facts, writes, plan.equipment_id)
                first_start, last_end = min(first_start, facts.start), max(last_end, end)
                at = end
        return report, first_start, last_end

    # --- one window ---------------------------------------------------------------------------------------------

    async def _derive(self, conn: asyncpg.Connection, plan: EquipmentPlan, start: int, end: int, horizon: int
                      ) -> tuple[WindowFacts, WriteResult]:
        """Derive and write ``[start, end)`` (start moved to its cell, and further back while it lies inside a
        stop that cannot be continued).  Call inside a transaction holding the machine's lock."""
        begin, carry = await self._window_start(conn, plan, plan.calendar.floor(start))
        series = await load_window(conn, plan, begin, end)
        facts = derive_window(plan, series, begin, end, carry, await self._stop_end_after(conn, plan, series, end,
                                                                                         horizon))
        writes = await write_window(conn, plan, facts)
        if writes.changed:
            log.debug("facts derived", equipment=plan.code, start=from_us(begin).isoformat(),
                      end=from_us(end).isoformat(), inserted=writes.inserted, updated=writes.updated,
                      deleted=writes.deleted)
        return facts, writes

    async def _stop_end_after(self, conn: asyncpg.Connection, plan: EquipmentPlan, series: dict[str, Series],
                              end: int, horizon: int) -> int | None:
        """When the stop in progress at the window's ``end`` ended, if the readings up to ``horizon`` tell: its
        downtime row is then written whole by this window, so a window boundary inside a stop that has ended
        rewrites nothing.  None: no stop in progress at ``end``, or it is still going."""
        if plan.state_parameter is None or not plan.calendar.scheduled_at(end) or end >= horizon:
            return None
        state = series.get(plan.state_parameter)
        last = state.just_before(end) if state is not None else None
        if last is None or plan.is_running(last.value):
            return None
        stretch_end = plan.calendar.scheduled_until(end, horizon)
        changed = await state_change_after(conn, plan, last.value, end, stretch_end)
        if changed is not None:
            return changed
        return stretch_end if stretch_end < horizon else None

    async def _window_start(self, conn: asyncpg.Connection, plan: EquipmentPlan, start: int
                            ) -> tuple[int, Stop | None]:
        """Where a window must begin to start at ``start``, and the stop it continues, if any."""
        for _ in range(10_000):
            candidate = await stop_covering(conn, plan, start)
            if candidate is None:
                return start, None
            before = await state_before(conn, plan, start)
            valid = (before is not None and before.value == candidate.value
                     and (candidate.open_at is None or candidate.open_at >= start)
                     and candidate.settled_at(plan, start) and plan.calendar.scheduled_before(start))
            if valid:
                return start, candidate
            earlier = plan.calendar.floor(candidate.start)
            if earlier >= start:  # cannot happen (the candidate began before start); never loop on it
                return start, None
            start = earlier
        raise RuntimeError(f"{plan.code}: no window start found before {from_us(start).isoformat()}")


def window_end(plan: EquipmentPlan, start: int, bound: int, horizon: int) -> int:
    """The end of a window from ``start``: the last cell boundary at or before ``bound``, or the end of the
    cell containing ``start`` when that cell ended by ``horizon`` but is longer than ``bound`` allows."""
    end = plan.calendar.floor(bound)
    if end > plan.calendar.floor(start) or bound <= start:
        return end
    cell = plan.calendar.cell_at(start)
    if cell is not None and cell.end <= horizon:
        return cell.end
    return end


def ceil_cell(plan: EquipmentPlan, instant: int, horizon: int) -> int:
    """``instant`` when it is a cell boundary (or unscheduled), else the end of its cell if that cell ended by
    ``horizon``, else its cell's start."""
    floor = plan.calendar.floor(instant)
    if floor == instant:
        return instant
    cell = plan.calendar.cell_at(instant)
    return cell.end if cell is not None and cell.end <= horizon else floor
