"""Sparkplug B (Eclipse Sparkplug 3.0) as a host application sees it: births, data by alias, deaths, STATE.

One :class:`SparkplugHost` per connector keeps what the edge nodes told it:

* ``NBIRTH`` / ``DBIRTH`` define the metrics of a node / device: name, alias, datatype and properties (the
  engineering unit is the ``engUnit`` / ``engUnits`` property).  A new NBIRTH forgets everything known about
  that node and its devices (aliases are remapped, devices are born again after it).  Births carry current
  values, which become readings.
* ``NDATA`` / ``DDATA`` carry values by alias (or by name); each becomes a reading of good quality.
* ``NDEATH`` (often the broker delivering the node's will) and ``DDEATH`` turn every metric of that node or
  device into one reading of **bad** quality at that instant, carrying the last value, so the derivation sees
  the machine go dark.  An NDEATH whose ``bdSeq`` is not the one of the node's current birth is an old
  session's will and is ignored (counted).
* ``seq`` runs 0..255 and wraps; every message of a node after its NBIRTH (except NDEATH) is the next one.
  A gap, data before a birth, or an alias no birth defined asks the node for a rebirth (an NCMD with
  ``Node Control/Rebirth`` = true), at most once per ``rebirth_interval`` per node, counted.
* ``spBv1.0/STATE/<host_id>`` messages (JSON ``{"online": bool, "timestamp": ms}``) are tracked and logged.

Decoding is done by the ``protobuf`` runtime with the generated Eclipse Tahu definition
(``sparkplug_b_pb2``); see docs/connectors/sparkplug.md.  A body that does not decode, or that breaks the
Sparkplug rules, raises :class:`~connectors.mqtt.payloads.Malformed` with a reason, like every other payload.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter as Tally
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError
from prometheus_client import Counter

from connectors.mqtt import sparkplug_b_pb2 as _pb2
from connectors.mqtt.config import SPARKPLUG_NAMESPACE, SparkplugConfig, format_names
from connectors.mqtt.payloads import MAX_EQUIPMENT_LENGTH, MAX_PARAMETER_LENGTH, MAX_UNIT_LENGTH, Malformed
from ingestor.contract import Quality, Reading, get_logger

log = get_logger(__name__)

Payload: Any = vars(_pb2)["Payload"]

REBIRTH_REQUESTS = Counter(
    "ingestor_mqtt_sparkplug_rebirth_requests_total", "NCMD Node Control/Rebirth requests sent, by cause",
    ["connector", "cause"])
METRICS_SKIPPED = Counter(
    "ingestor_mqtt_sparkplug_metrics_skipped_total",
    "Sparkplug metrics that did not become readings (not a number, unknown alias, unknown unit ...), by reason",
    ["connector", "reason"])
DEATHS = Counter(
    "ingestor_mqtt_sparkplug_deaths_total", "NDEATH / DDEATH messages that marked metrics bad, by kind",
    ["connector", "kind"])

REBIRTH_METRIC = "Node Control/Rebirth"
BOOLEAN = 11
STRING_TYPES = {12, 14, 15}  # String, Text, UUID
DATETIME = 13
NUMERIC_VALUES = {"int_value", "long_value", "float_value", "double_value", "boolean_value"}
SIGNED = {1, 2, 3, 4}  # Int8, Int16, Int32, Int64
UNIT_PROPERTIES = ("engUnit", "engUnits", "EngUnit", "units", "unit")
MESSAGE_TYPES = {"NBIRTH", "NDATA", "NDEATH", "NCMD", "DBIRTH", "DDATA", "DDEATH", "DCMD"}


@dataclass(slots=True)
class MetricDef:
    """One metric as a birth defined it."""

    name: str
    datatype: int
    unit: str | None
    equipment: str | None
    parameter: str | None
    last: float | None = None
    last_us: int = 0


@dataclass(slots=True)
class Owner:
    """The metrics of one node or one device, by alias and by name."""

    born: bool = False
    by_alias: dict[int, MetricDef] = field(default_factory=dict)
    by_name: dict[str, MetricDef] = field(default_factory=dict)


@dataclass(slots=True)
class EdgeNode:
    group: str
    node: str
    metrics: Owner = field(default_factory=Owner)
    devices: dict[str, Owner] = field(default_factory=dict)
    bd_seq: int | None = None
    seq: int | None = None
    last_rebirth_request: float = -math.inf


class _Format:
    """A compiled equipment / parameter format over the Sparkplug names."""

    __slots__ = ("expression", "names")

    def __init__(self, expression: str) -> None:
        self.expression = expression
        self.names = format_names(expression)

    def __call__(self, values: dict[str, str]) -> str:
        if not self.names:
            return self.expression
        if self.expression == "{" + self.names[0] + "}":
            return values[self.names[0]]
        return self.expression.format(**values)


class SparkplugRoute:
    """What one ``format: sparkplug_b`` subscription says: equipment and parameter formats and a default unit."""

    __slots__ = ("equipment", "parameter", "unit")

    def __init__(self, equipment: str, parameter: str, unit: str | None) -> None:
        self.equipment = _Format(equipment)
        self.parameter = _Format(parameter)
        self.unit = unit


Publish = Callable[[str, bytes], None]


class SparkplugHost:
    """Sparkplug state of every edge node seen by one connector; :meth:`readings` per message."""

    def __init__(self, connector: str, config: SparkplugConfig, publish: Publish,
                 known_equipment: Collection[str] | None = None, known_units: Collection[str] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.connector = connector
        self.config = config
        self.publish = publish
        self.nodes: dict[tuple[str, str], EdgeNode] = {}
        self.hosts: dict[str, bool] = {}
        self.rebirths: Tally[str] = Tally()
        self.skipped: Tally[str] = Tally()
        self.stale_deaths = 0
        self._known_equipment = known_equipment
        self._known_units = known_units
        self._clock = clock

    # --- one message ----------------------------------------------------------------------------------------

    def readings(self, topic: str, body: bytes, route: SparkplugRoute | None, received_us: int) -> list[Reading]:
        """The readings of one message (STATE and commands have none); Malformed if it cannot be used."""
        parts = topic.split("/")
        if len(parts) >= 3 and parts[0] == SPARKPLUG_NAMESPACE and parts[1] == "STATE":
            self._state(parts, body)
            return []
        if len(parts) not in (4, 5) or parts[0] != SPARKPLUG_NAMESPACE or parts[2] not in MESSAGE_TYPES \
                or not all(parts[1:]):
            raise Malformed("bad_topic", f"not a Sparkplug B topic ({SPARKPLUG_NAMESPACE}/GROUP/TYPE/EDGE_NODE"
                                         "[/DEVICE])")
        if route is None:
            raise Malformed("unknown_topic", "no sparkplug_b subscription matches this topic")
        group, kind, node_id = parts[1], parts[2], parts[3]
        device_id = parts[4] if len(parts) == 5 else None
        if (device_id is None) != (kind[0] == "N"):
            raise Malformed("bad_topic", f"{kind} {'needs' if device_id is None else 'has no'} device level")
        if kind in ("NCMD", "DCMD"):
            return []  # commands to edge nodes (ours among them) carry no measurements
        try:
            payload = Payload.FromString(body)
        except DecodeError as exc:
            raise Malformed("bad_protobuf", f"not a Sparkplug B payload: {exc}"[:200]) from None
        stamp = _millis_to_us(payload.timestamp, received_us) if payload.HasField("timestamp") else received_us
        key = (group, node_id)
        node = self.nodes.get(key)
        if kind == "NBIRTH":
            previous = node
            node = self.nodes[key] = EdgeNode(group, node_id)
            if previous is not None:  # the rate limit outlives births: a node rebirthing in a loop is asked once
                node.last_rebirth_request = previous.last_rebirth_request
            node.seq = payload.seq if payload.HasField("seq") else 0
            node.bd_seq = _bd_seq(payload)
            node.metrics.born = True
            return self._birth(node, node.metrics, None, payload, route, stamp)
        if kind == "NDEATH":
            return self._node_death(node, payload, stamp)
        if node is None or not node.metrics.born:
            self._ask_rebirth(group, node_id, node, "before_birth")
            raise Malformed("before_birth", f"{kind} from edge node {node_id!r} before its NBIRTH")
        self._sequence(node, payload, kind)
        if kind == "DBIRTH":
            assert device_id is not None
            born = node.devices[device_id] = Owner(born=True)
            return self._birth(node, born, device_id, payload, route, stamp)
        if kind == "NDATA":
            return self._data(node, node.metrics, None, payload, route, stamp)
        assert device_id is not None
        owner = node.devices.get(device_id)
        if kind == "DDEATH":
            if owner is None or not owner.born:
                return []
            owner.born = False
            DEATHS.labels(self.connector, "DDEATH").inc()
            return self._dark(owner, stamp)
        if owner is None or not owner.born:
            self._ask_rebirth(group, node_id, node, "before_birth")
            raise Malformed("before_birth", f"DDATA from device {device_id!r} of {node_id!r} before its DBIRTH")
        return self._data(node, owner, device_id, payload, route, stamp)

    # --- births, data, deaths ---------------------------------------------------------------------------------

    def _birth(self, node: EdgeNode, owner: Owner, device: str | None, payload: Any, route: SparkplugRoute,
               stamp: int) -> list[Reading]:
        names = {"group": node.group, "edge_node": node.node, "device": device or node.node}
        readings: list[Reading] = []
        for metric in payload.metrics:
            name = metric.name
            if not name:
                self._skip("unnamed_metric")
                continue
            if name == "bdSeq" or name.startswith(("Node Control/", "Device Control/", "Properties/")):
                continue
            definition = self._define(metric, names, route)
            owner.by_name[name] = definition
            if metric.HasField("alias"):
                owner.by_alias[metric.alias] = definition
            reading = self._value(definition, metric, stamp)
            if reading is not None:
                readings.append(reading)
        return readings

    def _define(self, metric: Any, names: dict[str, str], route: SparkplugRoute) -> MetricDef:
        unit = route.unit
        if metric.HasField("properties"):
            props = metric.properties
            for key, value in zip(props.keys, props.values, strict=False):
                if key in UNIT_PROPERTIES and value.WhichOneof("value") == "string_value" and value.string_value:
                    unit = value.string_value
                    break
        values = {**names, "metric": metric.name}
        equipment: str | None = route.equipment(values)
        parameter: str | None = route.parameter(values)
        if equipment is not None and (len(equipment) > MAX_EQUIPMENT_LENGTH or (
                self._known_equipment is not None and equipment not in self._known_equipment)):
            self._skip("unknown_equipment", equipment=equipment[:60], metric=metric.name[:100])
            equipment = None
        if parameter is not None and len(parameter) > MAX_PARAMETER_LENGTH:
            self._skip("bad_parameter", metric=metric.name[:100])
            parameter = None
        if unit is not None and (len(unit) > MAX_UNIT_LENGTH or (
                self._known_units is not None and unit not in self._known_units)):
            self._skip("unknown_unit", unit=unit[:30], metric=metric.name[:100])
            equipment = None
        datatype = metric.datatype if metric.HasField("datatype") else 0
        return MetricDef(metric.name, datatype, unit, equipment, parameter)

    def _data(self, node: EdgeNode, owner: Owner, device: str | None, payload: Any, route: SparkplugRoute,
              stamp: int) -> list[Reading]:
        readings: list[Reading] = []
        unknown = False
        for metric in payload.metrics:
            if metric.HasField("alias"):
                definition = owner.by_alias.get(metric.alias)
            else:
                definition = owner.by_name.get(metric.name)
            if definition is None:
                if metric.name == "bdSeq" or metric.name.startswith(("Node Control/", "Device Control/")):
                    continue
                self._skip("unknown_alias" if metric.HasField("alias") else "unknown_metric",
                           node=node.node, device=device, alias=metric.alias, metric=metric.name[:100])
                unknown = True
                continue
            reading = self._value(definition, metric, stamp)
            if reading is not None:
                readings.append(reading)
        if unknown:
            self._ask_rebirth(node.group, node.node, node, "unknown_alias")
        return readings

    def _value(self, definition: MetricDef, metric: Any, stamp: int) -> Reading | None:
        if metric.is_null:
            return None
        which = metric.WhichOneof("value")
        if which is None:
            return None
        if which not in NUMERIC_VALUES:
            self._skip("not_a_number")
            return None
        raw = getattr(metric, which)
        # Int8..Int32 travel as two's complement in the uint32 int_value, Int64 in the uint64 long_value
        if definition.datatype in SIGNED:
            width = 32 if which == "int_value" else 64
            if which in ("int_value", "long_value") and raw >= 1 << (width - 1):
                raw -= 1 << width
        value = float(raw)
        if not math.isfinite(value):
            self._skip("not_finite")
            return None
        if metric.HasField("timestamp"):
            stamp = _millis_to_us(metric.timestamp, stamp)
        definition.last = value
        definition.last_us = stamp
        if definition.equipment is None or definition.parameter is None:
            return None
        return Reading(definition.equipment, definition.parameter, value, stamp, definition.unit)

    def _node_death(self, node: EdgeNode | None, payload: Any, stamp: int) -> list[Reading]:
        if node is None or not node.metrics.born:
            return []
        bd_seq = _bd_seq(payload)
        if bd_seq is not None and node.bd_seq is not None and bd_seq != node.bd_seq:
            self.stale_deaths += 1
            log.info("sparkplug NDEATH of an earlier session ignored", connector=self.connector, group=node.group,
                     edge_node=node.node, bd_seq=bd_seq, current_bd_seq=node.bd_seq)
            return []
        DEATHS.labels(self.connector, "NDEATH").inc()
        log.warning("sparkplug edge node died: its metrics are marked bad", connector=self.connector,
                    group=node.group, edge_node=node.node)
        readings = self._dark(node.metrics, stamp)
        for device in node.devices.values():
            if device.born:
                readings += self._dark(device, stamp)
        node.metrics.born = False
        for device in node.devices.values():
            device.born = False
        return readings

    def _dark(self, owner: Owner, stamp: int) -> list[Reading]:
        owner.born = False
        return [Reading(d.equipment, d.parameter, d.last, max(stamp, d.last_us), d.unit, Quality.BAD)
                for d in owner.by_name.values()
                if d.last is not None and d.equipment is not None and d.parameter is not None]

    # --- sequence numbers and rebirth -----------------------------------------------------------------------

    def _sequence(self, node: EdgeNode, payload: Any, kind: str) -> None:
        if not payload.HasField("seq"):
            raise Malformed("bad_sequence", f"{kind} from {node.node!r} has no seq")
        seq = payload.seq
        if seq > 255:
            raise Malformed("bad_sequence", f"{kind} from {node.node!r}: seq {seq} is not 0..255")
        expected = 0 if node.seq is None else (node.seq + 1) % 256
        node.seq = seq
        if seq != expected:
            log.info("sparkplug sequence gap", connector=self.connector, group=node.group, edge_node=node.node,
                     expected=expected, received=seq)
            self._ask_rebirth(node.group, node.node, node, "sequence_gap")

    def _ask_rebirth(self, group: str, node_id: str, node: EdgeNode | None, cause: str) -> None:
        if not self.config.request_rebirth:
            return
        if node is None:
            node = self.nodes[(group, node_id)] = EdgeNode(group, node_id)
        now = self._clock()
        if now - node.last_rebirth_request < self.config.rebirth_interval:
            return
        node.last_rebirth_request = now
        self.publish(f"{SPARKPLUG_NAMESPACE}/{group}/NCMD/{node_id}", rebirth_request())
        self.rebirths[cause] += 1
        REBIRTH_REQUESTS.labels(self.connector, cause).inc()
        log.info("sparkplug rebirth requested", connector=self.connector, group=group, edge_node=node_id,
                 cause=cause)

    # --- STATE of host applications ---------------------------------------------------------------------------

    def _state(self, parts: list[str], body: bytes) -> None:
        if len(parts) != 3 or not parts[2]:
            raise Malformed("bad_topic", f"a STATE topic is {SPARKPLUG_NAMESPACE}/STATE/HOST_ID")
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            raise Malformed("bad_state", "a STATE payload is JSON {\"online\": bool, \"timestamp\": ms}") from None
        if not isinstance(document, dict) or not isinstance(document.get("online"), bool):
            raise Malformed("bad_state", "a STATE payload is JSON {\"online\": bool, \"timestamp\": ms}")
        online = document["online"]
        host = parts[2]
        if self.hosts.get(host) != online:
            log.info("sparkplug host application state", connector=self.connector, host_id=host, online=online)
        self.hosts[host] = online

    def _skip(self, reason: str, **context: Any) -> None:
        self.skipped[reason] += 1
        METRICS_SKIPPED.labels(self.connector, reason).inc()
        if self.skipped[reason] == 1 or context:
            log.debug("sparkplug metric skipped", connector=self.connector, reason=reason, **context)


def rebirth_request() -> bytes:
    """The NCMD payload asking an edge node to publish its births again."""
    payload = Payload(timestamp=time.time_ns() // 1_000_000)
    metric = payload.metrics.add()
    metric.name = REBIRTH_METRIC
    metric.datatype = BOOLEAN
    metric.boolean_value = True
    return bytes(payload.SerializeToString())


def state_payload(online: bool, timestamp_ms: int) -> bytes:
    """A Sparkplug 3.0 STATE body."""
    return json.dumps({"online": online, "timestamp": timestamp_ms}, separators=(",", ":")).encode()


def _bd_seq(payload: Any) -> int | None:
    for metric in payload.metrics:
        if metric.name == "bdSeq" and metric.WhichOneof("value") in ("long_value", "int_value"):
            return int(getattr(metric, metric.WhichOneof("value")))
    return None


def _millis_to_us(millis: int, fallback: int) -> int:
    """Sparkplug timestamps are ms since the epoch; one outside 1970..2200 is replaced by ``fallback``."""
    if 0 < millis < 7_258_118_400_000:
        return millis * 1000
    return fallback
