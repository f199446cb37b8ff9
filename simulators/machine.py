"""The machine model every simulator exposes: what a PLC on a discrete-manufacturing machine reports.

Each machine has cumulative counters (all parts, good parts; unsigned 32-bit, so they wrap), a state
(running, planned stop, unplanned stop) with a reason code, the current product, and process values with
noise and slow drift: temperature, vibration and motor current.  Time is advanced explicitly
(``advance(seconds)``), so a simulator can run it at wall-clock speed or faster, and a seeded model is
reproducible.

State and reason codes (the values a tag map translates):

=====  =================  ====================================
state  meaning            reason codes that come with it
=====  =================  ====================================
1      running            0
2      planned stop       3 tool change, 5 scheduled maintenance
3      unplanned stop     1 mechanical failure, 2 electrical failure, 4 material shortage
=====  =================  ====================================
"""

from __future__ import annotations

import math
import random
import zlib
from dataclasses import dataclass, field

RUNNING, PLANNED_STOP, UNPLANNED_STOP = 1, 2, 3
REASON_NONE, REASON_MECH_FAIL, REASON_ELEC_FAIL, REASON_TOOL_CHANGE, REASON_MAT_SHORT, REASON_SCHED_MAINT = range(6)
COUNTER_MODULUS = 2**32

PARAMETERS = ("parts_total", "parts_good", "state", "reason", "product", "temperature", "vibration", "current")
"""Every parameter a machine reports, in a fixed order."""

UNITS = {"parts_total": "pcs", "parts_good": "pcs", "state": "state", "reason": None, "product": None,
         "temperature": "degC", "vibration": "mm/s", "current": "A"}


@dataclass
class MachineProfile:
    """How a machine behaves; the defaults are a press making a part every 6 s."""

    cycle_time: float = 6.0            # seconds per part at ideal speed
    speed_loss: float = 0.05           # fraction of ideal speed lost while running
    scrap_rate: float = 0.02           # fraction of parts that are bad
    mean_time_between_failures: float = 3600.0
    mean_time_to_repair: float = 300.0
    mean_time_between_planned_stops: float = 4 * 3600.0
    planned_stop_duration: float = 600.0
    product_run_length: int = 2000     # parts before the product changes
    products: tuple[int, ...] = (1, 2)
    base_temperature: float = 55.0
    base_vibration: float = 2.0
    base_current: float = 95.0


@dataclass
class Machine:
    """One simulated machine; ``values()`` is what its PLC would report now."""

    code: str
    profile: MachineProfile = field(default_factory=MachineProfile)
    seed: int | None = None
    parts_total: int = 0
    parts_good: int = 0
    state: int = RUNNING
    reason: int = REASON_NONE
    product: int = 1
    temperature: float = 0.0
    vibration: float = 0.0
    current: float = 0.0
    clock: float = 0.0

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed if self.seed is not None else zlib.crc32(self.code.encode()))
        self._part_progress = 0.0
        self._state_left = self._rng.expovariate(1 / self.profile.mean_time_between_failures)
        self._next_planned = self.profile.mean_time_between_planned_stops * self._rng.uniform(0.5, 1.0)
        self._parts_in_run = 0
        self._wear = 0.0
        self.temperature = self.profile.base_temperature
        self.vibration = self.profile.base_vibration
        self.current = self.profile.base_current

    def advance(self, seconds: float) -> None:
        """Move the machine ``seconds`` forward (in steps of at most one second)."""
        while seconds > 0:
            step = min(seconds, 1.0)
            self._step(step)
            seconds -= step

    def _step(self, dt: float) -> None:
        profile, rng = self.profile, self._rng
        self.clock += dt
        self._state_left -= dt
        if self.state == RUNNING:
            self._part_progress += dt * (1 - profile.speed_loss) / profile.cycle_time
            while self._part_progress >= 1:
                self._part_progress -= 1
                self.parts_total = (self.parts_total + 1) % COUNTER_MODULUS
                if rng.random() >= profile.scrap_rate:
                    self.parts_good = (self.parts_good + 1) % COUNTER_MODULUS
                self._parts_in_run += 1
                if self._parts_in_run >= profile.product_run_length and len(profile.products) > 1:
                    self._parts_in_run = 0
                    index = profile.products.index(self.product) if self.product in profile.products else -1
                    self.product = profile.products[(index + 1) % len(profile.products)]
                    self._stop(PLANNED_STOP, REASON_TOOL_CHANGE, profile.planned_stop_duration / 2)
            self._wear += dt / 86400
            if self.clock >= self._next_planned:
                self._next_planned = self.clock + profile.mean_time_between_planned_stops
                self._stop(PLANNED_STOP, REASON_SCHED_MAINT, profile.planned_stop_duration)
            elif self._state_left <= 0:
                reason = rng.choice((REASON_MECH_FAIL, REASON_MECH_FAIL, REASON_ELEC_FAIL, REASON_MAT_SHORT))
                self._stop(UNPLANNED_STOP, reason, rng.expovariate(1 / profile.mean_time_to_repair))
        elif self._state_left <= 0:
            self.state, self.reason = RUNNING, REASON_NONE
            self._state_left = rng.expovariate(1 / profile.mean_time_between_failures)
        running = self.state == RUNNING
        # process values relax towards their running or idle level, with noise and a slow wear drift
        target_temp = profile.base_temperature + (8 if running else -15) + 10 * self._wear
        self.temperature += (target_temp - self.temperature) * min(1.0, dt / 120) + rng.gauss(0, 0.05)
        target_vib = (profile.base_vibration + 1.5 * self._wear) if running else 0.1
        self.vibration = max(0.0, self.vibration + (target_vib - self.vibration) * min(1.0, dt / 5)
                             + rng.gauss(0, 0.05))
        target_current = profile.base_current * (1 + 0.1 * math.sin(self.clock / 7)) if running else 4.0
        self.current = max(0.0, self.current + (target_current - self.current) * min(1.0, dt / 2)
                           + rng.gauss(0, 0.5))

    def _stop(self, state: int, reason: int, duration: float) -> None:
        self.state, self.reason = state, reason
        self._state_left = max(1.0, duration)

    def values(self) -> dict[str, float]:
        """The machine's current values, by parameter name."""
        return {"parts_total": self.parts_total, "parts_good": self.parts_good, "state": self.state,
                "reason": self.reason, "product": self.product, "temperature": round(self.temperature, 3),
                "vibration": round(self.vibration, 4), "current": round(self.current, 2)}

    def set_value(self, parameter: str, value: float) -> None:
        """Force a value (trace replay)."""
        if parameter in ("parts_total", "parts_good", "state", "reason", "product"):
            setattr(self, parameter, int(value))
        elif parameter in ("temperature", "vibration", "current"):
            setattr(self, parameter, float(value))
        else:
            raise KeyError(f"machine has no parameter {parameter!r}")


def default_machines(count: int = 3, seed: int = 1, first: int = 1) -> list[Machine]:
    """A small line: ``PRESS-01``, ``PRESS-02``, … (numbered from ``first``) with slightly different profiles."""
    machines = []
    for index in range(count):
        profile = MachineProfile(cycle_time=6.0 + index * 0.5, base_temperature=55.0 + index * 3,
                                 base_current=95.0 - index * 5)
        machines.append(Machine(f"PRESS-{first + index:02d}", profile, seed=seed + index))
    return machines
