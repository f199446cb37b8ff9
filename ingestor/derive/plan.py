"""What the derivation needs to know about one piece of equipment: its roles, resolved to database ids.

An :class:`EquipmentPlan` is built once from the YAML plant model and the dimension ids read from the database
(by business code).  Equipment is derived when it has a state role or a part counter; everything else about
it is optional (no product tag: the product is NULL and the ideal cycle comes from the equipment's theoretical
rate; no counter: no parts).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from ingestor.derive.config import DerivationConfig
from ingestor.derive.segments import US, SiteCalendar
from ingestor.plant import CounterRole, EquipmentConfig, PlantConfig, SiteConfig


@dataclass(frozen=True)
class ReasonInfo:
    """The flags of a downtime reason that the derivation uses."""

    reason_id: int
    code: str
    planned: bool
    affects_oee: bool


@dataclass(frozen=True)
class DimensionIds:
    """Surrogate keys by business code, read from the database."""

    equipment: Mapping[str, int]
    reasons: Mapping[str, int]
    products: Mapping[str, int]
    shifts: Mapping[tuple[str, str], int]


@dataclass(frozen=True)
class EquipmentPlan:
    """One machine's roles with ids; see :func:`build_plans`."""

    equipment_id: int
    code: str
    site_code: str
    calendar: SiteCalendar
    shift_ids: Mapping[str, int]
    part_counter: CounterRole | None = None
    good_counter: CounterRole | None = None
    scrap_counter: CounterRole | None = None
    state_parameter: str | None = None
    running: frozenset[float] = frozenset()
    planned_stop: frozenset[float] = frozenset()
    reason_parameter: str | None = None
    reason_ids: Mapping[int, int] = field(default_factory=dict)
    default_planned_reason: int | None = None
    default_unplanned_reason: int | None = None
    reasons: Mapping[int, ReasonInfo] = field(default_factory=dict)
    product_parameter: str | None = None
    product_ids: Mapping[int, int] = field(default_factory=dict)
    product_cycle_ms: Mapping[int, float] = field(default_factory=dict)
    equipment_cycle_ms: float | None = None
    theoretical_rate: float | None = None
    order_parameter: str | None = None
    micro_stop_us: int = 0
    micro_stops_as_running: bool = True
    reason_window_us: int = 10 * US

    @property
    def timeline_parameter(self) -> str:
        """The tag whose first reading starts this machine's facts: the state, else the part counter."""
        if self.state_parameter is not None:
            return self.state_parameter
        assert self.part_counter is not None
        return self.part_counter.parameter

    def parameters(self) -> list[str]:
        """Every role tag, without duplicates, in a fixed order."""
        names = [self.state_parameter, self.reason_parameter, self.product_parameter, self.order_parameter,
                 *(c.parameter for c in (self.part_counter, self.good_counter, self.scrap_counter) if c)]
        return list(dict.fromkeys(n for n in names if n))

    def counter_parameters(self) -> list[str]:
        """The counter tags: their readings count parts finished by the reading's instant, so a window
        ``[start, end)`` reads them in ``(start, end]`` (:mod:`ingestor.derive.facts`)."""
        return list(dict.fromkeys(c.parameter for c in (self.part_counter, self.good_counter, self.scrap_counter)
                                  if c))

    def ideal_cycle_ms(self, product_id: int | None) -> float | None:
        """The ideal cycle time: the product's target cycle time, else 3 600 000 / theoretical rate."""
        if product_id is not None and product_id in self.product_cycle_ms:
            return self.product_cycle_ms[product_id]
        return self.equipment_cycle_ms

    def planned_parts(self, planned_ms: int, product_id: int | None) -> int:
        """Parts the machine would make in ``planned_ms`` at its ideal rate (0 when that is unknown)."""
        if product_id is not None and product_id in self.product_cycle_ms:
            return int(planned_ms // self.product_cycle_ms[product_id])
        if self.theoretical_rate:
            return math.floor(planned_ms * self.theoretical_rate / 3_600_000 + 1e-9)
        return 0

    def product_of(self, value: float | None) -> int | None:
        code = _plc_int(value)
        return None if code is None else self.product_ids.get(code)

    def reason_of(self, value: float | None) -> int | None:
        code = _plc_int(value)
        return None if code is None else self.reason_ids.get(code)

    def is_running(self, value: float) -> bool:
        return value in self.running

    def is_planned_state(self, value: float) -> bool:
        return value in self.planned_stop


def _plc_int(value: float | None) -> int | None:
    """A PLC code value as an integer; None when it is not a whole number."""
    if value is None or not math.isfinite(value) or value != int(value):
        return None
    return int(value)


def order_text(value: float | None) -> str | None:
    """An order-number tag's value as text: whole numbers without a decimal point; 0 or none is no order."""
    if value is None or not math.isfinite(value) or value == 0:
        return None
    text = str(int(value)) if value == int(value) else repr(value)
    return text[:50]


def derivable(item: EquipmentConfig) -> bool:
    """True when the equipment has the roles the derivation needs (a state or a part counter)."""
    roles = item.roles
    return roles is not None and (roles.state is not None or roles.part_counter is not None)


def build_plans(plant: PlantConfig, ids: DimensionIds, config: DerivationConfig) -> list[EquipmentPlan]:
    """A plan per derivable equipment of the plant (in YAML order).  Raises ``KeyError`` naming a code the
    database does not have (the dimensions are synced by the daemon or by ``ingestor derive``)."""
    reasons = {r.code: r for r in plant.downtime_reasons}
    reason_info = {ids.reasons[code]: ReasonInfo(ids.reasons[code], code, r.planned, r.affects_oee)
                   for code, r in reasons.items() if code in ids.reasons}
    cycle = {ids.products[p.code]: float(round(p.target_cycle_time * 1000)) for p in plant.products
             if p.target_cycle_time is not None and p.code in ids.products}
    calendars: dict[str, SiteCalendar] = {}
    plans = []
    for site, _, _, item in plant.equipment():
        if not derivable(item):
            continue
        assert item.roles is not None
        roles = item.roles
        calendar = calendars.setdefault(site.code, SiteCalendar.for_site(site, round(config.max_segment * US)))
        state = roles.state
        product = roles.product
        plans.append(EquipmentPlan(
            equipment_id=_id(ids.equipment, item.code, "equipment"),
            code=item.code,
            site_code=site.code,
            calendar=calendar,
            shift_ids=_shift_ids(site, ids),
            part_counter=roles.part_counter,
            good_counter=roles.good_counter,
            scrap_counter=roles.scrap_counter,
            state_parameter=state.parameter if state else None,
            running=frozenset(state.running) if state else frozenset(),
            planned_stop=frozenset(state.planned_stop) if state else frozenset(),
            reason_parameter=state.reason_parameter if state else None,
            reason_ids={value: _id(ids.reasons, code, "downtime reason")
                        for value, code in (state.reasons.items() if state else ())},
            default_planned_reason=_optional_id(ids.reasons, state.default_planned_reason if state else None),
            default_unplanned_reason=_optional_id(ids.reasons, state.default_unplanned_reason if state else None),
            reasons=reason_info,
            product_parameter=product.parameter if product else None,
            product_ids={value: _id(ids.products, code, "product")
                         for value, code in (product.codes.items() if product else ())},
            product_cycle_ms=cycle,
            equipment_cycle_ms=3_600_000.0 / item.theoretical_rate if item.theoretical_rate else None,
            theoretical_rate=item.theoretical_rate,
            order_parameter=roles.order_number,
            micro_stop_us=round(state.micro_stop * US) if state else 0,
            micro_stops_as_running=config.micro_stops == "running",
            reason_window_us=round(config.reason_window * US),
        ))
    return plans


def _shift_ids(site: SiteConfig, ids: DimensionIds) -> dict[str, int]:
    return {shift.code: _id(ids.shifts, (site.code, shift.code), "shift") for shift in site.calendar()}


def _id(table: Mapping[str, int] | Mapping[tuple[str, str], int], code: str | tuple[str, str], what: str) -> int:
    try:
        return table[code]  # type: ignore[index]
    except KeyError:
        raise KeyError(f"{what} {code!r} is not in the database: sync the dimensions first (start the daemon, "
                       "or run ingestor derive with the configuration that defines it)") from None


def _optional_id(table: Mapping[str, int], code: str | None) -> int | None:
    return None if code is None else _id(table, code, "downtime reason")
