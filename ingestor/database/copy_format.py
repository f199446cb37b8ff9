"""PostgreSQL's binary COPY format for ``fact_sensor_event`` rows, encoded once per reading.

A reading is encoded when it enters the spool and never again: the spool stores these bytes and the writer
streams them to ``COPY … FROM STDIN (FORMAT binary)`` unchanged.  The columns are sent in the order
:data:`COLUMNS`, constant parts first, so that everything but the timestamp and the value comes from a cache
keyed by (equipment, parameter, unit, quality): encoding a reading is one dictionary lookup and one
``struct.pack``.

Format (PostgreSQL docs, "COPY … Binary Format"): an 11-byte signature, two 32-bit header fields, then per row
a 16-bit field count and per field a 32-bit length (-1 for NULL) and the value in network byte order,
then a 16-bit -1 trailer.  timestamptz is microseconds since 2000-01-01 UTC as int64; float8 is IEEE 754.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from ingestor.contract.reading import Reading

COLUMNS = ("equipment_id", "parameter", "unit_id", "quality", "event_ts", "value")
HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
TRAILER = struct.pack(">h", -1)
PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z in Unix microseconds
MAX_PARAMETER_BYTES = 100          # fact_sensor_event.parameter is VARCHAR(100) of ASCII-ish tag names
# timestamptz's valid range in PostgreSQL: 4713 BC to 294276 AD; a reading outside it is refused early
MIN_TIMESTAMP_US = -211_813_488_000_000_000 + PG_EPOCH_US
MAX_TIMESTAMP_US = 9_223_371_331_200_000_000 + PG_EPOCH_US

_TAIL = struct.Struct(">iqid")      # event_ts (len 8, int64), value (len 8, float8)
_TAIL_SIZE = _TAIL.size
_FIELD_COUNT = struct.pack(">h", len(COLUMNS))
_NULL = struct.pack(">i", -1)


class Unresolvable(Exception):
    """A reading names equipment the database does not know (yet)."""


def row_prefix(equipment_id: int, parameter: str, unit_id: int | None, quality: int) -> bytes:
    """The constant part of a row: field count, equipment_id, parameter, unit_id, quality."""
    name = parameter.encode()
    if len(name) > MAX_PARAMETER_BYTES:
        raise ValueError(f"parameter name longer than {MAX_PARAMETER_BYTES} bytes")
    unit = _NULL if unit_id is None else struct.pack(">ii", 4, unit_id)
    return (_FIELD_COUNT + struct.pack(">ii", 4, equipment_id) + struct.pack(">i", len(name)) + name
            + unit + struct.pack(">ih", 2, quality))


class RowEncoder:
    """Encodes readings into binary COPY rows with the current dimension keys."""

    def __init__(self, equipment: Mapping[str, int], units: Mapping[str, int], cache_limit: int = 200_000) -> None:
        self._equipment = equipment
        self._units = units
        self._prefixes: dict[tuple[str, str, str | None, int], bytes] = {}
        self._cache_limit = cache_limit

    def knows(self, equipment: str) -> bool:
        return equipment in self._equipment

    def encode(self, readings: Iterable[Reading]) -> tuple[bytes, int, list[tuple[Reading, str]]]:
        """Rows for the readings it can encode, how many, and the readings it cannot with the reason."""
        prefixes = self._prefixes
        tail = _TAIL.pack
        parts: list[bytes] = []
        refused: list[tuple[Reading, str]] = []
        for reading in readings:
            key = (reading.equipment, reading.parameter, reading.unit, reading.quality)
            prefix = prefixes.get(key)
            if prefix is None:
                try:
                    prefix = self._prefix(reading)
                except Unresolvable:
                    refused.append((reading, "unknown_equipment"))
                    continue
                except ValueError:
                    refused.append((reading, "parameter_too_long"))
                    continue
            stamp = reading.timestamp_us
            if not MIN_TIMESTAMP_US <= stamp <= MAX_TIMESTAMP_US:
                refused.append((reading, "timestamp_out_of_range"))
                continue
            try:
                parts.append(prefix + tail(8, stamp - PG_EPOCH_US, 8, reading.value))
            except struct.error:
                refused.append((reading, "value_not_a_number"))
        return b"".join(parts), len(parts), refused

    def _prefix(self, reading: Reading) -> bytes:
        equipment_id = self._equipment.get(reading.equipment)
        if equipment_id is None:
            raise Unresolvable(reading.equipment)
        unit_id = self._units.get(reading.unit) if reading.unit is not None else None
        prefix = row_prefix(equipment_id, reading.parameter, unit_id, int(reading.quality))
        if len(self._prefixes) >= self._cache_limit:
            self._prefixes.clear()
        self._prefixes[(reading.equipment, reading.parameter, reading.unit, reading.quality)] = prefix
        return prefix


def split_rows(payload: bytes) -> Iterator[bytes]:
    """The rows of an encoded payload, one ``bytes`` each (for isolating a row the database refuses)."""
    view = memoryview(payload)
    offset = 0
    end = len(payload)
    while offset < end:
        start = offset
        (fields,) = struct.unpack_from(">h", view, offset)
        offset += 2
        for _ in range(fields):
            (length,) = struct.unpack_from(">i", view, offset)
            offset += 4 + max(length, 0)
        yield bytes(view[start:offset])


def decode_row(row: bytes) -> dict[str, Any]:
    """One encoded row as column → value (for dead letters and for re-keying old spool segments)."""
    offset = 2
    values: list[bytes | None] = []
    for _ in COLUMNS:
        (length,) = struct.unpack_from(">i", row, offset)
        offset += 4
        if length < 0:
            values.append(None)
        else:
            values.append(row[offset:offset + length])
            offset += length
    equipment, parameter, unit, quality, stamp, value = values
    assert equipment is not None and parameter is not None and quality is not None
    assert stamp is not None and value is not None
    return {
        "equipment_id": struct.unpack(">i", equipment)[0],
        "parameter": parameter.decode(),
        "unit_id": None if unit is None else struct.unpack(">i", unit)[0],
        "quality": struct.unpack(">h", quality)[0],
        "timestamp_us": struct.unpack(">q", stamp)[0] + PG_EPOCH_US,
        "value": struct.unpack(">d", value)[0],
    }


def rekey_row(row: bytes, equipment_id: int, unit_id: int | None) -> bytes:
    """The same row with other equipment and unit ids (for segments spooled under older keys)."""
    fields = decode_row(row)
    return row_prefix(equipment_id, fields["parameter"], unit_id, fields["quality"]) + row[-_TAIL_SIZE:]
