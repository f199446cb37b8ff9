"""The readings of one role tag in a derivation window, as the derivation sees them.

A tag's value holds from its reading until the next reading (machines report states and counters on change or
on every poll; a repeated value changes nothing).  ``before`` is the last reading before the window, which
says what held at the window's start.  Bad-quality readings, NaN and infinities never get here.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Point:
    """One reading: ``instant`` in microseconds since the epoch, and its value."""

    instant: int
    value: float


@dataclass(frozen=True)
class Series:
    """The readings of one tag in a window, in time order, and the last reading before the window."""

    before: Point | None = None
    points: tuple[Point, ...] = ()
    _instants: tuple[int, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_instants", tuple(p.instant for p in self.points))

    @classmethod
    def of(cls, before: Point | None, points: Sequence[Point]) -> Series:
        return cls(before, tuple(sorted(points, key=lambda p: p.instant)))

    def at(self, instant: int) -> Point | None:
        """The reading in force at ``instant``: the last one at or before it."""
        index = bisect_right(self._instants, instant) - 1
        return self.points[index] if index >= 0 else self.before

    def just_before(self, instant: int) -> Point | None:
        """The last reading strictly before ``instant``."""
        index = bisect_left(self._instants, instant) - 1
        return self.points[index] if index >= 0 else self.before

    def between(self, start: int, end: int) -> Iterator[Point]:
        """Readings with ``start <= instant < end``."""
        for index in range(bisect_left(self._instants, start), bisect_left(self._instants, end)):
            yield self.points[index]

    def first_instant(self) -> int | None:
        """When the tag is first known in the window: -inf (None) when a reading before the window exists."""
        if self.before is not None:
            return None
        return self.points[0].instant if self.points else None

    def known(self) -> bool:
        return self.before is not None or bool(self.points)

    def runs(self, start: int, end: int) -> Iterator[tuple[int, int, float]]:
        """``(from, to, value)`` for the stretches of constant value covering ``[start, end)``, equal
        consecutive values merged; time before the tag's first reading is left out."""
        current = self.at(start)
        if current is None:
            first = next(self.between(start, end), None)
            if first is None:
                return
            current = first
        run_start, value = max(start, current.instant), current.value
        for point in self.between(run_start + 1, end):
            if point.instant == run_start:  # several readings at one instant: the last one counts
                value = point.value
            elif point.value != value:
                yield run_start, point.instant, value
                run_start, value = point.instant, point.value
        yield run_start, end, value
