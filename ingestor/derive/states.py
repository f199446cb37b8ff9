"""Stop intervals from the machine-state tag: where a machine stood still, why, and whether it counts.

A *stop* is a maximal stretch of scheduled time during which the state tag holds one value that is not a
running value.  A change from one stop value to another (fault → waiting for maintenance) starts a new stop;
a change of the reason code alone does not.  Stops are cut where scheduled time ends (the end of a shift not
followed by another): idle time outside the shift calendar is not downtime.  They are *not* cut at shift
changes between back-to-back shifts, nor at product or order changes or the maximum segment length: one
breakdown is one failure for MTBF, however many production records it spans.

Its reason, the first that applies:

1. with a ``reason_parameter``: the first reason value the role's ``reasons`` map knows that was reported
   from the stop's start up to ``reason_window`` after it (and before the stop ended); else the reason value
   in force when the stop began (set just before the state, or latched by a PLC that does not clear it), if
   the map knows it *and* it is of the stop's kind: a planned reason for a planned-stop value, an unplanned one
   otherwise.  The kind check keeps a code latched from an earlier breakdown from turning a later planned stop
   into a failure (and the other way round);
2. without one: the state value itself, if the ``reasons`` map knows it;
3. ``default_planned_reason`` for a planned-stop value, else ``default_unplanned_reason``.

A stop with no reason at all (none of these configured) still counts in the production record, but gets no
``fact_downtime`` row (``reason_id`` is required there); such stops are counted in a metric.

Whether a stop's time is taken out of the planned production time (ISO 22400 planned downtime) is decided by
its reason: a reason that does not affect OEE (``affects_oee: false``) is taken out; any other reason is an
availability loss, planned or not (a tool change is planned but still a loss, as in TPM).  A stop without a
reason is taken out when its state value is a planned-stop value.

A *micro-stop* is an unplanned stop shorter than the state role's ``micro_stop``.  With ``derivation.micro_stops:
running`` (the default) its time counts as operating time, so it shows up as a performance loss and gets no
downtime row; with ``downtime`` it is recorded like any other stop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ingestor.derive.plan import EquipmentPlan
from ingestor.derive.series import Series


@dataclass(frozen=True)
class Stop:
    """One stop interval ``[start, end)``; ``end`` None: still going at ``open_at`` (the window's end)."""

    start: int
    end: int | None
    value: float
    planned_state: bool
    reason_id: int | None
    open_at: int | None = None

    def until(self) -> int:
        """The end of the stop as far as it is known."""
        if self.end is not None:
            return self.end
        assert self.open_at is not None
        return self.open_at

    def is_micro(self, plan: EquipmentPlan) -> bool:
        return (not self.planned_state and plan.micro_stop_us > 0 and self.end is not None
                and self.end - self.start < plan.micro_stop_us)

    def counts_as_running(self, plan: EquipmentPlan) -> bool:
        return plan.micro_stops_as_running and self.is_micro(plan)

    def taken_out_of_planned_time(self, plan: EquipmentPlan) -> bool:
        """True for ISO 22400 planned downtime (see the module docstring)."""
        if self.reason_id is not None and self.reason_id in plan.reasons:
            return not plan.reasons[self.reason_id].affects_oee
        return self.planned_state

    def settled_at(self, plan: EquipmentPlan, instant: int) -> bool:
        """True when nothing reported at or after ``instant`` can change this stop's reason or whether it is a
        micro-stop (only its end may still move)."""
        elapsed = instant - self.start
        reason_known = plan.reason_parameter is None or elapsed > plan.reason_window_us
        micro_known = (self.planned_state or plan.micro_stop_us == 0 or elapsed >= plan.micro_stop_us
                       or (self.end is not None and self.end < instant))
        return reason_known and micro_known


def reason_for(plan: EquipmentPlan, start: int, end: int, value: float, planned_state: bool,
               reasons: Series | None) -> int | None:
    """The reason id of a stop ``[start, end)`` with state ``value`` (rules in the module docstring)."""
    if plan.reason_parameter is not None:
        if reasons is not None:
            for point in reasons.between(start, min(start + plan.reason_window_us + 1, end)):
                found = plan.reason_of(point.value)
                if found is not None:
                    return found
            in_force = reasons.just_before(start)
            found = None if in_force is None else plan.reason_of(in_force.value)
            if found is not None and found in plan.reasons and plan.reasons[found].planned == planned_state:
                return found
    else:
        found = plan.reason_of(value)
        if found is not None:
            return found
    return plan.default_planned_reason if planned_state else plan.default_unplanned_reason


def stops_in(plan: EquipmentPlan, state: Series, reasons: Series | None, stretches: Sequence[tuple[int, int]],
             window_start: int, window_end: int, carry: Stop | None, open_after_end: bool,
             end_after: int | None = None) -> list[Stop]:
    """The stops within the scheduled ``stretches`` (disjoint, in time order) of the window
    ``[window_start, window_end)``.

    ``carry`` is the stop in progress just before the window (from an earlier derivation; the caller checked
    that it is settled and that the state just before the window is its value).  It comes back first, with
    its end as this window sees it.  A stop still going at ``window_end`` when scheduled time continues past it
    (``open_after_end``) ends at ``end_after`` when the caller knows when it ended (readings after the window
    say so), and is open (``end`` None) otherwise."""
    found: list[Stop] = []
    carried = False
    for first, last in stretches:
        for run_start, run_end, value in state.runs(first, last):
            if plan.is_running(value):
                continue
            planned = plan.is_planned_state(value)
            open_at = window_end if run_end == window_end and open_after_end else None
            end = None if open_at is not None else run_end
            if open_at is not None and end_after is not None:
                open_at, end = None, end_after
            if (carry is not None and not carried and run_start == window_start == first
                    and value == carry.value):
                carried = True
                found.append(Stop(carry.start, end, value, carry.planned_state, carry.reason_id, open_at))
                continue
            reason = reason_for(plan, run_start, run_end, value, planned, reasons)
            found.append(Stop(run_start, end, value, planned, reason, open_at))
    if carry is not None and not carried:
        # the state changed right at the window's start, or scheduled time ended there
        found.insert(0, Stop(carry.start, window_start, carry.value, carry.planned_state, carry.reason_id))
    return found
