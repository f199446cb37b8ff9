"""A Sparkplug B edge node: the shared machine model as devices of one node, births, data by alias, rebirths.

``python -m simulators.mqtt --sparkplug`` runs it: edge node ``EDGE-1`` in group ``PLANT-1`` with one device
per machine (PRESS-01…), each with every parameter of simulators/machine.py as a Double metric with an
alias and an ``engUnit`` property.  ``config/mqtt-sparkplug.yaml`` ingests exactly that.

The node does what Sparkplug 3.0 asks of an edge node: its will is an NDEATH carrying ``bdSeq``; on connect
it publishes NBIRTH (seq 0, ``bdSeq``, ``Node Control/Rebirth``) and a DBIRTH per device, then DDATA by alias
only, ``seq`` counting 0..255 and wrapping; an NCMD ``Node Control/Rebirth`` = true makes it publish its births
again.  For tests it can :meth:`die` (the connection drops, the broker sends the will), :meth:`come_back`
(next ``bdSeq``, optionally new aliases), :meth:`skip_sequence` (lose a message) and publish on demand
(``rate=0``).  It shares no code with the connector: its protobuf module is its own copy of the generated
Eclipse Tahu definition.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from simulators import sparkplug_b_pb2 as pb
from simulators.machine import PARAMETERS, UNITS, Machine, default_machines

NAMESPACE = "spBv1.0"
DOUBLE, BOOLEAN, INT64 = 10, 11, 4
Payload: Any = vars(pb)["Payload"]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class SparkplugEdgeNode:
    """One edge node on a broker; ``start()`` / ``stop()``; thread-safe publishing under one lock."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883, *, group: str = "PLANT-1",
                 node: str = "EDGE-1", machines: list[Machine] | None = None, rate: float = 1.0,
                 alias_base: int = 1, client_id: str | None = None) -> None:
        self.host, self.port = host, port
        self.group, self.node = group, node
        self.machines = machines if machines is not None else default_machines(3)
        self.rate = rate
        self.alias_base = alias_base
        self.client_id = client_id or f"sparkplug-{group}-{node}"
        self.bd_seq = 0
        self.seq = 0
        self.rebirths_answered = 0
        self.births = 0
        self.published = 0
        self._lock = threading.RLock()
        self._client: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = threading.Event()

    # --- topics and aliases ----------------------------------------------------------------------------------

    def topic(self, kind: str, device: str | None = None) -> str:
        return f"{NAMESPACE}/{self.group}/{kind}/{self.node}" + (f"/{device}" if device else "")

    def alias(self, machine_index: int, parameter_index: int) -> int:
        return self.alias_base + machine_index * len(PARAMETERS) + parameter_index

    # --- lifecycle ---------------------------------------------------------------------------------------------

    def start(self) -> SparkplugEdgeNode:
        self._connect()
        if self.rate > 0:
            self._thread = threading.Thread(target=self._run, name="sparkplug-edge-node", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """A graceful end: publish the NDEATH ourselves (the broker does not send a will then), disconnect."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        with self._lock:  # never held while joining paho's thread: its callbacks take it
            client, self._client = self._client, None
            self.connected.clear()
        if client is not None:
            info = client.publish(self.topic("NDEATH"), self._death(), qos=1)
            info.wait_for_publish(5)
            client.disconnect()
            client.loop_stop()

    def die(self) -> None:
        """Drop the connection without DISCONNECT: the broker publishes the NDEATH will."""
        with self._lock:
            client, self._client = self._client, None
            self.connected.clear()
        if client is not None:
            client.loop_stop()
            sock = client.socket()
            if sock is not None:
                sock.close()

    def come_back(self, alias_base: int | None = None) -> None:
        """Connect again as a new session (next bdSeq), optionally with different aliases, and birth."""
        with self._lock:
            if alias_base is not None:
                self.alias_base = alias_base
            self.bd_seq = (self.bd_seq + 1) % 256
        self._connect()

    def _connect(self) -> None:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv311,
                             clean_session=True)
        client.will_set(self.topic("NDEATH"), self._death(), qos=1, retain=False)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        with self._lock:
            self._client = client
        client.connect(self.host, self.port, keepalive=5)
        client.loop_start()
        if not self.connected.wait(10):
            raise ConnectionError(f"the edge node could not connect to {self.host}:{self.port}")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            return
        client.subscribe(self.topic("NCMD"), qos=1)
        self.birth(client)
        self.connected.set()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        try:
            payload = Payload.FromString(message.payload)
        except Exception:
            return
        for metric in payload.metrics:
            if metric.name == "Node Control/Rebirth" and metric.boolean_value:
                self.rebirths_answered += 1
                self.birth(client)

    # --- messages ----------------------------------------------------------------------------------------------

    def _death(self) -> bytes:
        payload = Payload(timestamp=now_ms())
        metric = payload.metrics.add(name="bdSeq", datatype=INT64)
        metric.long_value = self.bd_seq
        return bytes(payload.SerializeToString())

    def _next_seq(self) -> int:
        seq = self.seq
        self.seq = (self.seq + 1) % 256
        return seq

    def birth(self, client: Any = None) -> None:
        """NBIRTH (seq 0) and one DBIRTH per device, with current values."""
        with self._lock:
            client = client or self._client
            stamp = now_ms()
            self.seq = 0
            node = Payload(timestamp=stamp, seq=self._next_seq())
            metric = node.metrics.add(name="bdSeq", datatype=INT64, timestamp=stamp)
            metric.long_value = self.bd_seq
            metric = node.metrics.add(name="Node Control/Rebirth", datatype=BOOLEAN, timestamp=stamp)
            metric.boolean_value = False
            client.publish(self.topic("NBIRTH"), node.SerializeToString(), qos=0)
            for index, machine in enumerate(self.machines):
                values = machine.values()
                device = Payload(timestamp=stamp, seq=self._next_seq())
                for p_index, parameter in enumerate(PARAMETERS):
                    metric = device.metrics.add(name=parameter, alias=self.alias(index, p_index),
                                                datatype=DOUBLE, timestamp=stamp)
                    metric.double_value = values[parameter]
                    unit = UNITS.get(parameter)
                    if unit:
                        metric.properties.keys.append("engUnit")
                        metric.properties.values.add(type=12, string_value=unit)
                client.publish(self.topic("DBIRTH", machine.code), device.SerializeToString(), qos=0)
            self.births += 1
            self.published += 1 + len(self.machines)

    def publish_data(self, values: dict[str, dict[str, float]] | None = None) -> None:
        """One DDATA per device, every metric by alias only; ``values`` (machine code -> parameter -> value)
        overrides the model's values."""
        with self._lock:
            client = self._client
            if client is None:
                return
            stamp = now_ms()
            for index, machine in enumerate(self.machines):
                current = machine.values()
                if values is not None:
                    current = values.get(machine.code, {})
                    if not current:
                        continue
                device = Payload(timestamp=stamp, seq=self._next_seq())
                for p_index, parameter in enumerate(PARAMETERS):
                    if parameter in current:
                        metric = device.metrics.add(alias=self.alias(index, p_index), datatype=DOUBLE,
                                                    timestamp=stamp)
                        metric.double_value = current[parameter]
                client.publish(self.topic("DDATA", machine.code), device.SerializeToString(), qos=0)
                self.published += 1

    def skip_sequence(self) -> None:
        """Lose one message: the next one's seq jumps by two."""
        with self._lock:
            self._next_seq()

    def _run(self) -> None:
        period = 1.0 / self.rate
        next_at = time.monotonic()
        while not self._stop.is_set():
            next_at += period
            self._stop.wait(max(0.0, next_at - time.monotonic()))
            for machine in self.machines:
                machine.advance(period)
            if self.connected.is_set():
                self.publish_data()


def run(host: str, port: int, group: str, node: str, machines: int, rate: float, seed: int,
        stop: threading.Event) -> int:
    """``python -m simulators.mqtt --sparkplug``: run until ``stop`` is set."""
    import sys

    edge = SparkplugEdgeNode(host, port, group=group, node=node, rate=rate,
                             machines=default_machines(machines, seed=seed)).start()
    print(f"sparkplug edge node {group}/{node} on {host}:{port}: {len(edge.machines)} devices, "
          f"{rate:g} DDATA per device per second (Ctrl-C stops)", file=sys.stderr)
    while not stop.wait(1.0):
        pass
    edge.stop()
    print(f"published {edge.published} messages, answered {edge.rebirths_answered} rebirth requests",
          file=sys.stderr)
    return 0
