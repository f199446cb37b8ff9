"""Parts from cumulative counters: deltas between readings that survive wraps and PLC resets.

A counter tag is an unsigned integer of ``bits`` bits that counts up.  Each reading's value is taken modulo
2**bits first, so a 16-bit counter that a gateway decodes as a signed number (…, 32767, -32768, …) still reads
as the unsigned counter it is.  The delta a reading shows, relative to the previous reading of the same tag:

* new >= old: ``new - old``.
* new < old, and it is plausible that the counter wrapped: ``new + 2**bits - old``.  A wrap is plausible when
  the old value was in the top quarter of the range, the new one is in the bottom quarter and, when the ideal
  rate is known, the wrapped step is at most twice what the machine can make at its ideal rate in the time
  between the two readings, plus 100 parts (:func:`max_plausible_step`).
* new < old otherwise: the PLC reset the counter; the new value is what it has counted since, so the delta is
  ``new``.

A delta is therefore never negative.  Parts are never lost to a wrap, nor to a reset whose new value is below
the old one; a reset the counter has already counted past by the next reading is invisible (nobody can see it)
and a reset from the top quarter to the bottom quarter within the plausible step is counted as a wrap (more
parts, never fewer).  A reading's delta belongs to the instant of that reading.  The first reading of a
counter has no delta: it is the baseline.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

PLAUSIBLE_SLACK_PARTS = 100
PLAUSIBLE_RATE_FACTOR = 2.0


def normalise(value: float, bits: int) -> int | None:
    """The counter value as an unsigned ``bits``-bit integer; None for NaN or infinity."""
    if not math.isfinite(value):
        return None
    return round(value) % (1 << bits)


def max_plausible_step(elapsed_us: int, ideal_cycle_ms: float | None) -> int | None:
    """The most parts a wrap may account for between two readings ``elapsed_us`` apart; None when the ideal
    cycle time is not known (then only the quarter rule applies)."""
    if ideal_cycle_ms is None or ideal_cycle_ms <= 0:
        return None
    return int(PLAUSIBLE_RATE_FACTOR * (elapsed_us / 1000.0) / ideal_cycle_ms) + PLAUSIBLE_SLACK_PARTS


def counter_delta(old: int, new: int, bits: int, max_step: int | None = None) -> int:
    """Parts counted between two readings ``old`` and ``new`` of a ``bits``-bit counter (both already
    normalised); see the module docstring for the rules.  Never negative."""
    if new >= old:
        return new - old
    modulus = 1 << bits
    quarter = modulus >> 2
    wrapped = new + modulus - old
    if old >= modulus - quarter and new < quarter and (max_step is None or wrapped <= max_step):
        return wrapped
    return new


@dataclass(frozen=True)
class CounterStep:
    """The parts one reading shows, at the instant of the reading."""

    instant: int
    parts: int
    reset: bool = False
    wrapped: bool = False


def counter_steps(readings: Iterable[tuple[int, float]], bits: int, *, baseline: tuple[int, float] | None = None,
                  ideal_cycle_ms: Callable[[int], float | None] | float | None = None) -> list[CounterStep]:
    """The delta of every reading in ``readings`` (``(instant, value)`` in time order) that shows a change.
    ``baseline`` is the reading before them, if any.  ``ideal_cycle_ms`` is the ideal cycle time for the wrap
    plausibility bound: a number, None, or a function of the reading's instant (the product may change)."""
    steps: list[CounterStep] = []
    previous: tuple[int, int] | None = None
    if baseline is not None:
        value = normalise(baseline[1], bits)
        if value is not None:
            previous = (baseline[0], value)
    for instant, raw in readings:
        value = normalise(raw, bits)
        if value is None:
            continue
        if previous is not None and value != previous[1]:
            cycle = ideal_cycle_ms(instant) if callable(ideal_cycle_ms) else ideal_cycle_ms
            parts = counter_delta(previous[1], value, bits, max_plausible_step(instant - previous[0], cycle))
            went_down = value < previous[1]
            steps.append(CounterStep(instant, parts, reset=went_down and parts == value,
                                     wrapped=went_down and parts != value))
        previous = (instant, value)
    return steps
