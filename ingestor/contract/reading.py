"""The reading: one measured value of one tag, the unit of data that flows from connectors to the database.

A reading is built once, in the connector's callback, and is never converted to dicts and back on the way
to the database.  It is a ``NamedTuple`` because creating one is about as cheap as creating a tuple, and it
cannot be changed after it is built.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from enum import IntEnum
from typing import NamedTuple


class Quality(IntEnum):
    """Quality of a reading, as OPC UA and most historians classify it (stored in ``fact_sensor_event.quality``)."""

    GOOD = 0
    UNCERTAIN = 1
    BAD = 2


class Reading(NamedTuple):
    """One value of one parameter of one piece of equipment at one instant.

    ``timestamp_us`` is microseconds since the Unix epoch, UTC: the source's own timestamp where the
    protocol carries one, otherwise the moment the connector received the value.
    """

    equipment: str
    parameter: str
    value: float
    timestamp_us: int
    unit: str | None = None
    quality: Quality = Quality.GOOD


def now_us() -> int:
    """The current time as microseconds since the Unix epoch."""
    return time.time_ns() // 1000


def to_timestamp_us(moment: datetime) -> int:
    """A timezone-aware datetime as microseconds since the Unix epoch (naive datetimes are taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_timestamp_us(timestamp_us: int) -> datetime:
    """Microseconds since the Unix epoch as a UTC datetime."""
    return datetime.fromtimestamp(timestamp_us // 1_000_000, UTC).replace(microsecond=timestamp_us % 1_000_000)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
