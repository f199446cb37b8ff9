"""Cutting time into production records: the shift calendar in absolute time, cells and segments.

Times are integer microseconds since the Unix epoch (UTC) throughout the derivation: exact arithmetic, no
time-zone surprises.  A site's shift calendar is in local wall-clock time; :class:`SiteCalendar` turns it into
absolute *shift spans*:

* the span of shift S on local date D runs from D + S.start to D + S.end, or to the next day's S.end when the
  shift crosses midnight (``end <= start``; ``end == start`` is a 24-hour shift).  Its production day
  (``date_id``) is D, the local date on which the shift started.
* Local times are turned into instants by one monotone rule, so that consecutive shifts always meet at the
  same instant: an ambiguous time (the repeated hour when clocks go back) means its first occurrence; a time
  that does not exist (the hour skipped when clocks go forward) means the instant of the change.  A night shift
  22:00-06:00 is therefore 7 h or 9 h long on the nights the clocks change, and a shift lying entirely inside
  the skipped hour has no span that day.

Each span is cut into *cells* of at most ``max_segment``, counted from the span's start (the last cell of a
span is shorter).  Cells depend only on the calendar, never on the data or on which window is derived: that
is what makes re-deriving a window replace exactly the rows it wrote before.  A *segment* (one
``fact_production`` row) is a cell further cut where the product or the order number changes.

Time outside every span is not scheduled: it has no production records (ISO 22400: it is not planned busy
time).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from ingestor.plant import ShiftConfig, SiteConfig

US = 1_000_000
DAY_US = 86_400 * US
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_us(moment: datetime) -> int:
    """An aware datetime as microseconds since the epoch (exact)."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * US + delta.microseconds


def from_us(instant: int) -> datetime:
    """Microseconds since the epoch as an aware UTC datetime (exact)."""
    return _EPOCH + timedelta(microseconds=instant)


@lru_cache(maxsize=65_536)
def local_to_us(wall: datetime, zone: ZoneInfo) -> int:
    """The instant of a naive local wall-clock time in ``zone``, by the monotone rule of this module: the
    first occurrence of an ambiguous time, the instant of the change for a time in a gap."""
    first = to_us(wall.replace(tzinfo=zone, fold=0))
    if from_us(first).astimezone(zone).replace(tzinfo=None) == wall:
        return first
    # In a gap.  fold=0 reads the wall time with the offset before the change (an instant after it), fold=1
    # with the offset after (an instant before it): the change lies between.  Transitions fall on whole seconds.
    low, high = to_us(wall.replace(tzinfo=zone, fold=1)) // US, -(-first // US)
    if low > high:
        low, high = high, low
    while low < high:
        middle = (low + high) // 2
        if from_us(middle * US).astimezone(zone).replace(tzinfo=None) >= wall:
            high = middle
        else:
            low = middle + 1
    return low * US


def local_date(instant: int, zone: ZoneInfo) -> date:
    """The site-local calendar date of an instant."""
    return from_us(instant).astimezone(zone).date()


def date_id(day: date) -> int:
    """``yyyymmdd`` as an integer, the fact tables' production-day key."""
    return day.year * 10_000 + day.month * 100 + day.day


@dataclass(frozen=True, order=True)
class ShiftSpan:
    """One shift on one production day, in absolute time: ``[start, end)``."""

    start: int
    end: int
    shift_code: str
    date_id: int


@dataclass(frozen=True, order=True)
class Cell:
    """A piece of a shift span at most ``max_segment`` long: the unit the derivation rewrites."""

    start: int
    end: int
    shift_code: str
    date_id: int


class SiteCalendar:
    """A site's daily shift calendar as absolute spans and cells; ``max_segment_us`` 0 means no limit."""

    def __init__(self, zone: str, shifts: Sequence[ShiftConfig], max_segment_us: int = 0) -> None:
        self.zone = ZoneInfo(zone)
        self.shifts = tuple(shifts)
        self.max_segment_us = max_segment_us

    @classmethod
    def for_site(cls, site: SiteConfig, max_segment_us: int = 0) -> SiteCalendar:
        return cls(site.timezone, site.calendar(), max_segment_us)

    def _day(self, day: date) -> list[ShiftSpan]:
        return _day_spans(self.zone, self.shifts, day)

    def spans(self, start: int, end: int) -> list[ShiftSpan]:
        """Every non-empty span overlapping ``[start, end)``, in time order (they never overlap)."""
        if end <= start:
            return []
        first = local_date(start, self.zone) - timedelta(days=2)
        last = local_date(end, self.zone) + timedelta(days=1)
        found: list[ShiftSpan] = []
        day = first
        while day <= last:
            found.extend(s for s in self._day(day) if s.start < end and s.end > start)
            day += timedelta(days=1)
        found.sort()
        return found

    def span_at(self, instant: int) -> ShiftSpan | None:
        """The span containing ``instant`` (``start <= instant < end``), if any."""
        for span in self.spans(instant, instant + 1):
            if span.start <= instant < span.end:
                return span
        return None

    def _cells_of(self, span: ShiftSpan) -> Iterable[Cell]:
        step = self.max_segment_us or (span.end - span.start)
        start = span.start
        while start < span.end:
            end = min(start + step, span.end)
            yield Cell(start, end, span.shift_code, span.date_id)
            start = end

    def cells(self, start: int, end: int) -> list[Cell]:
        """The cells overlapping ``[start, end)``, clipped to it, in time order.  With ``start`` and ``end`` on
        cell boundaries (see :meth:`floor`) nothing is clipped and the result does not depend on the window."""
        found: list[Cell] = []
        for span in self.spans(start, end):
            for cell in self._cells_of(span):
                if cell.end <= start or cell.start >= end:
                    continue
                found.append(Cell(max(cell.start, start), min(cell.end, end), cell.shift_code, cell.date_id))
        return found

    def cell_at(self, instant: int) -> Cell | None:
        """The whole cell containing ``instant``, if it is scheduled."""
        span = self.span_at(instant)
        if span is None:
            return None
        step = self.max_segment_us or (span.end - span.start)
        start = span.start + (instant - span.start) // step * step
        return Cell(start, min(start + step, span.end), span.shift_code, span.date_id)

    def floor(self, instant: int) -> int:
        """The start of the cell containing ``instant``; ``instant`` itself when it is not scheduled."""
        span = self.span_at(instant)
        if span is None:
            return instant
        step = self.max_segment_us or (span.end - span.start)
        return span.start + (instant - span.start) // step * step

    def scheduled_until(self, instant: int, limit: int) -> int:
        """The end of the scheduled stretch (back-to-back spans) containing ``instant``, or ``limit`` if it
        reaches that far; ``instant`` itself when it is not scheduled."""
        moment = instant
        while moment < limit:
            span = self.span_at(moment)
            if span is None:
                return moment
            moment = span.end
        return limit

    def scheduled_before(self, instant: int) -> bool:
        """True when the moment just before ``instant`` is scheduled (a stop can carry over ``instant``)."""
        return self.span_at(instant - 1) is not None

    def scheduled_at(self, instant: int) -> bool:
        return self.span_at(instant) is not None


@lru_cache(maxsize=4096)
def _day_spans(zone: ZoneInfo, shifts: tuple[ShiftConfig, ...], day: date) -> list[ShiftSpan]:
    spans = []
    for shift in shifts:
        start_wall = datetime.combine(day, shift.start)
        end_day = day + timedelta(days=1) if _crosses_midnight(shift.start, shift.end) else day
        start = local_to_us(start_wall, zone)
        end = local_to_us(datetime.combine(end_day, shift.end), zone)
        if end > start:
            spans.append(ShiftSpan(start, end, shift.code, date_id(day)))
    return spans


def _crosses_midnight(start: time, end: time) -> bool:
    return end <= start


@dataclass(frozen=True)
class Segment:
    """A cell, or a piece of it between product/order changes: one ``fact_production`` row."""

    start: int
    end: int
    shift_code: str
    date_id: int
    product_id: int | None
    order_number: str | None


def cut_cells(cells: Sequence[Cell], changes: Sequence[tuple[int, int | None, str | None]],
              initial: tuple[int | None, str | None]) -> list[Segment]:
    """Cut ``cells`` where the product or order changes.  ``changes`` are ``(instant, product_id,
    order_number)`` in time order, each the new value from that instant on; ``initial`` is what holds before
    the first change.  Segments tile the cells exactly."""
    last_at: dict[int, tuple[int, int | None, str | None]] = {}
    for change in changes:  # several changes at one instant: the last one holds
        last_at[change[0]] = change
    changes = [last_at[instant] for instant in sorted(last_at)]
    instants = [c[0] for c in changes]
    segments: list[Segment] = []
    for cell in cells:
        index = bisect_right(instants, cell.start) - 1
        current = initial if index < 0 else (changes[index][1], changes[index][2])
        start = cell.start
        index += 1
        while index < len(changes) and changes[index][0] < cell.end:
            instant, product, order = changes[index]
            if (product, order) != current and instant > start:
                segments.append(Segment(start, instant, cell.shift_code, cell.date_id, *current))
                start = instant
            current = (product, order)
            index += 1
        segments.append(Segment(start, cell.end, cell.shift_code, cell.date_id, *current))
    return segments
