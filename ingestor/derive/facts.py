"""One derivation window of one machine: its role readings in, ``fact_production`` and ``fact_downtime`` rows
out.  Pure: no database, no clock.  The same readings always give the same rows.

The window ``[start, end)`` lies on cell boundaries (:mod:`ingestor.derive.segments`); the facts depend only on
readings before ``end``, and on counter readings at ``end``. A counter reading shows the parts finished by its
instant, so a segment counts the readings in ``(start, end]``: one taken exactly at a boundary belongs to the
segment that ends there, not to the one that starts there (states, products and orders hold from their reading on,
so theirs belong to ``[start, end)``). A machine's facts begin at the first reading of its state tag (of its part
counter when it has no state tag): before that nothing is known about it.

Per segment (one ``fact_production`` row), in milliseconds:

* planned_production_time = segment length - planned downtime (stops whose reason does not affect OEE; see
  :mod:`ingestor.derive.states`);
* operating_time = planned_production_time - the other stops (micro-stops count as running unless configured
  otherwise).  A machine without a state tag is running whenever it is scheduled;
* total_parts_produced = the part counter's deltas shown by readings in ``(segment start, segment end]``
  (:mod:`ingestor.derive.counters`); good_parts = the good counter's deltas, or total - the scrap counter's
  deltas, or total when the machine has neither; scrap_parts = total - good.  Good (or scrap) is capped at the
  total: the two counters are read at slightly different instants, so near a segment boundary the good counter
  can run ahead of the total;
* planned_parts = planned_production_time / ideal cycle time (the product's target cycle time, else
  3 600 000 / the equipment's theoretical rate), rounded down; 0 when neither is known.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ingestor.derive.counters import CounterStep, counter_steps
from ingestor.derive.plan import EquipmentPlan, order_text
from ingestor.derive.segments import Cell, Segment, cut_cells
from ingestor.derive.series import Series
from ingestor.derive.states import Stop, stops_in
from ingestor.plant import CounterRole


@dataclass(frozen=True)
class ProductionRow:
    """The derived columns of one ``fact_production`` row (times in microseconds since the epoch)."""

    start: int
    end: int
    date_id: int
    shift_id: int
    product_id: int | None
    order_number: str | None
    planned_production_time: int
    operating_time: int
    planned_parts: int
    total_parts_produced: int
    good_parts: int
    scrap_parts: int


@dataclass(frozen=True)
class DowntimeRow:
    """The derived columns of one ``fact_downtime`` row; ``production_start`` names the production row that
    covers the stop's start (None: one derived before this window, looked up by the caller)."""

    start: int
    end: int
    downtime_duration: int
    reason_id: int
    production_start: int | None


@dataclass
class WindowFacts:
    """Everything one window derives."""

    start: int
    end: int
    production: list[ProductionRow] = field(default_factory=list)
    downtime: list[DowntimeRow] = field(default_factory=list)
    stops: list[Stop] = field(default_factory=list)
    carried_start: int | None = None
    stops_without_reason: int = 0
    parts_outside_schedule: int = 0


def derive_window(plan: EquipmentPlan, series: Mapping[str, Series], start: int, end: int,
                  carry: Stop | None = None, stop_end_after: int | None = None) -> WindowFacts:
    """The facts of ``[start, end)``; ``series`` holds every role tag of the plan (missing = no readings), the
    counters' readings in ``(start, end]`` with ``before`` at or before ``start`` (``plan.counter_parameters()``),
    the other tags' in ``[start, end)``;
    ``carry`` is the stop in progress just before ``start``, ``stop_end_after`` when the stop in progress at
    ``end`` ended, if readings after the window tell (see :func:`ingestor.derive.states.stops_in`).  Only the
    end of that stop's downtime row, and whether it is a micro-stop, depend on readings after ``end``."""
    facts = WindowFacts(start, end)
    empty = Series()
    timeline = series.get(plan.timeline_parameter, empty)
    if not timeline.known():
        return facts
    first = timeline.first_instant()
    cells = [c for c in plan.calendar.cells(start, end) if first is None or c.end > first]
    if cells and first is not None and cells[0].start < first:
        head = cells[0]
        cells[0] = Cell(first, head.end, head.shift_code, head.date_id)
    if first is not None or not plan.calendar.scheduled_before(start):
        carry = None
    stretches = _stretches(cells)

    stops: list[Stop] = []
    if plan.state_parameter is not None:
        reasons = series.get(plan.reason_parameter) if plan.reason_parameter else None
        stops = stops_in(plan, series.get(plan.state_parameter, empty), reasons, stretches, start, end, carry,
                         open_after_end=plan.calendar.scheduled_at(end), end_after=stop_end_after)
    facts.stops = stops
    facts.carried_start = carry.start if carry is not None and stops and stops[0].start == carry.start else None

    product = series.get(plan.product_parameter, empty) if plan.product_parameter else empty
    order = series.get(plan.order_parameter, empty) if plan.order_parameter else empty

    def product_at(instant: int) -> int | None:
        point = product.at(instant)
        return plan.product_of(point.value if point else None)

    instants = sorted({p.instant for p in product.points} | {p.instant for p in order.points})
    changes = [(t, product_at(t), order_text(_value(order.at(t)))) for t in instants]
    initial = (plan.product_of(_value(product.before)), order_text(_value(order.before)))
    segments = cut_cells(cells, changes, initial)

    def steps(role: CounterRole | None) -> list[CounterStep]:
        if role is None:
            return []
        readings = series.get(role.parameter, empty)
        return counter_steps(((p.instant, p.value) for p in readings.points), role.bits,
                             baseline=None if readings.before is None else
                             (readings.before.instant, readings.before.value),
                             ideal_cycle_ms=lambda t: plan.ideal_cycle_ms(product_at(t)))

    parts = _Counter(steps(plan.part_counter))
    good = _Counter(steps(plan.good_counter))
    scrap = _Counter(steps(plan.scrap_counter))
    counted = 0
    first_stop = 0  # stops are disjoint and in time order, like the segments
    for segment in segments:
        while first_stop < len(stops) and stops[first_stop].until() <= segment.start:
            first_stop += 1
        nearby = []
        for stop in stops[first_stop:]:
            if stop.start >= segment.end:
                break
            nearby.append(stop)
        row = _production_row(plan, segment, nearby, parts, good, scrap)
        counted += row.total_parts_produced
        facts.production.append(row)
    facts.parts_outside_schedule = parts.total() - counted

    starts = [s.start for s in segments]
    for stop in stops:
        if stop.end is None or stop.counts_as_running(plan):
            continue
        if stop.reason_id is None:
            facts.stops_without_reason += 1
            continue
        link = None
        if stop.start >= start:
            index = bisect_left(starts, stop.start + 1) - 1
            link = starts[index] if index >= 0 else None
        facts.downtime.append(DowntimeRow(stop.start, stop.end, (stop.end - stop.start) // 1000, stop.reason_id,
                                          link))
    return facts


def _value(point: object) -> float | None:
    return getattr(point, "value", None)


def _stretches(cells: Sequence[Cell]) -> list[tuple[int, int]]:
    """Contiguous runs of cells as ``(start, end)``."""
    stretches: list[tuple[int, int]] = []
    for cell in cells:
        if stretches and stretches[-1][1] == cell.start:
            stretches[-1] = (stretches[-1][0], cell.end)
        else:
            stretches.append((cell.start, cell.end))
    return stretches


class _Counter:
    """Counter steps summed over time ranges ``(start, end]``: a step belongs to the instant of its reading, and
    a reading counts the parts finished by then."""

    def __init__(self, steps: list[CounterStep]) -> None:
        self._instants = [s.instant for s in steps]
        self._sums = [0]
        for step in steps:
            self._sums.append(self._sums[-1] + step.parts)

    def between(self, start: int, end: int) -> int:
        return self._sums[bisect_right(self._instants, end)] - self._sums[bisect_right(self._instants, start)]

    def total(self) -> int:
        return self._sums[-1]


def _production_row(plan: EquipmentPlan, segment: Segment, stops: Sequence[Stop], parts: _Counter,
                    good: _Counter, scrap: _Counter) -> ProductionRow:
    length = segment.end - segment.start
    taken_out = lost = 0
    for stop in stops:
        overlap = min(stop.until(), segment.end) - max(stop.start, segment.start)
        if overlap <= 0 or stop.counts_as_running(plan):
            continue
        if stop.taken_out_of_planned_time(plan):
            taken_out += overlap
        else:
            lost += overlap
    planned_ms = (length - taken_out) // 1000
    operating_ms = (length - taken_out - lost) // 1000
    total = parts.between(segment.start, segment.end)
    if plan.good_counter is not None:
        good_parts = min(good.between(segment.start, segment.end), total)
    elif plan.scrap_counter is not None:
        good_parts = total - min(scrap.between(segment.start, segment.end), total)
    else:
        good_parts = total
    return ProductionRow(
        start=segment.start, end=segment.end, date_id=segment.date_id, shift_id=plan.shift_ids[segment.shift_code],
        product_id=segment.product_id, order_number=segment.order_number,
        planned_production_time=planned_ms, operating_time=operating_ms,
        planned_parts=plan.planned_parts(planned_ms, segment.product_id),
        total_parts_produced=total, good_parts=good_parts, scrap_parts=total - good_parts)
