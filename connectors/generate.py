"""An in-process signal generator: readings without any device.

It lets an operator try the daemon, the database and the dashboards before a PLC is wired, and it is the
source the test suite and the demo use when they exercise the pipeline without a protocol.  Signals are
simple shapes of time (sine, ramp, random walk, counter, a cycle through fixed values such as machine states),
computed from the wall clock so that every tag moves on its own schedule.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Iterable
from typing import Literal

from pydantic import Field, model_validator

from ingestor.contract import (
    BuildContext,
    ConnectorConfig,
    ConnectorType,
    Duration,
    Reading,
    ReadingSink,
    TagConfig,
    TagRef,
    now_us,
)


class GeneratedTag(TagConfig):
    """One generated parameter."""

    signal: Literal["sine", "ramp", "random_walk", "counter", "constant", "cycle"] = "sine"
    min: float = 0.0
    max: float = 100.0
    period: Duration = Field(default=60.0, gt=0, description="one sine/ramp period, or the time per cycle value")
    rate: float = Field(default=1.0, ge=0, description="counter increments per second")
    values: list[float] = Field(default_factory=list, description="the values a cycle steps through")
    noise: float = Field(default=0.0, ge=0, description="gaussian noise, standard deviation")

    @model_validator(mode="after")
    def _consistent(self) -> GeneratedTag:
        if self.max < self.min:
            raise ValueError("max must not be below min")
        if self.signal == "cycle" and not self.values:
            raise ValueError("a cycle signal needs a list of values")
        return self


class GenerateConfig(ConnectorConfig):
    """``type: generate``: synthetic readings at a fixed interval."""

    type: Literal["generate"]
    interval: Duration = Field(default=1.0, gt=0)
    tags: list[GeneratedTag] = Field(min_length=1)

    def tag_refs(self) -> Iterable[TagRef]:
        for index, tag in enumerate(self.tags):
            yield TagRef(("tags", index), tag.equipment, tag.parameter, tag.unit)



class SignalGenerator:
    """Emits one reading per tag every ``interval`` seconds."""

    def __init__(self, config: GenerateConfig, rng: random.Random | None = None) -> None:
        self.name = config.name
        self._config = config
        self._rng = rng or random.Random()
        self._walk = [(tag.min + tag.max) / 2 for tag in config.tags]
        self._started_us = 0

    async def connect(self) -> None:
        self._started_us = now_us()

    async def run(self, sink: ReadingSink) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            stamp = now_us()
            await sink.put([self._reading(index, tag, stamp) for index, tag in enumerate(self._config.tags)])
            next_at += self._config.interval
            delay = next_at - loop.time()
            if delay < 0:  # fell behind (a slow sink): skip ahead rather than burst
                next_at, delay = loop.time(), 0.0
            await asyncio.sleep(delay)

    async def close(self) -> None:
        return None

    def _reading(self, index: int, tag: GeneratedTag, stamp_us: int) -> Reading:
        seconds = stamp_us / 1e6
        span = tag.max - tag.min
        if tag.signal == "sine":
            value = tag.min + span * (0.5 + 0.5 * math.sin(2 * math.pi * seconds / tag.period))
        elif tag.signal == "ramp":
            value = tag.min + span * ((seconds % tag.period) / tag.period)
        elif tag.signal == "random_walk":
            step = self._rng.gauss(0.0, span / 50 or 1.0)
            self._walk[index] = min(tag.max, max(tag.min, self._walk[index] + step))
            value = self._walk[index]
        elif tag.signal == "counter":
            value = tag.min + math.floor((stamp_us - self._started_us) / 1e6 * tag.rate)
        elif tag.signal == "cycle":
            value = tag.values[int(seconds // tag.period) % len(tag.values)]
        else:
            value = tag.min
        if tag.noise:
            value += self._rng.gauss(0.0, tag.noise)
        return Reading(tag.equipment, tag.parameter, value, stamp_us, tag.unit)


def build(config: GenerateConfig, context: BuildContext) -> SignalGenerator:
    return SignalGenerator(config, rng=context.clients.get("rng"))


CONNECTOR = ConnectorType(config=GenerateConfig, build=build)
"""Named by the ``ingestor.connectors`` entry point ``generate``."""
