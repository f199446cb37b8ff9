"""The plant model from the YAML tag map: sites → areas → work centers → equipment, plus products,
downtime reasons, shifts and units.  These become the ``dim_*`` tables at startup.

Codes are business keys: they are what operators write in tag maps and what the database upserts by.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, time
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator

from ingestor.contract import Duration, StrictModel

_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/\-]*$")


def _check_code(value: str) -> str:
    if not _CODE.match(value):
        raise ValueError(
            f"{value!r} is not a valid code: use letters, digits and _ . : / - (starting with a letter or digit)")
    return value


Code = Annotated[str, Field(min_length=1, max_length=50), AfterValidator(_check_code)]
"""A business key: equipment code, product code, reason code…"""


def _parse_clock(value: Any) -> Any:
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})(?::(\d{2}))?\s*", value)
        if not match:
            raise ValueError(f"expected a time of day as HH:MM, got {value!r}")
        hour, minute, second = int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)
        if hour == 24 and minute == 0 and second == 0:
            return time(0, 0)
        if hour > 23 or minute > 59 or second > 59:
            raise ValueError(f"{value!r} is not a time of day")
        return time(hour, minute, second)
    if isinstance(value, time):
        return value
    raise ValueError(f"expected a time of day as HH:MM (quoted or not), got {value!r}")


ClockTime = Annotated[time, BeforeValidator(_parse_clock)]


def _criticality(value: Any) -> Any:
    return value.capitalize() if isinstance(value, str) else value


class ShiftConfig(StrictModel):
    """One shift of a site's daily calendar, in the site's local time.  ``end`` at or before ``start`` means
    the shift runs past midnight (22:00 → 06:00); ``start == end`` is a 24-hour shift."""

    code: Code
    name: str = Field(min_length=1, max_length=100)
    start: ClockTime
    end: ClockTime

    def minutes(self) -> tuple[int, int]:
        """Start and end as minutes after midnight; the end is past 1440 when the shift crosses midnight."""
        start = self.start.hour * 60 + self.start.minute + self.start.second / 60
        end = self.end.hour * 60 + self.end.minute + self.end.second / 60
        if end <= start:
            end += 1440
        return int(start), int(end)


class CounterRole(StrictModel):
    """A cumulative counter tag.  Counters wrap at 2**bits and may be reset by the PLC."""

    parameter: str = Field(min_length=1, max_length=100)
    bits: Literal[16, 32, 64] = 32


class StateRole(StrictModel):
    """The machine-state tag: which PLC values mean running or a planned stop (any other value is an
    unplanned stop), and which reason-code values map to which downtime reason."""

    parameter: str = Field(min_length=1, max_length=100)
    running: list[float] = Field(min_length=1)
    planned_stop: list[float] = []
    reason_parameter: str | None = None
    reasons: dict[int, Code] = Field(default_factory=dict, description="PLC reason value → reason code")
    default_unplanned_reason: Code | None = None
    default_planned_reason: Code | None = None
    micro_stop: Duration = Field(default=0.0, ge=0, description="stops shorter than this are micro-stops")

    @model_validator(mode="after")
    def _disjoint(self) -> StateRole:
        both = set(self.running) & set(self.planned_stop)
        if both:
            raise ValueError(f"values {sorted(both)} are listed as both running and planned_stop")
        # every stop needs a reason to become a downtime row, also when the PLC reports none
        if self.default_unplanned_reason is None:
            raise ValueError("give default_unplanned_reason: the reason of an unplanned stop the PLC gives no "
                             "reason code for (e.g. MECH_FAIL, or a reason of your own such as UNKNOWN)")
        if self.planned_stop and self.default_planned_reason is None:
            raise ValueError("give default_planned_reason: the reason of a planned stop the PLC gives no reason "
                             "code for (e.g. SCHED_MAINT)")
        return self


class CodeMapRole(StrictModel):
    """A numeric tag whose PLC values stand for codes (the current product, for instance)."""

    parameter: str = Field(min_length=1, max_length=100)
    codes: dict[int, Code] = Field(default_factory=dict)


class EquipmentRoles(StrictModel):
    """Which of this equipment's parameters drive the derived production and downtime facts."""

    part_counter: CounterRole | None = None
    good_counter: CounterRole | None = None
    scrap_counter: CounterRole | None = None
    state: StateRole | None = None
    product: CodeMapRole | None = None
    order_number: str | None = Field(default=None, description="parameter holding the order number")

    @model_validator(mode="after")
    def _one_quality_counter(self) -> EquipmentRoles:
        if self.good_counter and self.scrap_counter:
            raise ValueError("give either good_counter or scrap_counter, not both")
        if (self.good_counter or self.scrap_counter) and not self.part_counter:
            raise ValueError("a good_counter or scrap_counter needs a part_counter")
        return self


class EquipmentConfig(StrictModel):
    code: Code
    name: str = Field(min_length=1, max_length=200)
    type: str | None = Field(default=None, max_length=50)
    manufacturer: str | None = Field(default=None, max_length=100)
    model: str | None = Field(default=None, max_length=100)
    serial_number: str | None = Field(default=None, max_length=100)
    installation_date: date | None = None
    criticality: Annotated[Literal["Critical", "High", "Medium", "Low"] | None, BeforeValidator(_criticality)] = None
    theoretical_rate: float | None = Field(default=None, gt=0, description="parts per hour at ideal speed")
    attributes: dict[str, Any] = Field(default_factory=dict)
    active: bool = True
    roles: EquipmentRoles | None = None


class WorkCenterConfig(StrictModel):
    code: Code
    name: str = Field(min_length=1, max_length=200)
    capacity: float | None = Field(default=None, ge=0)
    capacity_unit: str | None = Field(default=None, max_length=20)
    equipment: list[EquipmentConfig] = []


class AreaConfig(StrictModel):
    code: Code
    name: str = Field(min_length=1, max_length=200)
    work_centers: list[WorkCenterConfig] = []


class SiteConfig(StrictModel):
    code: Code
    name: str = Field(min_length=1, max_length=200)
    timezone: str = "UTC"
    shifts: list[ShiftConfig] = Field(
        default_factory=list, description="the daily shift calendar; empty means one 24-hour shift")
    areas: list[AreaConfig] = []

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Europe/Berlin)") from None
        return value

    def calendar(self) -> list[ShiftConfig]:
        """The configured shifts, or a single all-day shift when none are configured."""
        return self.shifts or [ShiftConfig(code="DAY", name="All day", start=time(0), end=time(0))]


class ProductConfig(StrictModel):
    code: Code
    name: str = Field(min_length=1, max_length=200)
    family: str | None = Field(default=None, max_length=100)
    unit_of_measure: str = Field(default="EA", max_length=20)
    standard_cost: float | None = Field(default=None, ge=0)
    target_cycle_time: Duration | None = Field(default=None, gt=0, description="ideal time per part")


class DowntimeReasonConfig(StrictModel):
    code: Code
    description: str = Field(min_length=1, max_length=200)
    category: str = Field(min_length=1, max_length=50)
    planned: bool = False
    affects_oee: bool = True
    failure: bool = Field(default=False, description="counts as a failure for MTBF/MTTR (ISO 14224)")


class ScrapReasonConfig(StrictModel):
    """A reason a part is scrapped: the code a scrap record carries (``fact_scrap.scrap_code``)."""

    code: Code
    description: str = Field(min_length=1, max_length=200)
    category: str | None = Field(default=None, max_length=50)


class UnitConfig(StrictModel):
    code: str = Field(min_length=1, max_length=20)
    name: str = Field(min_length=1, max_length=100)
    quantity: str | None = Field(default=None, max_length=50)


SEMI_E10_REASONS: tuple[DowntimeReasonConfig, ...] = (
    DowntimeReasonConfig(code="SCHED_MAINT", description="Scheduled maintenance",
                         category="Scheduled Downtime", planned=True, affects_oee=False),
    DowntimeReasonConfig(code="TOOL_CHANGE", description="Tool change", category="Scheduled Downtime", planned=True),
    DowntimeReasonConfig(code="MECH_FAIL", description="Mechanical failure",
                         category="Unscheduled Downtime", failure=True),
    DowntimeReasonConfig(code="ELEC_FAIL", description="Electrical failure",
                         category="Unscheduled Downtime", failure=True),
    DowntimeReasonConfig(code="MAT_SHORT", description="Material shortage", category="External Downtime"),
    DowntimeReasonConfig(code="NO_OPER", description="No operator", category="External Downtime"),
)
"""The default downtime reasons: the SEMI E10-aligned set of the schema specification."""

DEFAULT_SCRAP_REASONS: tuple[ScrapReasonConfig, ...] = tuple(
    ScrapReasonConfig(code=code, description=description, category=category) for code, description, category in (
        ("SC-BURR", "Burr", "Forming"), ("SC-CRACK", "Crack", "Forming"), ("SC-DENT", "Dent", "Handling"),
        ("SC-DIM", "Dimension out of tolerance", "Dimensional"), ("SC-SURF", "Surface defect", "Surface"),
        ("SC-MAT", "Material defect", "Material"), ("SC-SETUP", "Setup scrap", "Setup"),
    )
)
"""The scrap reasons available when the YAML has no ``scrap_reasons`` list."""

DEFAULT_UNITS: tuple[UnitConfig, ...] = tuple(
    UnitConfig(code=code, name=name, quantity=quantity) for code, name, quantity in (
        ("degC", "degree Celsius", "temperature"), ("degF", "degree Fahrenheit", "temperature"),
        ("K", "kelvin", "temperature"), ("bar", "bar", "pressure"), ("Pa", "pascal", "pressure"),
        ("kPa", "kilopascal", "pressure"), ("psi", "pound per square inch", "pressure"),
        ("A", "ampere", "current"), ("V", "volt", "voltage"), ("W", "watt", "power"), ("kW", "kilowatt", "power"),
        ("kWh", "kilowatt hour", "energy"), ("Hz", "hertz", "frequency"), ("rpm", "revolutions per minute", "speed"),
        ("mm/s", "millimetre per second", "vibration velocity"), ("g", "standard gravity", "acceleration"),
        ("m/s", "metre per second", "speed"), ("mm", "millimetre", "length"), ("m", "metre", "length"),
        ("kg", "kilogram", "mass"), ("l/min", "litre per minute", "flow"), ("m3/h", "cubic metre per hour", "flow"),
        ("%", "percent", "ratio"), ("pcs", "pieces", "count"), ("s", "second", "time"), ("ms", "millisecond", "time"),
        ("Nm", "newton metre", "torque"), ("N", "newton", "force"), ("state", "state code", "state"),
    )
)
"""Units available when the YAML has no ``units`` list."""


class PlantConfig(StrictModel):
    sites: list[SiteConfig] = Field(min_length=1)
    products: list[ProductConfig] = []
    downtime_reasons: list[DowntimeReasonConfig] = Field(
        default_factory=lambda: list(SEMI_E10_REASONS),
        description="absent: the SEMI E10 default set; present: exactly this list")
    units: list[UnitConfig] = Field(
        default_factory=lambda: list(DEFAULT_UNITS),
        description="absent: the built-in units; present: exactly this list")
    scrap_reasons: list[ScrapReasonConfig] = Field(
        default_factory=lambda: list(DEFAULT_SCRAP_REASONS),
        description="the codes scrap records may carry; absent: the built-in set; present: exactly this list")

    def equipment(self) -> Iterator[tuple[SiteConfig, AreaConfig, WorkCenterConfig, EquipmentConfig]]:
        """Every piece of equipment with the site, area and work center that hold it."""
        for site in self.sites:
            for area in site.areas:
                for center in area.work_centers:
                    for item in center.equipment:
                        yield site, area, center, item
