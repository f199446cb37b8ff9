"""Turning one MQTT message body into readings: bare numbers, JSON objects with configurable field paths,
arrays of readings.  Pure functions of bytes, with no network, so they can be fuzzed on their own.

Anything that cannot become readings raises :class:`Malformed` with a fixed, low-cardinality ``reason``
(the Prometheus label) and a human ``detail`` (for the log and the dead-letter file).  A message is taken
whole or not at all: one bad element rejects the array, so the dead-letter file holds exactly what to fix.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

import orjson

from connectors.mqtt.config import PayloadConfig
from ingestor.contract import Reading

REASONS = (
    "oversized", "bad_encoding", "bad_json", "not_a_number", "missing_field", "bad_timestamp", "bad_parameter",
    "unknown_topic", "unknown_equipment", "unknown_unit", "empty", "retained", "internal_error",
    # Sparkplug B (connectors/mqtt/sparkplug.py)
    "bad_protobuf", "bad_topic", "before_birth", "bad_sequence", "bad_state",
)
"""Every reason a message is rejected; the ``reason`` label of ``ingestor_mqtt_messages_rejected_total``."""

MAX_PARAMETER_LENGTH = 100
MAX_EQUIPMENT_LENGTH = 50
MAX_UNIT_LENGTH = 20
_MIN_US = 0                           # 1970-01-01
_MAX_US = 7_258_118_400_000_000       # 2200-01-01


class Malformed(Exception):
    """A message that yields no readings; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def compile_path(path: str | None) -> tuple[str, ...] | None:
    return tuple(path.split(".")) if path else None


def resolve(node: Any, path: tuple[str, ...]) -> Any:
    """Follow a dotted path through objects (keys) and arrays (indices); KeyError when absent."""
    for part in path:
        if isinstance(node, dict):
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise KeyError(part)
    return node


def to_number(raw: Any, what: str = "value") -> float:
    """A finite float from a JSON number, boolean or numeric string; Malformed otherwise."""
    if isinstance(raw, bool):
        return 1.0 if raw else 0.0
    if isinstance(raw, int | float | str):
        try:
            value = float(raw)
        except (ValueError, OverflowError):
            raise Malformed("not_a_number", f"{what} {_short(raw)} is not a number") from None
        if math.isfinite(value):
            return value
        raise Malformed("not_a_number", f"{what} {_short(raw)} is not a finite number")
    raise Malformed("not_a_number", f"{what} is {_kind(raw)}, not a number")


_EPOCH_SCALE = {"epoch_s": 1_000_000, "epoch_ms": 1_000, "epoch_us": 1, "epoch_ns": 0.001}
_GUESS_FROM_US = 946_684_800_000_000      # 2000-01-01: the guess places a number only in 2000..2200
"""An epoch number is read in the one unit (s, ms, µs, ns) that puts it between 2000 and 2200; the four
ranges do not overlap, so the guess is never ambiguous.  A number in none of them (253402300799: year 9999 in
seconds, which a size-based guess took for milliseconds, 1978) is refused as ``bad_timestamp``, never stored at
a wrong time; ``timestamp_format`` names the unit where a source really sends older or stranger times."""


def to_timestamp_us(raw: Any, fmt: str = "auto") -> int:
    """Microseconds since the epoch from ISO 8601 text or an epoch number (auto: by magnitude)."""
    if isinstance(raw, bool) or raw is None or not isinstance(raw, int | float | str):
        raise Malformed("bad_timestamp", f"timestamp is {_kind(raw)}")
    if fmt in ("auto", "iso8601") and isinstance(raw, str) and (":" in raw or "T" in raw):
        # ISO 8601 text first: float() takes no text with ':' or 'T' (but 'INFINITY'/'NaN', which ISO refuses)
        try:
            moment = datetime.fromisoformat(raw.strip())
        except ValueError:
            pass
        else:
            return _iso_micros(moment, raw)
    number: float | None = None
    if isinstance(raw, int | float):
        number = raw
    elif fmt != "iso8601":
        try:
            number = float(raw)
        except ValueError:
            if fmt != "auto":
                raise Malformed("bad_timestamp", f"timestamp {_short(raw)} is not a {fmt} number") from None
    if number is not None and fmt == "iso8601":
        raise Malformed("bad_timestamp", f"timestamp {_short(raw)} is a number, expected ISO 8601 text")
    try:
        if number is not None:
            if not math.isfinite(number):
                raise Malformed("bad_timestamp", f"timestamp {_short(raw)} is not finite")
            if fmt == "auto":
                fmt = next((unit for unit, scale in _EPOCH_SCALE.items()
                            if _GUESS_FROM_US <= number * scale < _MAX_US), "")
                if not fmt:
                    raise Malformed("bad_timestamp", f"epoch timestamp {_short(raw)} is 2000..2200 in no unit "
                                                     "(s, ms, us, ns); set timestamp_format to say which")
            micros = int(number * _EPOCH_SCALE[fmt] + (0.5 if number >= 0 else -0.5))
        else:
            assert isinstance(raw, str)
            return _iso_micros(datetime.fromisoformat(raw.strip()), raw)
    except (ValueError, OverflowError, TypeError):
        raise Malformed("bad_timestamp", f"timestamp {_short(raw)} is not ISO 8601 or an epoch number") from None
    if not _MIN_US <= micros < _MAX_US:
        raise Malformed("bad_timestamp", f"timestamp {_short(raw)} is outside 1970..2200")
    return micros


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _iso_micros(moment: datetime, raw: str) -> int:
    try:
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        delta = moment - _EPOCH
    except (ValueError, OverflowError, TypeError):
        raise Malformed("bad_timestamp", f"timestamp {_short(raw)} is not ISO 8601 or an epoch number") from None
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if not _MIN_US <= micros < _MAX_US:
        raise Malformed("bad_timestamp", f"timestamp {_short(raw)} is outside 1970..2200")
    return micros


class PayloadParser:
    """Parses bodies for one route.  ``equipment``, ``parameter`` and ``unit`` given to :meth:`parse` come
    from the topic and are the defaults a payload field overrides."""

    __slots__ = ("_config", "_equipment", "_items", "_known_equipment", "_known_units", "_parameter",
                 "_timestamp", "_unit", "_value", "format")

    def __init__(self, config: PayloadConfig, known_equipment: Collection[str] | None = None,
                 known_units: Collection[str] | None = None) -> None:
        self._config = config
        self.format = config.format
        self._value = compile_path(config.value) or ("value",)
        self._timestamp = compile_path(config.timestamp)
        self._unit = compile_path(config.unit)
        self._parameter = compile_path(config.parameter)
        self._equipment = compile_path(config.equipment)
        self._items = compile_path(config.items)
        self._known_equipment = known_equipment
        self._known_units = known_units

    def parse(self, body: bytes, equipment: str | None, parameter: str | None, unit: str | None,
              received_us: int) -> list[Reading]:
        # a JSON object or array is never a bare number: no float() exception for every JSON message
        if self.format == "number" or (self.format == "auto" and body.lstrip()[:1] not in (b"{", b"[")):
            try:
                value = float(body)
            except (ValueError, OverflowError):
                if self.format == "number":
                    raise Malformed("not_a_number", f"payload {_short(body)} is not a number") from None
            else:
                if not math.isfinite(value):
                    raise Malformed("not_a_number", f"payload {_short(body)} is not a finite number")
                return [self._reading(equipment, parameter, value, received_us, unit)]
        if not body.strip():
            raise Malformed("empty", "the payload is empty")
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:  # or what orjson refuses and json takes (NaN, big integers, surrogates)
            document = self._loads_exactly(body)
        return self.parse_document(document, equipment, parameter, unit, received_us)

    def _loads_exactly(self, body: bytes) -> Any:
        """The standard library's reading of a body orjson refused: the same documents, the same reasons."""
        try:
            return json.loads(body)
        except UnicodeDecodeError:
            raise Malformed("bad_encoding", "the payload is not UTF-8 text") from None
        except (ValueError, RecursionError) as exc:
            if self.format == "auto" and body.lstrip()[:1] not in (b"{", b"[", b'"'):
                raise Malformed("not_a_number", f"payload {_short(body)} is neither a number nor JSON") from None
            raise Malformed("bad_json", f"not JSON: {exc}"[:200]) from None

    def parse_document(self, document: Any, equipment: str | None, parameter: str | None, unit: str | None,
                       received_us: int) -> list[Reading]:
        if isinstance(document, list):
            return self._items_of(document, equipment, parameter, unit, received_us)
        if isinstance(document, dict):
            if self._items is not None:
                try:
                    items = resolve(document, self._items)
                except KeyError:
                    raise Malformed("missing_field", f"no {self._config.items!r} array in the object") from None
                if not isinstance(items, list):
                    raise Malformed("missing_field", f"{self._config.items!r} is {_kind(items)}, not an array")
                # fields of the enclosing object are the defaults of each item (a shared timestamp, say)
                equipment, parameter, unit, received_us = self._context(
                    document, equipment, parameter, unit, received_us)
                return self._items_of(items, equipment, parameter, unit, received_us)
            return [self._from_object(document, equipment, parameter, unit, received_us)]
        return [self._reading(equipment, parameter, to_number(document, "payload"), received_us, unit)]

    def _items_of(self, items: list[Any], equipment: str | None, parameter: str | None, unit: str | None,
                  received_us: int) -> list[Reading]:
        if not items:
            raise Malformed("empty", "the array of readings is empty")
        readings = []
        for index, item in enumerate(items):
            try:
                if isinstance(item, dict):
                    readings.append(self._from_object(item, equipment, parameter, unit, received_us))
                else:
                    readings.append(self._reading(equipment, parameter, to_number(item), received_us, unit))
            except Malformed as exc:
                raise Malformed(exc.reason, f"item {index}: {exc.detail}") from None
        return readings

    def _context(self, obj: dict[str, Any], equipment: str | None, parameter: str | None, unit: str | None,
                 received_us: int) -> tuple[str | None, str | None, str | None, int]:
        if self._equipment is not None:
            found = _optional(obj, self._equipment)
            if found is not None:
                equipment = _text(found, "equipment", "unknown_equipment", MAX_EQUIPMENT_LENGTH)
        if self._parameter is not None:
            found = _optional(obj, self._parameter)
            if found is not None:
                parameter = _text(found, "parameter", "bad_parameter", MAX_PARAMETER_LENGTH)
        if self._unit is not None:
            found = _optional(obj, self._unit)
            if found is not None:
                unit = _text(found, "unit", "unknown_unit", MAX_UNIT_LENGTH)
        if self._timestamp is not None:
            found = _optional(obj, self._timestamp)
            if found is not None:
                received_us = to_timestamp_us(found, self._config.timestamp_format)
        return equipment, parameter, unit, received_us

    def _from_object(self, obj: dict[str, Any], equipment: str | None, parameter: str | None, unit: str | None,
                     received_us: int) -> Reading:
        try:
            raw = resolve(obj, self._value)
        except KeyError:
            raise Malformed("missing_field", f"no {self._config.value!r} in the object") from None
        value = to_number(raw)
        equipment, parameter, unit, stamp = self._context(obj, equipment, parameter, unit, received_us)
        return self._reading(equipment, parameter, value, stamp, unit)

    def _reading(self, equipment: str | None, parameter: str | None, value: float, stamp_us: int,
                 unit: str | None) -> Reading:
        if equipment is None:
            raise Malformed("missing_field", "no equipment: neither the topic nor the payload names one")
        if parameter is None:
            raise Malformed("missing_field", "no parameter: neither the topic nor the payload names one")
        if len(parameter) > MAX_PARAMETER_LENGTH:
            raise Malformed("bad_parameter", f"parameter {parameter[:40]!r}... is longer than {MAX_PARAMETER_LENGTH}")
        if self._known_equipment is not None and equipment not in self._known_equipment:
            raise Malformed("unknown_equipment", f"equipment {equipment[:60]!r} is not in the plant")
        if unit is not None and self._known_units is not None and unit not in self._known_units:
            raise Malformed("unknown_unit", f"unit {unit[:30]!r} is not a plant unit")
        return Reading(equipment, parameter, value, stamp_us, unit)


def _optional(obj: dict[str, Any], path: tuple[str, ...]) -> Any:
    if len(path) == 1:  # the common case, without raising KeyError for every absent field
        return obj.get(path[0])
    try:
        return resolve(obj, path)
    except KeyError:
        return None


def _text(raw: Any, what: str, reason: str, limit: int) -> str:
    if isinstance(raw, str) and raw.strip() and len(raw) <= limit:
        return raw
    if isinstance(raw, int) and not isinstance(raw, bool) and what != "unit":
        return str(raw)
    raise Malformed(reason, f"{what} {_short(raw)} is not a non-empty text of at most {limit} characters")


def _kind(raw: Any) -> str:
    return {dict: "an object", list: "an array", str: "text", type(None): "null", bool: "a boolean"}.get(
        type(raw), type(raw).__name__)


def _short(raw: Any) -> str:
    text = repr(raw)
    return text if len(text) <= 60 else text[:57] + "..."
