"""Property tests of the derivation's pure parts: counter deltas across wraps and resets, the shift calendar
tiling time across midnight and DST, segments, and one window's facts.  No database."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ingestor.derive.config import DerivationConfig
from ingestor.derive.counters import counter_delta, counter_steps, max_plausible_step
from ingestor.derive.facts import derive_window
from ingestor.derive.plan import DimensionIds, build_plans
from ingestor.derive.segments import (
    US,
    SiteCalendar,
    cut_cells,
    from_us,
    local_date,
    local_to_us,
    to_us,
)
from ingestor.derive.series import Point, Series
from ingestor.plant import PlantConfig, ShiftConfig

MINUTE = 60 * US
HOUR = 60 * MINUTE
ZONES = ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Santiago", "Asia/Kolkata",
         "Pacific/Chatham", "UTC"]
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------------------------------------------------
# Counters
# ---------------------------------------------------------------------------------------------------------

@FAST
@given(bits=st.sampled_from([16, 32, 64]), old=st.integers(min_value=0), new=st.integers(min_value=0),
       step=st.none() | st.integers(min_value=0, max_value=10**6))
def test_a_delta_is_never_negative(bits: int, old: int, new: int, step: int | None) -> None:
    modulus = 1 << bits
    assert counter_delta(old % modulus, new % modulus, bits, step) >= 0


@FAST
@given(bits=st.sampled_from([16, 32]), start=st.integers(min_value=0),
       increments=st.lists(st.integers(min_value=0, max_value=5000), min_size=1, max_size=200))
def test_wraps_lose_no_parts(bits: int, start: int, increments: list[int]) -> None:
    """A counter read at least once every quarter of its range: whatever wraps, the deltas add up to the
    parts made.  Readings are floats, as fact_sensor_event stores them."""
    modulus = 1 << bits
    assume(max(increments) < modulus // 4)
    value, readings = start % modulus, []
    for i, increment in enumerate(increments, start=1):
        value = (value + increment) % modulus
        readings.append((i * MINUTE, float(value)))
    steps = counter_steps(readings, bits, baseline=(0, float(start % modulus)))
    assert sum(s.parts for s in steps) == sum(increments)
    assert all(s.parts >= 0 and not s.reset for s in steps)


@FAST
@given(start=st.integers(min_value=0, max_value=2**64 - 1),
       increments=st.lists(st.integers(min_value=0, max_value=2**40), min_size=1, max_size=100))
def test_a_64_bit_counter_wraps_too(start: int, increments: list[int]) -> None:
    """Exact integers (a double holds a 64-bit counter exactly only up to 2**53: docs/oee.md)."""
    modulus, value, total = 1 << 64, start, 0
    for increment in increments:
        new = (value + increment) % modulus
        total += counter_delta(value, new, 64)
        value = new
    assert total == sum(increments)


@FAST
@given(bits=st.sampled_from([16, 32]), data=st.data(),
       events=st.lists(st.tuples(st.booleans(), st.integers(min_value=0, max_value=3000)), min_size=1, max_size=150))
def test_resets_lose_no_parts(bits: int, data: st.DataObject, events: list[tuple[bool, int]]) -> None:
    """The PLC resets the counter to 0 right after a reading and counts on: every reset whose next reading
    is below the value before it is seen, and no part is lost (a reset from the top quarter of the range
    may be taken for a wrap: more parts, never fewer).  Below the top quarter, the count is exact."""
    modulus = 1 << bits
    first = value = data.draw(st.integers(min_value=0, max_value=modulus - 1), label="start")
    readings, made, exact = [], 0, True
    for i, (reset, count) in enumerate(events, start=1):
        if reset and count < value:  # a reset the next reading can see
            exact = exact and value < modulus - modulus // 4
            value = count
        else:
            value = (value + count) % modulus
        made += count
        readings.append((i * MINUTE, float(value)))
    steps = counter_steps(readings, bits, baseline=(0, float(first)))
    counted = sum(s.parts for s in steps)
    assert all(s.parts >= 0 for s in steps)
    assert counted >= made
    if exact:
        assert counted == made


def test_wrap_and_reset_examples() -> None:
    assert counter_delta(65530, 10, 16) == 16  # wrapped
    assert counter_delta(65530, 10, 16, max_step=10) == 10  # a wrap of 16 in that time is implausible: reset
    assert counter_delta(30000, 10, 16) == 10  # not near the top: the PLC reset the counter
    assert counter_delta(4_000_000_000, 5, 32) == 5 + 2**32 - 4_000_000_000
    assert counter_delta(3_000_000_000, 5, 32) == 5  # far from the top of a 32-bit range: reset
    assert max_plausible_step(60 * US, 5000.0) == 2 * 12 + 100
    assert max_plausible_step(60 * US, None) is None
    # a signed 16-bit decoding of the same counter reads the same
    assert [s.parts for s in counter_steps([(1, 32767.0), (2, -32768.0), (3, -32760.0)], 16,
                                           baseline=(0, 32760.0))] == [7, 1, 8]


# ---------------------------------------------------------------------------------------------------------
# The calendar
# ---------------------------------------------------------------------------------------------------------

def calendar_of(zone: str, cuts: list[int], keep: list[bool] | None = None, max_segment: int = 0) -> SiteCalendar:
    """Shifts from sorted minutes of the day: shift i runs from cut i to cut i+1 (the last wraps round);
    ``keep`` drops some to leave unscheduled gaps."""
    shifts = []
    for i, start in enumerate(cuts):
        end = cuts[(i + 1) % len(cuts)]
        if keep is not None and not keep[i]:
            continue
        shifts.append(ShiftConfig(code=f"S{i}", name=f"Shift {i}", start=time(start // 60, start % 60),
                                  end=time(end // 60, end % 60)))
    return SiteCalendar(zone, shifts, max_segment)


cut_lists = st.lists(st.integers(min_value=0, max_value=1439), min_size=1, max_size=5, unique=True).map(sorted)
instants = st.datetimes(min_value=datetime(2023, 1, 1), max_value=datetime(2027, 12, 31)).map(
    lambda d: to_us(d.replace(tzinfo=UTC)))
segment_lengths = st.sampled_from([0, 15 * MINUTE, HOUR, 7 * HOUR])


@FAST
@given(zone=st.sampled_from(ZONES), cuts=cut_lists, start=instants,
       length=st.integers(min_value=1, max_value=10 * 24 * HOUR), max_segment=segment_lengths, data=st.data())
def test_cells_tile_time_exactly(zone: str, cuts: list[int], start: int, length: int, max_segment: int,
                                 data: st.DataObject) -> None:
    """A calendar of back-to-back shifts (the night shift crossing midnight, in zones with DST) cuts any
    window into cells with no gap and no overlap; cutting at a cell boundary in between changes nothing."""
    calendar = calendar_of(zone, cuts, max_segment=max_segment)
    first = calendar.floor(start)
    whole = calendar.cell_at(first)
    assert whole is not None  # back-to-back shifts: every instant is scheduled
    last = max(calendar.floor(start + length), whole.end)
    cells = calendar.cells(first, last)
    assert cells[0].start == first and cells[-1].end == last
    for a, b in pairwise(cells):
        assert a.end == b.start
    for cell in cells:
        assert cell.end > cell.start
        if max_segment:
            assert cell.end - cell.start <= max_segment
        span = calendar.span_at(cell.start)
        assert span is not None and span.start <= cell.start and cell.end <= span.end
        assert span.shift_code == cell.shift_code and span.date_id == cell.date_id
    middle = calendar.floor(data.draw(st.integers(min_value=first, max_value=last - 1), label="cut"))
    assert calendar.cells(first, middle) + calendar.cells(middle, last) == cells


@FAST
@given(zone=st.sampled_from(ZONES), cuts=cut_lists, keep=st.lists(st.booleans(), min_size=5, max_size=5),
       start=instants, length=st.integers(min_value=1, max_value=5 * 24 * HOUR), max_segment=segment_lengths)
def test_cells_cover_exactly_the_scheduled_time(zone: str, cuts: list[int], keep: list[bool], start: int,
                                               length: int, max_segment: int) -> None:
    """With gaps in the calendar, cells cover the shifts and nothing else, without overlap."""
    calendar = calendar_of(zone, cuts, keep[:len(cuts)], max_segment)
    assume(calendar.shifts)
    cells = calendar.cells(start, start + length)
    for a, b in pairwise(cells):
        assert a.end <= b.start
    covered = sum(c.end - c.start for c in cells)
    scheduled = sum(min(s.end, start + length) - max(s.start, start) for s in calendar.spans(start, start + length))
    assert covered == scheduled
    for cell in cells:
        assert calendar.scheduled_at(cell.start) and calendar.scheduled_at(cell.end - 1)


@FAST
@given(zone=st.sampled_from(ZONES), cuts=cut_lists, day=st.dates(min_value=date(2023, 1, 1),
                                                                 max_value=date(2027, 12, 31)))
def test_a_shift_belongs_to_the_day_it_starts(zone: str, cuts: list[int], day: date) -> None:
    calendar = calendar_of(zone, cuts)
    tz = ZoneInfo(zone)
    for span in calendar._day(day):
        assert span.date_id == day.year * 10000 + day.month * 100 + day.day
        assert local_date(span.start, tz) == day
        wall = from_us(span.start).astimezone(tz)
        shift = next(s for s in calendar.shifts if s.code == span.shift_code)
        skipped = wall.time().replace(tzinfo=None) != shift.start  # the start fell in the skipped hour
        if skipped:
            assert local_to_us(datetime.combine(day, shift.start), tz) == span.start


@FAST
@given(zone=st.sampled_from(ZONES), a=st.datetimes(min_value=datetime(2023, 1, 1), max_value=datetime(2027, 12, 31)),
       minutes=st.integers(min_value=0, max_value=3 * 24 * 60))
def test_local_time_maps_monotonically(zone: str, a: datetime, minutes: int) -> None:
    """Later wall-clock times are never earlier instants (what makes back-to-back shifts meet)."""
    tz = ZoneInfo(zone)
    b = a + timedelta(minutes=minutes)
    assert local_to_us(a, tz) <= local_to_us(b, tz)


@pytest.mark.parametrize(("day", "hours"), [(date(2024, 3, 30), 7), (date(2024, 10, 26), 9), (date(2024, 6, 1), 8)])
def test_a_night_shift_over_a_dst_change_is_shorter_or_longer(day: date, hours: int) -> None:
    calendar = calendar_of("Europe/Berlin", [6 * 60, 14 * 60, 22 * 60])
    night = next(s for s in calendar._day(day) if s.shift_code == "S2")
    assert night.end - night.start == hours * HOUR
    assert night.date_id == day.year * 10000 + day.month * 100 + day.day


def test_a_shift_inside_the_skipped_hour_has_no_span_that_day() -> None:
    calendar = calendar_of("Europe/Berlin", [2 * 60 + 15, 2 * 60 + 45])  # 02:15-02:45 and 02:45-02:15
    spans = calendar._day(date(2024, 3, 31))
    assert [s.shift_code for s in spans] == ["S1"]  # S0 lies in 02:00-03:00, which does not exist that day
    assert spans[0].start == to_us(datetime(2024, 3, 31, 1, 0, tzinfo=UTC))  # the change, 03:00 CEST


@FAST
@given(cuts=st.lists(st.integers(min_value=0, max_value=1000), max_size=20),
       values=st.lists(st.tuples(st.none() | st.integers(1, 3), st.none() | st.sampled_from(["A", "B"])),
                       min_size=21, max_size=21))
def test_segments_tile_their_cells(cuts: list[int], values: list[tuple[int | None, str | None]]) -> None:
    calendar = calendar_of("Europe/Berlin", [0], max_segment=100 * MINUTE)
    origin = calendar.floor(to_us(datetime(2024, 3, 30, 20, tzinfo=UTC)))
    cells = calendar.cells(origin, origin + 1000 * MINUTE)
    changes = [(origin + c * MINUTE, *values[i]) for i, c in enumerate(sorted(cuts))]
    segments = cut_cells(cells, changes, values[-1])
    assert segments[0].start == cells[0].start and segments[-1].end == cells[-1].end
    for a, b in pairwise(segments):
        assert a.end == b.start and a.start < a.end
        if a.date_id == b.date_id and a.shift_code == b.shift_code and (a.product_id, a.order_number) == (
                b.product_id, b.order_number):
            assert any(c.start == b.start for c in cells)  # same values: cut only at a cell boundary


# ---------------------------------------------------------------------------------------------------------
# One window's facts
# ---------------------------------------------------------------------------------------------------------

PLANT = PlantConfig.model_validate({
    "sites": [{"code": "S", "name": "S", "timezone": "Europe/Berlin",
               "shifts": [{"code": "EARLY", "name": "E", "start": "06:00", "end": "14:00"},
                          {"code": "LATE", "name": "L", "start": "14:00", "end": "22:00"}],
               "areas": [{"code": "A", "name": "A", "work_centers": [{"code": "W", "name": "W", "equipment": [
                   {"code": "M", "name": "M", "theoretical_rate": 600, "roles": {
                       "part_counter": {"parameter": "parts", "bits": 16},
                       "good_counter": {"parameter": "good", "bits": 16},
                       "state": {"parameter": "state", "running": [1], "planned_stop": [2],
                                 "reasons": {3: "MECH_FAIL", 4: "SCHED_MAINT"},
                                 "default_unplanned_reason": "MAT_SHORT", "default_planned_reason": "TOOL_CHANGE",
                                 "micro_stop": "2m"}}}]}]}]}],
})
IDS = DimensionIds(equipment={"M": 1}, reasons={r.code: i for i, r in enumerate(PLANT.downtime_reasons, start=1)},
                   products={}, shifts={("S", "EARLY"): 1, ("S", "LATE"): 2})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(states=st.lists(st.tuples(st.integers(min_value=1, max_value=24 * 60), st.sampled_from([0, 1, 1, 2, 3, 4])),
                       min_size=1, max_size=60),
       parts=st.lists(st.tuples(st.integers(min_value=0, max_value=24 * 60), st.integers(0, 70000)), max_size=80),
       micro=st.sampled_from(["running", "downtime"]), max_segment=st.sampled_from([0, 900, 3600]))
def test_a_window_accounts_for_every_scheduled_moment(states: list[tuple[int, int]], parts: list[tuple[int, int]],
                                                     micro: str, max_segment: int) -> None:
    """Whatever the machine reports: segments tile the scheduled time after the first state reading,
    operating <= planned <= length, nothing negative, good <= total, downtime rows never overlap and each
    lies in scheduled time."""
    config = DerivationConfig(micro_stops=micro, max_segment=max_segment)  # type: ignore[arg-type]
    plan = build_plans(PLANT, IDS, config)[0]
    day = to_us(datetime(2024, 3, 30, 23, tzinfo=UTC))  # 2024-03-31 00:00 Berlin: the clocks go forward
    start, end = plan.calendar.floor(day), plan.calendar.floor(day + 24 * HOUR)
    state = Series.of(None, [Point(day + m * MINUTE, float(v)) for m, v in dict(states).items()])
    counter = Series.of(Point(day - MINUTE, 65000.0), [Point(day + m * MINUTE, float(v)) for m, v in dict(parts).items()])
    facts = derive_window(plan, {"state": state, "parts": counter, "good": counter}, start, end)
    first = state.points[0].instant
    scheduled = sum(min(s.end, end) - max(s.start, start, first) for s in plan.calendar.spans(start, end)
                    if min(s.end, end) > max(s.start, start, first))
    assert sum(r.end - r.start for r in facts.production) == scheduled
    for row in facts.production:
        length_ms = (row.end - row.start) // 1000
        assert 0 <= row.operating_time <= row.planned_production_time <= length_ms
        assert 0 <= row.good_parts <= row.total_parts_produced and row.scrap_parts >= 0
    rows = sorted(facts.downtime, key=lambda d: d.start)
    for a, b in pairwise(rows):
        assert a.end <= b.start
    for row in rows:
        assert plan.calendar.scheduled_at(row.start) and plan.calendar.scheduled_at(row.end - 1)
        assert row.downtime_duration == (row.end - row.start) // 1000
