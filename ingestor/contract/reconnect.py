"""Reconnecting: the capped exponential backoff with jitter that every link to a device or a database uses."""

from __future__ import annotations

import random
from collections.abc import Iterator

from pydantic import Field, model_validator

from ingestor.contract.config_base import Duration, StrictModel


class ReconnectConfig(StrictModel):
    """Capped exponential backoff with jitter between reconnection attempts."""

    initial: Duration = 1.0
    max: Duration = 30.0
    multiplier: float = Field(default=2.0, ge=1.0)
    jitter: float = Field(default=0.2, ge=0.0, le=1.0, description="± fraction of each delay, randomised")
    healthy_after: Duration = Field(
        default=10.0, gt=0, description="a link that stayed up this long counts as recovered: the back-off starts "
                                        "again from initial (a peer that accepts and drops at once is no recovery)")

    @model_validator(mode="after")
    def _ordered(self) -> ReconnectConfig:
        if self.initial <= 0 or self.max < self.initial:
            raise ValueError("reconnect needs 0 < initial <= max")
        return self


def backoff_delays(config: ReconnectConfig, rng: random.Random | None = None) -> Iterator[float]:
    """Capped exponential delays with ± jitter: initial, initial·m, initial·m², … up to max."""
    rng = rng or random.Random()
    delay = config.initial
    while True:
        yield delay * rng.uniform(1 - config.jitter, 1 + config.jitter)
        delay = min(delay * config.multiplier, config.max)
