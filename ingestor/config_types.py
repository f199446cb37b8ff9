"""Building blocks shared by every configuration model: strict models, durations, byte sizes, secrets.

Operators make typos, so every model refuses unknown keys.  Durations and sizes are written the way
operators write them ("500ms", "2s", "5m", "1h"; "512MiB", "2GB") and stored as plain numbers.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?\s*$")
_SIZE_UNITS = {
    None: 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
    "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40,
}


class StrictModel(BaseModel):
    """Base of every configuration model: unknown keys are errors, values are not coerced loosely."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


def _parse_duration(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 500ms, 2s, 5m or 1h")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    raise ValueError(f"expected a duration such as 500ms, 2s, 5m or 1h, got {value!r}")


def _parse_size(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("expected a size such as 512MiB or 2GB")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match:
            return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])
    raise ValueError(f"expected a size such as 512MiB or 2GB, got {value!r}")


Duration = Annotated[float, BeforeValidator(_parse_duration)]
"""Seconds; written in YAML as a number of seconds or as "250ms", "2s", "5m", "1h", "1d"."""

ByteSize = Annotated[int, BeforeValidator(_parse_size)]
"""Bytes; written in YAML as a number or as "64KiB", "512MiB", "2GB"."""


class ReconnectConfig(StrictModel):
    """Capped exponential backoff with jitter between reconnection attempts."""

    initial: Duration = 1.0
    max: Duration = 30.0
    multiplier: float = Field(default=2.0, ge=1.0)
    jitter: float = Field(default=0.2, ge=0.0, le=1.0, description="± fraction of each delay, randomised")

    @model_validator(mode="after")
    def _ordered(self) -> ReconnectConfig:
        if self.initial <= 0 or self.max < self.initial:
            raise ValueError("reconnect needs 0 < initial <= max")
        return self
