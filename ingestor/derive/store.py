"""The derivation's database side: reading a window's role readings, and writing its facts idempotently.

Reading: for each role tag, the last good reading before the window and the readings inside it, with repeated
values dropped by the server.  "Inside" is ``[start, end)`` for states, reasons, products and orders (a value
holds from its reading on) and ``(start, end]`` for counters (a reading counts the parts finished by its
instant, so one exactly at a boundary belongs to the window that ends there; "before" is then "at or before
``start``") (only changes matter to states, counters, products and orders; this keeps a
machine polled every second cheap to derive).  Several readings of one tag at one instant: the one inserted
last (highest ``event_id``) counts.  Bad-quality readings, NaN and infinities are ignored.

Writing: within one transaction, the window's rows replace the rows the derivation wrote before for the same
machine and time.  The rows are matched by their start: a row whose columns are unchanged is left alone
(same ``production_id``, no write), a changed one is updated in place, a new one inserted, one that is no
longer derived deleted.  So deriving a window twice changes nothing the second time, and the ids that
``fact_downtime`` or ``fact_scrap`` refer to stay put unless the segment itself disappears (references to a
deleted production row are moved to the row now covering its start).

Ownership: for a derived machine the derivation owns ``fact_production`` rows starting in a derived window
and ``fact_downtime`` rows starting there (and the row of a stop it continues).  Enter manual downtime
against equipment without roles.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import asyncpg

from ingestor.derive.facts import WindowFacts
from ingestor.derive.plan import DimensionIds, EquipmentPlan
from ingestor.derive.segments import from_us, to_us
from ingestor.derive.series import Point, Series
from ingestor.derive.states import Stop
from ingestor.plant import PlantConfig

_FINITE = "value NOT IN ('NaN'::float8, 'Infinity'::float8, '-Infinity'::float8)"

_CHANGES = f"""
SELECT parameter, event_ts, value
FROM (
    SELECT parameter, event_ts, value,
           lag(value) OVER (PARTITION BY parameter ORDER BY event_ts) AS previous
    FROM (
        SELECT DISTINCT ON (parameter, event_ts) parameter, event_ts, value
        FROM fact_sensor_event
        WHERE equipment_id = $1 AND parameter = ANY($2::text[]) AND quality < 2
          AND event_ts >= $3 AND event_ts <= $4 AND {_FINITE}
          AND CASE WHEN parameter = ANY($5::text[]) THEN event_ts > $3 ELSE event_ts < $4 END
        ORDER BY parameter, event_ts, event_id DESC
    ) latest
) changes
WHERE previous IS DISTINCT FROM value
ORDER BY parameter, event_ts
"""

_BEFORE = f"""
SELECT p.parameter, m.event_ts, v.value
FROM unnest($2::text[]) AS p(parameter)
CROSS JOIN LATERAL (
    SELECT max(f.event_ts) AS event_ts FROM fact_sensor_event f
    WHERE f.equipment_id = $1 AND f.parameter = p.parameter AND f.quality < 2
      AND f.event_ts < CASE WHEN p.parameter = ANY($4::text[]) THEN $3::timestamptz + interval '1 microsecond'
                            ELSE $3::timestamptz END
      AND f.{_FINITE}
) m
CROSS JOIN LATERAL (
    SELECT f.value FROM fact_sensor_event f
    WHERE f.equipment_id = $1 AND f.parameter = p.parameter AND f.event_ts = m.event_ts AND f.quality < 2
      AND f.{_FINITE}
    ORDER BY f.event_id DESC LIMIT 1
) v
"""

_FIRST = f"""
SELECT min(event_ts) FROM fact_sensor_event
WHERE equipment_id = $1 AND parameter = $2 AND quality < 2 AND {_FINITE}
"""

_PRODUCTION_COLUMNS = ("end_time", "date_id", "shift_id", "product_id", "order_number", "planned_production_time",
                       "operating_time", "planned_parts", "total_parts_produced", "good_parts", "scrap_parts")
_DOWNTIME_COLUMNS = ("end_time", "downtime_duration", "reason_id", "production_id")


async def load_ids(conn: asyncpg.Connection, plant: PlantConfig) -> DimensionIds:
    """The surrogate keys of the plant's codes, as the database has them."""
    equipment = {r["equipment_code"]: r["equipment_id"] for r in await conn.fetch(
        "SELECT equipment_code, equipment_id FROM dim_equipment")}
    reasons = {r["reason_code"]: r["reason_id"] for r in await conn.fetch(
        "SELECT reason_code, reason_id FROM dim_downtime_reason")}
    products = {r["product_code"]: r["product_id"] for r in await conn.fetch(
        "SELECT product_code, product_id FROM dim_product")}
    shifts = {(r["site_code"], r["shift_code"]): r["shift_id"] for r in await conn.fetch(
        "SELECT s.site_code, sh.shift_code, sh.shift_id FROM dim_shift sh JOIN dim_site s USING (site_id)")}
    return DimensionIds(equipment, reasons, products, shifts)


async def load_window(conn: asyncpg.Connection, plan: EquipmentPlan, start: int, end: int) -> dict[str, Series]:
    """Every role tag's readings for the window ``[start, end)`` (the counters' for ``(start, end]``)."""
    return await load_series(conn, plan.equipment_id, plan.parameters(), start, end, plan.counter_parameters())


async def load_series(conn: asyncpg.Connection, equipment_id: int, names: Sequence[str], start: int, end: int,
                      counters: Sequence[str] = ()) -> dict[str, Series]:
    """The readings of tags ``names`` of one machine for ``[start, end)``, as the derivation sees them; those
    of ``counters`` for ``(start, end]``, their ``before`` at or before ``start``."""
    begin, finish = from_us(start), from_us(end)
    before = {r["parameter"]: Point(to_us(r["event_ts"]), r["value"])
              for r in await conn.fetch(_BEFORE, equipment_id, list(names), begin, list(counters))}
    points: dict[str, list[Point]] = {name: [] for name in names}
    for r in await conn.fetch(_CHANGES, equipment_id, list(names), begin, finish, list(counters)):
        points[r["parameter"]].append(Point(to_us(r["event_ts"]), r["value"]))
    return {name: Series(before.get(name), tuple(points[name])) for name in names}


async def state_before(conn: asyncpg.Connection, plan: EquipmentPlan, instant: int) -> Point | None:
    """The last good state reading before ``instant``."""
    if plan.state_parameter is None:
        return None
    row = await conn.fetchrow(_BEFORE, plan.equipment_id, [plan.state_parameter], from_us(instant), [])
    return None if row is None else Point(to_us(row["event_ts"]), row["value"])


async def first_reading(conn: asyncpg.Connection, plan: EquipmentPlan) -> int | None:
    """When the machine's facts begin: its first good reading of the state tag (or of the part counter)."""
    found = await conn.fetchval(_FIRST, plan.equipment_id, plan.timeline_parameter)
    return None if found is None else to_us(found)


async def state_change_after(conn: asyncpg.Connection, plan: EquipmentPlan, value: float, start: int, limit: int
                             ) -> int | None:
    """The first instant in ``[start, limit)`` at which the state tag stops holding ``value``, if any."""
    assert plan.state_parameter is not None
    since = from_us(start)
    while True:
        row = await conn.fetchrow(
            f"SELECT event_ts FROM fact_sensor_event WHERE equipment_id = $1 AND parameter = $2 AND quality < 2 "
            f"AND event_ts >= $3 AND event_ts < $4 AND value <> $5 AND {_FINITE} ORDER BY event_ts LIMIT 1",
            plan.equipment_id, plan.state_parameter, since, from_us(limit), value)
        if row is None:
            return None
        last = await conn.fetchval(  # several readings at that instant: the one inserted last counts
            f"SELECT value FROM fact_sensor_event WHERE equipment_id = $1 AND parameter = $2 AND quality < 2 "
            f"AND event_ts = $3 AND {_FINITE} ORDER BY event_id DESC LIMIT 1",
            plan.equipment_id, plan.state_parameter, row["event_ts"])
        if last != value:
            return to_us(row["event_ts"])
        since = row["event_ts"] + timedelta(microseconds=1)


async def stop_covering(conn: asyncpg.Connection, plan: EquipmentPlan, instant: int) -> Stop | None:
    """The recorded stop in progress just before ``instant`` (started before it, ended at or after it, or
    still open when last derived), if any."""
    # Stops do not overlap, so only the last one that began before the instant can cover it (and this reads
    # one index entry, however long the machine's history).
    row = await conn.fetchrow(
        "SELECT start_time, end_time, open_at, state_value, planned_state, reason_id FROM derive_stop "
        "WHERE equipment_id = $1 AND start_time < $2 ORDER BY start_time DESC LIMIT 1",
        plan.equipment_id, from_us(instant))
    if row is None or (row["end_time"] or row["open_at"]) < from_us(instant):
        return None
    return Stop(to_us(row["start_time"]), None if row["end_time"] is None else to_us(row["end_time"]),
                row["state_value"], row["planned_state"], row["reason_id"],
                None if row["open_at"] is None else to_us(row["open_at"]))


@dataclass
class WriteResult:
    """What one window changed, per table and action."""

    inserted: dict[str, int] = field(default_factory=lambda: {"fact_production": 0, "fact_downtime": 0})
    updated: dict[str, int] = field(default_factory=lambda: {"fact_production": 0, "fact_downtime": 0})
    deleted: dict[str, int] = field(default_factory=lambda: {"fact_production": 0, "fact_downtime": 0})

    @property
    def changed(self) -> bool:
        return any(self.inserted.values()) or any(self.updated.values()) or any(self.deleted.values())

    def add(self, other: WriteResult) -> None:
        for mine, theirs in ((self.inserted, other.inserted), (self.updated, other.updated),
                             (self.deleted, other.deleted)):
            for table, count in theirs.items():
                mine[table] = mine.get(table, 0) + count


async def write_window(conn: asyncpg.Connection, plan: EquipmentPlan, facts: WindowFacts) -> WriteResult:
    """Make the database's facts for ``plan``'s machine in ``[facts.start, facts.end)`` equal ``facts``.  Call
    inside a transaction holding the machine's derivation lock."""
    result = WriteResult()
    equipment = plan.equipment_id
    begin, finish = from_us(facts.start), from_us(facts.end)

    # fact_production: match by start_time, update or insert; remember what disappears
    old = {to_us(r["start_time"]): r for r in await conn.fetch(
        "SELECT production_id, start_time, " + ", ".join(_PRODUCTION_COLUMNS) + " FROM fact_production "
        "WHERE equipment_id = $1 AND start_time >= $2 AND start_time < $3", equipment, begin, finish)}
    production_ids: dict[int, int] = {}
    updates: list[tuple[Any, ...]] = []
    inserts: list[tuple[Any, ...]] = []
    for row in facts.production:
        values = (from_us(row.end), row.date_id, row.shift_id, row.product_id, row.order_number,
                  row.planned_production_time, row.operating_time, row.planned_parts, row.total_parts_produced,
                  row.good_parts, row.scrap_parts)
        existing = old.pop(row.start, None)
        if existing is None:
            inserts.append((from_us(row.start), *values))
        else:
            production_ids[row.start] = existing["production_id"]
            if tuple(existing[c] for c in _PRODUCTION_COLUMNS) != values:
                updates.append((existing["production_id"], *values))
    if updates:
        assignments = ", ".join(f"{c} = ${i}" for i, c in enumerate(_PRODUCTION_COLUMNS, start=2))
        await conn.executemany(f"UPDATE fact_production SET {assignments} WHERE production_id = $1", updates)
        result.updated["fact_production"] = len(updates)
    if inserts:
        columns = ("start_time", *_PRODUCTION_COLUMNS)
        arrays = [list(column) for column in zip(*inserts, strict=True)]
        types = ("timestamptz", "timestamptz", "int", "int", "int", "text", "bigint", "bigint", "int", "int", "int",
                 "int")
        unnest = ", ".join(f"${i}::{t}[]" for i, t in enumerate(types, start=2))
        for r in await conn.fetch(
                f"INSERT INTO fact_production (equipment_id, {', '.join(columns)}) "
                f"SELECT $1, * FROM unnest({unnest}) RETURNING production_id, start_time", equipment, *arrays):
            production_ids[to_us(r["start_time"])] = r["production_id"]
        result.inserted["fact_production"] = len(inserts)

    # fact_downtime: the stops starting in the window, and the one carried into it
    carried = facts.carried_start
    scope = [from_us(carried)] if carried is not None else []
    old_downtime = {to_us(r["start_time"]): r for r in await conn.fetch(
        "SELECT downtime_id, start_time, " + ", ".join(_DOWNTIME_COLUMNS) + " FROM fact_downtime "
        "WHERE equipment_id = $1 AND ((start_time >= $2 AND start_time < $3) OR start_time = ANY($4::timestamptz[]))",
        equipment, begin, finish, scope)}
    d_updates: list[tuple[Any, ...]] = []
    d_inserts: list[tuple[Any, ...]] = []
    for stop in facts.downtime:
        if stop.production_start is not None:
            link = production_ids.get(stop.production_start)
        else:
            link = await conn.fetchval(
                "SELECT production_id FROM fact_production WHERE equipment_id = $1 AND start_time <= $2 "
                "AND end_time > $2 ORDER BY start_time DESC LIMIT 1", equipment, from_us(stop.start))
        d_values = (from_us(stop.end), stop.downtime_duration, stop.reason_id, link)
        existing = old_downtime.pop(stop.start, None)
        if existing is None:
            d_inserts.append((from_us(stop.start), *d_values))
        elif tuple(existing[c] for c in _DOWNTIME_COLUMNS) != d_values:
            d_updates.append((existing["downtime_id"], *d_values))
    if old_downtime:
        await conn.execute("DELETE FROM fact_downtime WHERE downtime_id = ANY($1::int[])",
                           [r["downtime_id"] for r in old_downtime.values()])
        result.deleted["fact_downtime"] = len(old_downtime)
    if d_updates:
        assignments = ", ".join(f"{c} = ${i}" for i, c in enumerate(_DOWNTIME_COLUMNS, start=2))
        await conn.executemany(f"UPDATE fact_downtime SET {assignments} WHERE downtime_id = $1", d_updates)
        result.updated["fact_downtime"] = len(d_updates)
    if d_inserts:
        await conn.executemany(
            "INSERT INTO fact_downtime (equipment_id, start_time, end_time, downtime_duration, reason_id, "
            "production_id) VALUES ($1, $2, $3, $4, $5, $6)", [(equipment, *row) for row in d_inserts])
        result.inserted["fact_downtime"] = len(d_inserts)

    # production rows no longer derived: move what refers to them to the row now covering their start
    if old:
        gone = [r["production_id"] for r in old.values()]
        for table in ("fact_downtime", "fact_scrap"):
            await conn.execute(
                f"UPDATE {table} t SET production_id = (SELECT p.production_id FROM fact_production p "
                "WHERE p.equipment_id = $1 AND p.start_time <= o.start_time AND p.end_time > o.start_time "
                "AND p.production_id <> ALL($2::int[]) ORDER BY p.start_time DESC LIMIT 1) "
                "FROM fact_production o WHERE o.production_id = t.production_id AND t.production_id = ANY($2::int[])",
                equipment, gone)
        await conn.execute("DELETE FROM fact_production WHERE production_id = ANY($1::int[])", gone)
        result.deleted["fact_production"] = len(gone)

    await _write_stops(conn, plan, facts)
    return result


async def _write_stops(conn: asyncpg.Connection, plan: EquipmentPlan, facts: WindowFacts) -> None:
    scope = [from_us(facts.carried_start)] if facts.carried_start is not None else []
    await conn.execute(
        "DELETE FROM derive_stop WHERE equipment_id = $1 AND ((start_time >= $2 AND start_time < $3) "
        "OR start_time = ANY($4::timestamptz[]))",
        plan.equipment_id, from_us(facts.start), from_us(facts.end), scope)
    rows = [(plan.equipment_id, from_us(s.start), None if s.end is None else from_us(s.end),
             None if s.open_at is None else from_us(s.open_at), s.value, s.planned_state, s.reason_id)
            for s in facts.stops if s.start >= facts.start or s.start == facts.carried_start]
    if rows:
        await conn.executemany(
            "INSERT INTO derive_stop (equipment_id, start_time, end_time, open_at, state_value, planned_state, "
            "reason_id) VALUES ($1, $2, $3, $4, $5, $6, $7)", rows)


async def read_facts(conn: asyncpg.Connection, equipment_ids: Sequence[int]) -> tuple[list[tuple[Any, ...]],
                                                                                      list[tuple[Any, ...]]]:
    """Every production and downtime row of these machines, without surrogate ids or ``created_at`` (the
    downtime row's production row named by its start): for comparing two derivations."""
    production = [tuple(r) for r in await conn.fetch(
        "SELECT equipment_id, start_time, " + ", ".join(_PRODUCTION_COLUMNS) + ", rework_parts, operator_id "
        "FROM fact_production WHERE equipment_id = ANY($1::int[]) ORDER BY equipment_id, start_time",
        list(equipment_ids))]
    downtime = [tuple(r) for r in await conn.fetch(
        "SELECT d.equipment_id, d.start_time, d.end_time, d.downtime_duration, d.reason_id, d.is_planned, "
        "d.comments, p.start_time AS production_start FROM fact_downtime d "
        "LEFT JOIN fact_production p ON p.production_id = d.production_id "
        "WHERE d.equipment_id = ANY($1::int[]) ORDER BY d.equipment_id, d.start_time", list(equipment_ids))]
    return production, downtime
