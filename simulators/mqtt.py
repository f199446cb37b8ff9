"""An MQTT sensor publisher: the shared machine model (simulators/machine.py) on a broker, at a set rate.

``python -m simulators.mqtt --sparkplug`` runs a Sparkplug B edge node instead (simulators/sparkplug.py).

``python -m simulators.mqtt`` publishes three presses (PRESS-01…) to 127.0.0.1:1883, 24 messages a second
(every parameter of every machine once a second), as JSON on ``plant/PLANT-1/<machine>/<parameter>``;
``config/mqtt-simulator.yaml`` ingests exactly that.  Formats (``--format``):

* ``json``   ``plant/PLANT-1/PRESS-01/temperature``  ``{"value": 63.1, "timestamp": "…", "unit": "degC"}``
* ``number`` ``plant/PLANT-1/PRESS-01/temperature``  ``63.1``
* ``array``  ``plant/PLANT-1/PRESS-01``  ``{"timestamp": "…", "readings": [{"parameter": "temperature",
  "value": 63.1, "unit": "degC"}, …]}`` (one message carries every parameter of one machine)

Timestamps (``--timestamp``) are ISO 8601 with microseconds by default, or epoch s/ms/µs, or none; they
strictly increase from message to message (ISO, seconds and µs), so every published reading is distinct.
``--rate 0`` publishes as fast as the broker takes it (QoS 1/2 at most ``--window`` unacknowledged);
``--count N`` stops after N messages.  One Python process publishes roughly 5,000-15,000 messages/s
(bare numbers and QoS 0 are cheapest); ``--processes N`` splits the machines and the rate over N processes
for tens of thousands.  ``--trace FILE --speed X`` replays a recorded trace (see
simulators/trace.py) instead of the live model.

One thread owns the paho client and drives its network loop itself (``loop_read``/``loop_write`` between
bursts of publishes), which is about twice as fast as paho's own network thread; it reconnects when the
broker restarts, and QoS 1/2 messages not acknowledged by then are sent again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from simulators.machine import PARAMETERS, UNITS, Machine, default_machines
from simulators.trace import load_trace, replay

FORMATS = ("json", "number", "array")
TIMESTAMPS = ("iso", "epoch_s", "epoch_ms", "epoch_us", "none")
DEFAULT_PREFIX = "plant/PLANT-1"


class MqttSimulator:
    """Publishes machine values on a broker from a background thread; ``start()`` / ``stop()``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883, *, rate: float = 24.0,
                 machines: list[Machine] | None = None, payload_format: str = "json", qos: int = 1,
                 prefix: str = DEFAULT_PREFIX, protocol: str = "5", timestamp: str = "iso",
                 count: int | None = None, client_id: str | None = None, window: int = 2000,
                 username: str | None = None, password: str | None = None, tls_ca: str | None = None,
                 trace: str | None = None, speed: float = 1.0, loop_trace: bool = False,
                 retain: bool = False) -> None:
        if payload_format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}")
        if timestamp not in TIMESTAMPS:
            raise ValueError(f"timestamp must be one of {', '.join(TIMESTAMPS)}")
        self.host, self.port = host, port
        self.rate = rate
        self.machines = machines if machines is not None else default_machines(3)
        self.format = payload_format
        self.qos = qos
        self.prefix = prefix.rstrip("/")
        self.timestamp = timestamp
        self.count = count
        self.window = max(1, window if qos < 2 else min(window, 20))
        self.trace = trace
        self.speed = speed
        self.loop_trace = loop_trace
        self.retain = retain
        self.published = 0      # publish() calls made
        self.acknowledged = 0   # PUBACK/PUBCOMP received (QoS 0: written to the socket)
        self.finished = threading.Event()
        self._stop = threading.Event()
        self._last_us = 0
        self._thread: threading.Thread | None = None
        version = mqtt.MQTTv5 if str(protocol) in ("5", "5.0") else mqtt.MQTTv311
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or "", protocol=version)
        self.client.max_inflight_messages_set(self.window)
        self.client.max_queued_messages_set(0)
        self.connected = threading.Event()
        if username is not None:
            self.client.username_pw_set(username, password)
        if tls_ca is not None:
            self.client.tls_set(ca_certs=tls_ca)
        self.client.on_publish = self._on_publish
        self.client.on_connect = self._on_connect

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        # paho does not honour the broker's Receive Maximum (mosquitto: 20 in-flight incoming QoS 2
        # messages; beyond it the broker refuses them): never have more unacknowledged than it allows
        limit = getattr(properties, "ReceiveMaximum", None) if properties is not None else None
        if self.qos == 2:
            limit = min(limit or 20, 20)
        if limit:
            self.window = min(self.window, int(limit))   # _publish waits on this window

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        self.acknowledged += 1

    # --- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> MqttSimulator:
        """Start publishing in a thread (the broker may come later: the thread keeps trying to connect)."""
        self._thread = threading.Thread(target=self._publish_loop, name="mqtt-simulator", daemon=True)
        self._thread.start()
        return self

    def stop(self, flush_timeout: float = 5.0) -> None:
        """Stop publishing, wait up to ``flush_timeout`` for outstanding acknowledgments, disconnect."""
        self._flush_timeout = flush_timeout
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=flush_timeout + 10)

    # --- the network loop, driven by the publishing thread ---------------------------------------------------

    _flush_timeout = 5.0

    def _service(self, timeout: float = 0.0) -> None:
        """Read acknowledgments, write what is queued, keep alive; reconnect when the link is gone."""
        client = self.client
        sock = client.socket()
        if sock is None or (not client.is_connected() and self.connected.is_set()):
            self._reconnect()
            return
        try:
            readable, writable, _ = select.select([sock], [sock] if client.want_write() else [], [], timeout)
        except (OSError, ValueError):
            readable, writable = [], []
        if readable:
            client.loop_read()
        if writable and client.socket() is not None:
            client.loop_write()
        if client.socket() is not None:
            client.loop_misc()

    def _reconnect(self) -> None:
        self.connected.clear()
        while not self._stop.is_set():
            try:
                self.client.reconnect() if self._ever_connected else self.client.connect(
                    self.host, self.port, keepalive=30)
                self._ever_connected = True
                deadline = time.monotonic() + 5
                while not self.client.is_connected() and self.client.socket() is not None \
                        and time.monotonic() < deadline:
                    self._service_once(0.05)
                if self.client.is_connected():
                    self.connected.set()
                    return
            except OSError:
                pass
            time.sleep(0.5)

    _ever_connected = False

    def _service_once(self, timeout: float) -> None:
        sock = self.client.socket()
        if sock is None:
            return
        readable, _, _ = select.select([sock], [], [], timeout)
        if readable:
            self.client.loop_read()
        if self.client.socket() is not None and self.client.want_write():
            self.client.loop_write()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until ``count`` messages are published (and, for QoS 1/2, acknowledged by the broker)."""
        if not self.finished.wait(timeout):
            return False
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.qos or self.acknowledged >= self.published

    # --- what gets published -----------------------------------------------------------------------------

    def _stamp(self) -> Any:
        stamp = max(time.time_ns() // 1000, self._last_us + 1)
        self._last_us = stamp
        if self.timestamp == "iso":
            return datetime.fromtimestamp(stamp // 1_000_000, UTC).replace(
                microsecond=stamp % 1_000_000).isoformat().replace("+00:00", "Z")
        if self.timestamp == "epoch_s":
            return stamp / 1e6
        if self.timestamp == "epoch_ms":
            return stamp // 1000
        if self.timestamp == "epoch_us":
            return stamp
        return None

    def message(self, machine: Machine, parameter: str | None) -> tuple[str, bytes]:
        """The topic and payload for one parameter of a machine (array format: every parameter)."""
        values = machine.values()
        if self.format == "array":
            names = PARAMETERS if parameter is None else (parameter,)
            readings = []
            for name in names:
                item: dict[str, Any] = {"parameter": name, "value": values[name]}
                if UNITS[name]:
                    item["unit"] = UNITS[name]
                readings.append(item)
            body: dict[str, Any] = {"readings": readings}
            stamp = self._stamp()
            if stamp is not None:
                body["timestamp"] = stamp
            return f"{self.prefix}/{machine.code}", json.dumps(body, separators=(",", ":")).encode()
        assert parameter is not None
        topic = f"{self.prefix}/{machine.code}/{parameter}"
        if self.format == "number":
            return topic, repr(values[parameter]).encode()
        body = {"value": values[parameter]}
        stamp = self._stamp()
        if stamp is not None:
            body["timestamp"] = stamp
        if UNITS[parameter]:
            body["unit"] = UNITS[parameter]
        return topic, json.dumps(body, separators=(",", ":")).encode()

    def _schedule(self) -> Iterator[tuple[Machine, str | None]]:
        """Round robin: every parameter of every machine (array: every machine), forever."""
        while True:
            for machine in self.machines:
                if self.format == "array":
                    yield machine, None
                else:
                    for parameter in PARAMETERS:
                        yield machine, parameter

    def _publish(self, topic: str, payload: bytes) -> None:
        while not self.connected.is_set() or (
                self.qos and self.published - self.acknowledged >= self.window):
            if self._stop.is_set():
                return
            self._service(0.01)  # not connected, or the window is full: wait for acknowledgments
        self.client.publish(topic, payload, qos=self.qos, retain=self.retain)
        self.published += 1
        if self.published % 64 == 0:
            self._service()
        if self.count is not None and self.published >= self.count:
            self.finished.set()
            self._stop.set()

    def _publish_loop(self) -> None:
        try:
            self._reconnect()
            if self.trace:
                asyncio.run(self._replay_trace())
            else:
                self._publish_live()
        finally:
            self.finished.set()
            deadline = time.monotonic() + self._flush_timeout
            while self.qos and self.acknowledged < self.published and time.monotonic() < deadline:
                self._service(0.01)
            if self.client.socket() is not None:
                self.client.disconnect()
                self._service_once(0)

    def _publish_live(self) -> None:
        schedule = self._schedule()
        started = last = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            for machine in self.machines:
                machine.advance(now - last)
            last = now
            due = (self.count or 1_000_000_000) if self.rate <= 0 else int((now - started) * self.rate) + 1
            burst = min(due - self.published, 1000)
            for _ in range(max(0, burst)):
                if self._stop.is_set():
                    break
                self._publish(*self.message(*next(schedule)))
            if self.rate > 0 and burst <= 0:
                self._service(min(0.005, 1 / self.rate))

    async def _replay_trace(self) -> None:
        assert self.trace is not None
        points = load_trace(self.trace)
        machines = {m.code: m for m in self.machines}

        async def keep_serving() -> None:  # acknowledgments and keepalive while replay sleeps
            while True:
                self._service()
                await asyncio.sleep(0.05)

        serving = asyncio.create_task(keep_serving())
        try:
            async for point in replay(points, self.speed, loop_forever=self.loop_trace):
                if self._stop.is_set():
                    return
                machine = machines.get(point.machine)
                if machine is None:
                    machine = machines[point.machine] = Machine(point.machine)
                machine.set_value(point.parameter, point.value)
                self._publish(*self.message(machine, point.parameter))
        finally:
            serving.cancel()


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m simulators.mqtt", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--rate", type=float, default=24.0, help="messages per second (0: as fast as possible)")
    parser.add_argument("--machines", type=int, default=3, help="PRESS-01, PRESS-02, …")
    parser.add_argument("--first-machine", type=int, default=1, metavar="N",
                        help="number the machines from PRESS-N (several publishers on one broker)")
    parser.add_argument("--format", choices=FORMATS, default="json")
    parser.add_argument("--qos", type=int, choices=(0, 1, 2), default=1)
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help="topic prefix (default %(default)s)")
    parser.add_argument("--protocol", choices=("5", "3.1.1"), default="5")
    parser.add_argument("--timestamp", choices=TIMESTAMPS, default="iso")
    parser.add_argument("--count", type=int, help="stop after this many messages")
    parser.add_argument("--window", type=int, default=2000, help="most unacknowledged QoS 1/2 messages")
    parser.add_argument("--client-id")
    parser.add_argument("--username")
    parser.add_argument("--password-env", help="environment variable holding the password")
    parser.add_argument("--tls-ca", help="CA file: connect with TLS")
    parser.add_argument("--retain", action="store_true", help="publish retained messages")
    parser.add_argument("--trace", help="replay a trace file (CSV or JSON lines) instead of the live model")
    parser.add_argument("--speed", type=float, default=1.0, help="trace replay speed factor")
    parser.add_argument("--loop", action="store_true", help="replay the trace again and again")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--processes", type=int, default=1,
                        help="publish from this many processes (machines and rate split between them); one "
                             "Python process tops out around 5,000-15,000 messages/s")
    parser.add_argument("--shard", default="0/1", help=argparse.SUPPRESS)
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--sparkplug", action="store_true",
                        help="run a Sparkplug B edge node instead (simulators/sparkplug.py): one device per machine")
    parser.add_argument("--group", default="PLANT-1", help="Sparkplug group id (default %(default)s)")
    parser.add_argument("--edge-node", default="EDGE-1", help="Sparkplug edge node id (default %(default)s)")
    return parser.parse_args(argv)


def _fan_out(args: argparse.Namespace, argv: list[str]) -> int:
    """Run ``--processes`` copies, each publishing its share of the machines, rate and count."""
    children = []
    for index in range(args.processes):
        share = [*argv, "--processes", "1", "--shard", f"{index}/{args.processes}", "--quiet"]
        if args.count is not None:
            share += ["--count", str(args.count // args.processes + (index < args.count % args.processes))]
        children.append(subprocess.Popen([sys.executable, "-m", "simulators.mqtt", *share]))
    try:
        return max(child.wait() for child in children)
    except KeyboardInterrupt:
        for child in children:
            child.send_signal(signal.SIGINT)
        return max(child.wait() for child in children)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _arguments(argv)
    if args.sparkplug:
        from simulators.sparkplug import run

        stopped = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stopped.set())
        rate = 1.0 if args.rate == 24.0 else args.rate  # --rate: DDATA per device per second here
        return run(args.host, args.port, args.group, args.edge_node, args.machines, rate, args.seed, stopped)
    if args.processes > 1:
        if args.trace:
            raise SystemExit("--processes does not apply to --trace")
        if args.machines < args.processes:
            raise SystemExit("--processes needs at least as many --machines")
        return _fan_out(args, argv)
    index, _, count = args.shard.partition("/")
    shard, shards = int(index), int(count)
    machines = default_machines(args.machines, seed=args.seed, first=args.first_machine)[shard::shards]
    rate = args.rate / shards
    password = os.environ.get(args.password_env) if args.password_env else None
    simulator = MqttSimulator(
        args.host, args.port, rate=rate, machines=machines,
        payload_format=args.format, qos=args.qos, prefix=args.prefix, protocol=args.protocol,
        timestamp=args.timestamp, count=args.count, client_id=args.client_id, window=args.window,
        username=args.username, password=password, tls_ca=args.tls_ca, trace=args.trace, speed=args.speed,
        loop_trace=args.loop, retain=args.retain)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    started = time.monotonic()
    simulator.start()
    print(f"publishing to {args.host}:{args.port} as {args.format} on {simulator.prefix}/…, "
          f"{'as fast as possible' if args.rate <= 0 else f'{args.rate:g} messages/s'} (Ctrl-C stops)",
          file=sys.stderr)
    last_report = started
    while not stop.is_set() and not simulator.finished.is_set():
        stop.wait(0.2)
        if not args.quiet and time.monotonic() - last_report >= 5:
            last_report = time.monotonic()
            print(f"published {simulator.published}, acknowledged {simulator.acknowledged}", file=sys.stderr)
    if simulator.finished.is_set() and not stop.is_set():
        simulator.wait(timeout=30)
    simulator.stop()
    elapsed = time.monotonic() - started
    print(f"published {simulator.published} messages in {elapsed:.1f} s "
          f"({simulator.published / elapsed if elapsed else 0:.0f}/s), acknowledged {simulator.acknowledged}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
