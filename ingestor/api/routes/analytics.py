"""The plant's analytics: OEE, production, the downtime Pareto, MTBF/MTTR, live shift OEE and the plant tree.

Each handler parses its parameters into a :class:`~ingestor.database.analytics.Window` and a
:class:`~ingestor.database.analytics.PlantScope`, calls one query function of :mod:`ingestor.database.analytics`
(which owns the SQL and the formulas) and returns its answer as a response model.  docs/api.md, "Analytics
endpoints", says what every parameter and field means.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import Field

from ingestor.api.deps import DbPool
from ingestor.api.models import ApiModel
from ingestor.api.problems import ApiProblem
from ingestor.database import analytics
from ingestor.database.analytics import EquipmentState, Granularity, PlantScope, TrendDirection, Window

router = APIRouter(prefix="/api", tags=["metrics"])

DEFAULT_WINDOW = dt.timedelta(days=7)
MAX_WINDOW = dt.timedelta(days=1096)
"""The longest window a request may ask for: three years, one of them a leap year."""

_MAX_TIMESTAMP_LENGTH = 64


# ---------------------------------------------------------------------------------------------------------
# Parameters


def _instant(name: str, text: str) -> dt.datetime:
    """An ISO 8601 timestamp; without an offset it is UTC.  A 400 problem names the parameter otherwise."""
    try:
        if len(text) > _MAX_TIMESTAMP_LENGTH or "\x00" in text:
            raise ValueError
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ApiProblem(400, "invalid request parameters",
                         f"{name}: expected an ISO 8601 timestamp such as 2025-06-09T06:00:00+02:00 "
                         "(UTC when it has no offset)") from None
    try:
        return (moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)
    except OverflowError:
        raise ApiProblem(400, "invalid request parameters", f"{name}: out of range in UTC") from None


def _window(start: str | None, end: str | None) -> Window:
    try:
        stop = _instant("to", end) if end is not None else dt.datetime.now(dt.UTC)
        begin = _instant("from", start) if start is not None else stop - DEFAULT_WINDOW
    except OverflowError:
        raise ApiProblem(400, "invalid request parameters", "to: too early for a default window") from None
    if begin >= stop:
        raise ApiProblem(400, "invalid request parameters",
                         f"from ({begin.isoformat()}) must be before to ({stop.isoformat()})")
    if stop - begin > MAX_WINDOW:
        raise ApiProblem(400, "invalid request parameters",
                         f"the window from {begin.isoformat()} to {stop.isoformat()} is longer than "
                         f"{MAX_WINDOW.days} days")
    return Window(begin, stop)


def _codes(values: list[str] | None) -> tuple[str, ...]:
    """Repeated parameters and comma-separated lists, in order, blanks dropped, each code once."""
    codes = (code.strip() for value in values or () for code in value.split(","))
    return tuple(dict.fromkeys(code for code in codes if code))


_CODES = "{level} codes: repeat the parameter or separate codes with commas; unknown codes are a 404"

From = Annotated[str | None, Query(alias="from", description=(
    "start of the window, ISO 8601 (UTC when it has no offset); records count when they start in [from, to). "
    "Default: 7 days before `to`"), json_schema_extra={"format": "date-time"})]
To = Annotated[str | None, Query(alias="to", description=(
    "end of the window, ISO 8601 (UTC when it has no offset). Default: now"),
                                 json_schema_extra={"format": "date-time"})]
Sites = Annotated[list[str] | None, Query(alias="site", description=_CODES.format(level="site"))]
Areas = Annotated[list[str] | None, Query(alias="area", description=_CODES.format(level="area"))]
WorkCenters = Annotated[list[str] | None, Query(alias="workCenter",
                                                description=_CODES.format(level="work center"))]
EquipmentCodes = Annotated[list[str] | None, Query(alias="equipment", description=_CODES.format(level="equipment"))]
Shifts = Annotated[list[str] | None, Query(alias="shift", description=(
    "shift codes (every site's shift of that code); repeat or separate with commas"))]


@dataclass(frozen=True)
class Filters:
    """The window and the part of the plant a request asks about."""

    window: Window
    scope: PlantScope


def plant_scope(site: Sites = None, area: Areas = None, work_center: WorkCenters = None,
                equipment: EquipmentCodes = None) -> PlantScope:
    return PlantScope(_codes(site), _codes(area), _codes(work_center), _codes(equipment))


def filters(scope: Annotated[PlantScope, Depends(plant_scope)], start: From = None, end: To = None,
            shift: Shifts = None) -> Filters:
    return Filters(_window(start, end), replace(scope, shifts=_codes(shift)))


AnalyticsFilters = Annotated[Filters, Depends(filters)]


@contextmanager
def _answering() -> Iterator[None]:
    """Turns what the query functions refuse into problems: unknown codes are a 404."""
    try:
        yield
    except analytics.UnknownCodes as exc:
        raise ApiProblem(404, "unknown code", str(exc)) from None
    except analytics.NotPerShift as exc:
        raise ApiProblem(400, "invalid request parameters", f"shift: {exc}") from None


# ---------------------------------------------------------------------------------------------------------
# Response bodies


class Equipment(ApiModel):
    id: int
    code: str
    name: str


class Shift(ApiModel):
    code: str
    name: str


class OeeMetrics(ApiModel):
    """ISO 22400 ratios 0..1 (docs/oee.md); null where unknown."""

    availability: float | None
    performance: float | None
    quality: float | None
    oee: float | None


class Trend(ApiModel):
    """The window's OEE against the OEE of the window of the same length just before it."""

    direction: TrendDirection = Field(description="'stable' when |change| < 0.01 or the change is unknown")
    change: float | None = Field(description="OEE of the window minus OEE of the window before; null when "
                                             "either is unknown")


class OeePeriod(ApiModel):
    date: dt.date = Field(description="the production day (site-local); for weeks the Monday of the ISO week")
    week: str | None = Field(description="the ISO week (2025-W24) when granularity=week")
    shift: Shift | None = Field(description="the shift when granularity=shift")
    metrics: OeeMetrics


class EquipmentOee(ApiModel):
    equipment: Equipment
    metrics: OeeMetrics
    trend: Trend
    periods: list[OeePeriod]


class DateRange(ApiModel):
    start: dt.datetime
    end: dt.datetime


def _range(window: Window) -> DateRange:
    return DateRange(start=window.start, end=window.end)


_EFFICIENCY = ("ideal time of the parts produced / planned production time; above 1 only when parts were made "
               "faster than their ideal cycle time; null when an ideal cycle time is missing or nothing was planned")


class ProductionSummary(ApiModel):
    total_parts: int
    good_parts: int
    scrap_parts: int
    planned_hours: float = Field(description="planned production time of the records, hours")
    efficiency: float | None = Field(description=_EFFICIENCY)


class EquipmentProduction(ApiModel):
    equipment_id: int
    equipment_code: str
    equipment_name: str
    production: int = Field(description="parts produced (good and scrap)")
    good_parts: int
    scrap_parts: int
    planned_hours: float = Field(description="planned production time of the records, hours")
    efficiency: float | None = Field(description=_EFFICIENCY)


class ProductionReport(ApiModel):
    date_range: DateRange
    summary: ProductionSummary
    by_equipment: list[EquipmentProduction]


class DowntimeReason(ApiModel):
    reason_code: str
    description: str
    category: str
    occurrences: int
    hours: float
    hours_per_equipment: float = Field(description="hours / the number of equipment with downtime of this reason")
    share: float | None = Field(description="of the window's downtime hours, 0..1")
    cumulative_share: float | None = Field(description="this reason's share and those of the larger ones, 0..1")
    in_head: bool = Field(description="among the reasons making up the first 80 %, the one crossing 80 % included")


class DowntimePareto(ApiModel):
    date_range: DateRange
    total_hours: float
    reasons: list[DowntimeReason]


class EquipmentReliability(ApiModel):
    equipment: Equipment
    failures: int = Field(description="stops whose reason is a failure, starting in the window; a breakdown "
                                      "still in progress included")
    operating_hours: float
    failure_hours: float = Field(description="downtime hours of the failures, a breakdown in progress up to now")
    mtbf_hours: float | None = Field(description="operating hours / failures; null without failures")
    mttr_hours: float | None = Field(description="mean time to restoration of the restored failures (a breakdown "
                                                 "in progress is not in it); null without one")
    open_failures: int = Field(description="failures still in progress (counted in failures, not in MTTR)")
    open_failure_hours: float = Field(description="their repair time so far")


class ReliabilityReport(ApiModel):
    date_range: DateRange
    equipment: list[EquipmentReliability]


class LiveEquipmentOee(ApiModel):
    equipment: Equipment
    site: str
    shift: Shift
    date: dt.date
    metrics: OeeMetrics
    last_update: dt.datetime | None


class LiveOeeReport(ApiModel):
    at: dt.datetime
    equipment: list[LiveEquipmentOee]


class Reason(ApiModel):
    code: str
    description: str
    category: str


class OpenStop(ApiModel):
    since: dt.datetime
    planned: bool
    seen_at: dt.datetime
    reason: Reason | None


class EquipmentStatus(ApiModel):
    state: EquipmentState
    since: dt.datetime | None = Field(description="when the state began, where known")
    reason: Reason | None = Field(description="the reason of a stop, where known")
    value: float | None = Field(description="the machine's state value (PLC), from the live state")
    updated_at: dt.datetime | None = Field(description="when the live state was last written; null without one")
    open_stop: OpenStop | None = Field(description="the stop the derivation saw going at the end of its last run")
    last_production_end: dt.datetime | None = Field(description="end of the latest production record")


class PlantEquipment(ApiModel):
    id: int
    code: str
    name: str
    type: str | None
    active: bool
    status: EquipmentStatus


class PlantWorkCenter(ApiModel):
    id: int
    code: str
    name: str
    equipment: list[PlantEquipment]


class PlantArea(ApiModel):
    id: int
    code: str
    name: str
    work_centers: list[PlantWorkCenter]


class PlantSite(ApiModel):
    id: int
    code: str
    name: str
    timezone: str
    areas: list[PlantArea]


class PlantTree(ApiModel):
    sites: list[PlantSite]


# ---------------------------------------------------------------------------------------------------------
# Endpoints

_ERRORS: dict[int | str, dict[str, str]] = {
    400: {"description": "a malformed parameter, `from` not before `to`, or a window over 1096 days"},
    404: {"description": "an unknown site, area, work center, equipment or shift code (named in `detail`)"},
}


@router.get("/manufacturing-metrics/oee", summary="OEE per equipment over a window, per period, with its trend",
            responses=_ERRORS)
async def oee(pool: DbPool, given: AnalyticsFilters,
              granularity: Annotated[Granularity, Query(description="the periods: production day (default), "
                                                                    "ISO week, or production day and shift")]
              = "day") -> list[EquipmentOee]:
    with _answering():
        result = await analytics.oee(pool, given.window, given.scope, granularity)
    return [EquipmentOee.model_validate(item, from_attributes=True) for item in result]


@router.get("/manufacturing-metrics/production", summary="parts produced and efficiency, in total and per equipment",
            responses=_ERRORS)
async def production(pool: DbPool, given: AnalyticsFilters) -> ProductionReport:
    with _answering():
        result = await analytics.production(pool, given.window, given.scope)
    return ProductionReport(
        date_range=_range(given.window),
        summary=ProductionSummary.model_validate(result.summary, from_attributes=True),
        by_equipment=[EquipmentProduction(
            equipment_id=e.equipment.id, equipment_code=e.equipment.code, equipment_name=e.equipment.name,
            production=e.totals.total_parts, good_parts=e.totals.good_parts, scrap_parts=e.totals.scrap_parts,
            planned_hours=e.totals.planned_hours, efficiency=e.totals.efficiency) for e in result.by_equipment])


@router.get("/manufacturing-metrics/downtime", summary="Pareto of the downtime that affects OEE, by reason",
            responses=_ERRORS)
async def downtime(pool: DbPool, given: AnalyticsFilters) -> DowntimePareto:
    with _answering():
        result = await analytics.downtime_pareto(pool, given.window, given.scope)
    return DowntimePareto(
        date_range=_range(given.window), total_hours=result.total_hours,
        reasons=[DowntimeReason(reason_code=x.code, description=x.description, category=x.category,
                                occurrences=x.occurrences, hours=x.hours, hours_per_equipment=x.hours_per_equipment,
                                share=x.share, cumulative_share=x.cumulative_share, in_head=x.in_head)
                 for x in result.reasons])


@router.get("/manufacturing-metrics/reliability", summary="MTBF and MTTR per equipment over a window (ISO 14224)",
            responses={**_ERRORS, 400: {"description": _ERRORS[400]["description"] + ", or `shift` (MTBF and "
                                                       "MTTR have no shift filter)"}})
async def reliability(pool: DbPool, given: AnalyticsFilters) -> ReliabilityReport:
    with _answering():
        result = await analytics.reliability(pool, given.window, given.scope)
    return ReliabilityReport(date_range=_range(given.window),
                             equipment=[EquipmentReliability.model_validate(x, from_attributes=True) for x in result])


@router.get("/manufacturing-metrics/oee/live", summary="OEE of the shift running now, per equipment",
            responses={404: _ERRORS[404], 400: {"description": "a malformed parameter"}})
async def live_oee(pool: DbPool, scope: Annotated[PlantScope, Depends(plant_scope)], shift: Shifts = None,
                   at: Annotated[str | None, Query(description="the instant whose shift is shown, ISO 8601 (UTC "
                                                               "when it has no offset). Default: now",
                                                   json_schema_extra={"format": "date-time"})] = None,
                   ) -> LiveOeeReport:
    instant = _instant("at", at) if at is not None else dt.datetime.now(dt.UTC)
    with _answering():
        result = await analytics.live_oee(pool, instant, replace(scope, shifts=_codes(shift)))
    return LiveOeeReport(at=instant, equipment=[LiveEquipmentOee.model_validate(x, from_attributes=True)
                                                for x in result])


@router.get("/plant", summary="the plant tree with each equipment's current state",
            responses={404: _ERRORS[404], 400: {"description": "a malformed parameter"}})
async def plant(pool: DbPool, scope: Annotated[PlantScope, Depends(plant_scope)]) -> PlantTree:
    with _answering():
        result = await analytics.plant(pool, scope)
    return PlantTree(sites=[PlantSite.model_validate(site, from_attributes=True) for site in result])

