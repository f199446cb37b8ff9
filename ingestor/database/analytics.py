"""The analytics the REST API serves: one function per question, each running its SQL file of
:mod:`ingestor.database.queries` and returning plain records.

Every function takes the part of the plant the question is about as a :class:`PlantScope` of business codes,
resolves it with ``api_scope.sql`` (codes that do not exist raise :class:`UnknownCodes`), and a time window
as a :class:`Window` (records count by their start in ``[start, end)``).  The formulas are those of migration
0004 (``oee_ratios()``, ``production_ideal_time``, ``reliability()``): nothing here computes a ratio, it only
reads them, so the API, the dashboards' SQL files and the views cannot disagree.  docs/api.md describes what
each answer means.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Literal

import asyncpg

from ingestor.database import queries

Granularity = Literal["shift", "day", "week"]
EquipmentState = Literal["running", "stopped", "planned_stop", "unknown"]
TrendDirection = Literal["up", "down", "stable"]

MAX_CODE_LENGTH = 50
"""The longest business code the dimension tables hold (VARCHAR(50)); a longer one cannot be known."""


def storable_code(code: str) -> bool:
    """Whether a dimension could hold this code: PostgreSQL text has no NUL, and codes are at most
    MAX_CODE_LENGTH long.  One that could not is unknown without asking the server (which would refuse the
    NUL with an error rather than answer that no row has it)."""
    return "\x00" not in code and len(code) <= MAX_CODE_LENGTH


@dataclass(frozen=True)
class Window:
    """A half-open time window ``[start, end)`` of aware instants."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("window bounds need a time zone")
        if self.start >= self.end:
            raise ValueError(f"window start {self.start.isoformat()} is not before its end {self.end.isoformat()}")

    @property
    def length(self) -> timedelta:
        return self.end - self.start


@dataclass(frozen=True)
class PlantScope:
    """Business codes selecting part of the plant.  An empty level does not filter; the levels combine with
    AND, the codes of one level with OR.  ``shifts`` are shift codes (every site's shift of that code)."""

    sites: tuple[str, ...] = ()
    areas: tuple[str, ...] = ()
    work_centers: tuple[str, ...] = ()
    equipment: tuple[str, ...] = ()
    shifts: tuple[str, ...] = ()


class UnknownCodes(LookupError):
    """Codes of a :class:`PlantScope` that are not in the plant, by level (``site``, ``area``, ``work center``,
    ``equipment``, ``shift``)."""

    def __init__(self, unknown: dict[str, tuple[str, ...]]) -> None:
        self.unknown = {level: codes for level, codes in unknown.items() if codes}
        super().__init__("; ".join(
            f"unknown {level} {'code' if len(codes) == 1 else 'codes'} {', '.join(repr(c) for c in codes)}"
            for level, codes in self.unknown.items()))


@dataclass(frozen=True)
class Selection:
    """A resolved scope: dim_equipment and dim_shift ids (``None``: no filter)."""

    equipment_ids: list[int] | None
    shift_ids: list[int] | None


@dataclass(frozen=True)
class EquipmentRef:
    id: int
    code: str
    name: str


@dataclass(frozen=True)
class ShiftRef:
    code: str
    name: str


@dataclass(frozen=True)
class OeeRatios:
    """ISO 22400 ratios 0..1 from ``oee_ratios()``; ``None`` where unknown."""

    availability: float | None
    performance: float | None
    quality: float | None
    oee: float | None


@dataclass(frozen=True)
class Trend:
    direction: TrendDirection
    change: float | None


@dataclass(frozen=True)
class OeePeriod:
    date: date
    week: str | None
    shift: ShiftRef | None
    metrics: OeeRatios


@dataclass(frozen=True)
class EquipmentOee:
    equipment: EquipmentRef
    metrics: OeeRatios
    trend: Trend
    periods: list[OeePeriod] = field(default_factory=list)


@dataclass(frozen=True)
class ProductionTotals:
    total_parts: int
    good_parts: int
    scrap_parts: int
    planned_hours: float
    efficiency: float | None


@dataclass(frozen=True)
class EquipmentProduction:
    equipment: EquipmentRef
    totals: ProductionTotals


@dataclass(frozen=True)
class Production:
    summary: ProductionTotals
    by_equipment: list[EquipmentProduction]


@dataclass(frozen=True)
class DowntimeReason:
    code: str
    description: str
    category: str
    occurrences: int
    hours: float
    hours_per_equipment: float
    share: float | None
    cumulative_share: float | None
    in_head: bool


@dataclass(frozen=True)
class DowntimePareto:
    total_hours: float
    reasons: list[DowntimeReason]


@dataclass(frozen=True)
class Reliability:
    equipment: EquipmentRef
    failures: int
    operating_hours: float
    failure_hours: float
    mtbf_hours: float | None
    mttr_hours: float | None
    open_failures: int
    open_failure_hours: float


@dataclass(frozen=True)
class LiveOee:
    equipment: EquipmentRef
    site: str
    shift: ShiftRef
    date: date
    metrics: OeeRatios
    last_update: datetime | None


@dataclass(frozen=True)
class Reason:
    code: str
    description: str
    category: str


@dataclass(frozen=True)
class OpenStop:
    """A stop the derivation saw going at the end of its last window (``derive_stop`` without an end)."""

    since: datetime
    planned: bool
    seen_at: datetime
    reason: Reason | None


@dataclass(frozen=True)
class EquipmentStatus:
    """The machine's live state (``live_equipment_state``), else what its open stop says, else unknown."""

    state: EquipmentState
    since: datetime | None
    reason: Reason | None
    value: float | None
    updated_at: datetime | None
    open_stop: OpenStop | None
    last_production_end: datetime | None


@dataclass(frozen=True)
class PlantEquipment:
    id: int
    code: str
    name: str
    type: str | None
    active: bool
    status: EquipmentStatus


@dataclass(frozen=True)
class PlantWorkCenter:
    id: int
    code: str
    name: str
    equipment: list[PlantEquipment] = field(default_factory=list)


@dataclass(frozen=True)
class PlantArea:
    id: int
    code: str
    name: str
    work_centers: list[PlantWorkCenter] = field(default_factory=list)


@dataclass(frozen=True)
class PlantSite:
    id: int
    code: str
    name: str
    timezone: str
    areas: list[PlantArea] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------------
# The queries


async def resolve_scope(db: asyncpg.Pool | asyncpg.Connection, scope: PlantScope) -> Selection:
    """The equipment and shift ids of ``scope``; :class:`UnknownCodes` names every code not in the plant."""
    levels = {"site": scope.sites, "area": scope.areas, "work center": scope.work_centers,
              "equipment": scope.equipment, "shift": scope.shifts}
    impossible = {level: tuple(c for c in codes if not storable_code(c)) for level, codes in levels.items()}
    if any(impossible.values()):
        raise UnknownCodes(impossible)
    row = await db.fetchrow(queries.load("api_scope"), *(list(codes) or None for codes in levels.values()))
    unknown = dict(zip(levels, (tuple(row[c]) for c in ("unknown_sites", "unknown_areas", "unknown_work_centers",
                                                        "unknown_equipment", "unknown_shifts")), strict=True))
    if any(unknown.values()):
        raise UnknownCodes(unknown)
    return Selection(row["equipment_ids"], row["shift_ids"])


def _ratios(row: asyncpg.Record) -> OeeRatios:
    return OeeRatios(row["availability"], row["performance"], row["quality"], row["oee"])


def _equipment(row: asyncpg.Record) -> EquipmentRef:
    return EquipmentRef(row["equipment_id"], row["equipment_code"], row["equipment_name"])


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


async def oee(db: asyncpg.Pool | asyncpg.Connection, window: Window, scope: PlantScope,
              granularity: Granularity = "day") -> list[EquipmentOee]:
    """OEE per equipment with records in ``window``, per period, and its trend against the window before."""
    chosen = await resolve_scope(db, scope)
    rows = await db.fetch(queries.load("api_oee"), window.start, window.end, chosen.equipment_ids,
                          chosen.shift_ids, granularity)
    result: list[EquipmentOee] = []
    for row in rows:
        if row["kind"] == "window":
            result.append(EquipmentOee(_equipment(row), _ratios(row),
                                       Trend(row["trend_direction"], row["trend_change"])))
        else:
            shift = ShiftRef(row["shift_code"], row["shift_name"]) if row["shift_code"] is not None else None
            result[-1].periods.append(OeePeriod(row["period_date"], row["iso_week"], shift, _ratios(row)))
    return result


def _totals(row: asyncpg.Record) -> ProductionTotals:
    return ProductionTotals(row["total_parts"], row["good_parts"], row["scrap_parts"], float(row["planned_hours"]),
                            row["efficiency"])


async def production(db: asyncpg.Pool | asyncpg.Connection, window: Window, scope: PlantScope) -> Production:
    """Parts and efficiency over ``window``, in total and per equipment with records in it."""
    chosen = await resolve_scope(db, scope)
    rows = await db.fetch(queries.load("api_production"), window.start, window.end, chosen.equipment_ids,
                          chosen.shift_ids)
    summary, *per_equipment = rows
    return Production(_totals(summary), [EquipmentProduction(_equipment(r), _totals(r)) for r in per_equipment])


async def downtime_pareto(db: asyncpg.Pool | asyncpg.Connection, window: Window,
                          scope: PlantScope) -> DowntimePareto:
    """Every reason of the OEE-relevant downtime starting in ``window``, largest first (downtime_pareto.sql)."""
    chosen = await resolve_scope(db, scope)
    rows = await db.fetch(queries.load("downtime_pareto"), window.start, window.end, chosen.equipment_ids,
                          chosen.shift_ids)
    return DowntimePareto(
        float(sum(r["total_hours"] for r in rows)),
        [DowntimeReason(r["reason_code"], r["reason_description"], r["reason_category"], r["occurrence_count"],
                        float(r["total_hours"]), float(r["avg_hours_per_equipment"]), _float(r["share"]),
                        _float(r["cumulative_share"]), r["in_head"]) for r in rows])


class NotPerShift(ValueError):
    """A question that has no per-shift answer was asked for some shifts."""


async def reliability(db: asyncpg.Pool | asyncpg.Connection, window: Window,
                      scope: PlantScope) -> list[Reliability]:
    """MTBF and MTTR of every equipment in scope over ``window`` (mtbf_mttr.sql, ``reliability()``).

    ``reliability()`` has no shift filter, so a scope with shifts raises :class:`NotPerShift` rather than
    answering for every shift."""
    if scope.shifts:
        raise NotPerShift("MTBF and MTTR are per equipment over the whole window: they have no shift filter")
    chosen = await resolve_scope(db, scope)
    rows = await db.fetch(queries.load("mtbf_mttr"), window.start, window.end, chosen.equipment_ids)
    return [Reliability(_equipment(r), r["failure_count"], float(r["operating_hours"]),
                        float(r["total_downtime_hours"]), _float(r["mtbf_hours"]), _float(r["mttr_hours"]),
                        r["open_failure_count"], float(r["open_failure_hours"]))
            for r in rows]


async def live_oee(db: asyncpg.Pool | asyncpg.Connection, now: datetime, scope: PlantScope) -> list[LiveOee]:
    """OEE of the shift running at ``now`` per equipment, lowest first (live_shift_oee.sql)."""
    chosen = await resolve_scope(db, scope)
    rows = await db.fetch(queries.load("live_shift_oee"), now, chosen.equipment_ids, chosen.shift_ids)
    return [LiveOee(_equipment(r), r["site_code"], ShiftRef(r["shift_code"], r["shift_name"]),
                    _date_of(r["date_id"]), _ratios(r), r["last_update"]) for r in rows]


def _date_of(date_id: int) -> date:
    return date(date_id // 10000, date_id // 100 % 100, date_id % 100)


def _reason(code: str | None, description: str | None, category: str | None) -> Reason | None:
    return None if code is None or description is None or category is None else Reason(code, description, category)


async def plant(db: asyncpg.Pool | asyncpg.Connection, scope: PlantScope) -> list[PlantSite]:
    """The plant tree with each equipment's state (api_plant.sql); a scope keeps only the branches leading to
    its equipment.  ``scope.shifts`` does not apply and must be empty."""
    if scope.shifts:
        raise NotPerShift("the plant tree has no shift filter")
    chosen = await resolve_scope(db, scope)
    rows = await db.fetch(queries.load("api_plant"), chosen.equipment_ids)
    return _tree(rows)


def _tree(rows: Sequence[asyncpg.Record]) -> list[PlantSite]:
    sites: dict[int, PlantSite] = {}
    areas: dict[int, PlantArea] = {}
    centers: dict[int, PlantWorkCenter] = {}
    for r in rows:
        site = sites.get(r["site_id"])
        if site is None:
            site = sites[r["site_id"]] = PlantSite(r["site_id"], r["site_code"], r["site_name"], r["timezone"])
        if r["area_id"] is None:
            continue
        area = areas.get(r["area_id"])
        if area is None:
            area = areas[r["area_id"]] = PlantArea(r["area_id"], r["area_code"], r["area_name"])
            site.areas.append(area)
        if r["work_center_id"] is None:
            continue
        center = centers.get(r["work_center_id"])
        if center is None:
            center = centers[r["work_center_id"]] = PlantWorkCenter(r["work_center_id"], r["work_center_code"],
                                                                    r["work_center_name"])
            area.work_centers.append(center)
        if r["equipment_id"] is None:
            continue
        open_stop = None
        if r["open_stop_since"] is not None:
            open_stop = OpenStop(r["open_stop_since"], r["open_stop_planned"], r["open_stop_seen_at"],
                                 _reason(r["open_stop_reason_code"], r["open_stop_reason_description"],
                                         r["open_stop_reason_category"]))
        status = EquipmentStatus(r["state"], r["state_since"],
                                 _reason(r["state_reason_code"], r["state_reason_description"],
                                         r["state_reason_category"]),
                                 r["state_value"], r["state_updated_at"], open_stop, r["last_production_end"])
        center.equipment.append(PlantEquipment(r["equipment_id"], r["equipment_code"], r["equipment_name"],
                                               r["equipment_type"], r["is_active"], status))
    return list(sites.values())
