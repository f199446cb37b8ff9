"""Measure MQTT ingestion: messages per second from the broker to committed rows, against the broker's ceiling.

Not part of the test suite.  Run it by hand (needs TimescaleDB on 127.0.0.1:5433, or ``--dsn``)::

    .venv/bin/python tests/bench/mqtt_throughput.py                 # 100,000 messages, QoS 1, JSON
    .venv/bin/python tests/bench/mqtt_throughput.py --messages 50000 --protocols 5 3.1.1 --live

Every consumer is measured the same way, on a private Mosquitto (unlimited queue) with the same messages:

* **backlog**: the consumer's persistent session exists, N messages are published while it is away (the
  broker queues them), then the consumer connects and we time until it has them all: counted (baseline
  subscribers) or committed to ``fact_sensor_event`` (the daemon).  This is the sustained rate the consumer
  can drain, independent of how fast a Python publisher can publish.
* **live** (``--live``): the simulator publishes as fast as it can while the consumer runs; the time is from
  the first publish to the last message counted / row committed.  Here the publisher is often the limit.

Consumers:

1. ``paho counter``: plain paho-mqtt (``loop_start``, automatic acks) that only counts: the broker's ceiling
   for a Python client.
2. ``connector, counting sink``: our MqttConnector with a sink that counts and acknowledges at once (the
   connector's own cost: parsing to readings, in-order manual acks).
3. ``daemon to TimescaleDB``: the real Daemon (connector → queue → batches → binary COPY → commit → acks).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from connectors.mqtt.config import MqttConfig  # noqa: E402
from ingestor.config import load_config  # noqa: E402
from ingestor.contract import Reading  # noqa: E402
from ingestor.daemon.runtime import Daemon  # noqa: E402
from ingestor.service.logs import LoggingConfig, configure_logging  # noqa: E402
from tests.harness_mqtt import PrivateBroker  # noqa: E402
from tests.helpers import build_connector  # noqa: E402

PREFIX = "bench/PLANT-1"
BROKER_EXTRA = "max_queued_messages 0\nmax_queued_bytes 0\n"

DAEMON_CONFIG = """
instance_id: bench-mqtt
database: {{url: "{dsn}", refresh: {{view_oee_daily: 0, view_reliability_summary: 0, sensor_5min_avg: 0}}}}
plant:
  sites:
    - code: PLANT-1
      name: Plant
      areas:
        - code: A
          name: Area
          work_centers:
            - code: W
              name: Line
              equipment:
{equipment}
connectors:
  - type: mqtt
    name: bench
    port: {port}
    protocol: "{protocol}"
    client_id: {client_id}
    receive_maximum: {receive_maximum}
    subscriptions:
      - topic: {prefix}/{{equipment}}/{{parameter}}
        qos: {qos}
pipeline: {{batch_rows: {batch_rows}, batch_age: {batch_age}, queue_size: 200000, spool_dir: "{spool}"}}
http: {{enabled: false}}
logging: {{level: warning}}
"""


def publish(port: int, messages: int, qos: int, machines: int = 10) -> float:
    """Publish with the simulator in its own process, as fast as the broker takes it; returns msgs/s."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "simulators.mqtt", "--port", str(port), "--rate", "0", "--count", str(messages),
         "--qos", str(qos), "--prefix", PREFIX, "--machines", str(machines), "--timestamp", "epoch_us",
         "--quiet"], cwd=REPO, capture_output=True, text=True, check=True)
    elapsed = time.monotonic() - started
    if "acknowledged" not in result.stderr:
        raise RuntimeError(result.stderr)
    return messages / elapsed


def start_publisher(port: int, messages: int, qos: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "simulators.mqtt", "--port", str(port), "--rate", "0", "--count", str(messages),
         "--qos", str(qos), "--prefix", PREFIX, "--machines", "10", "--timestamp", "epoch_us", "--quiet"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# --- consumer 1: plain paho, counting --------------------------------------------------------------------------

class PahoCounter:
    def __init__(self, port: int, protocol: str, qos: int, client_id: str) -> None:
        self.port, self.qos = port, qos
        self.count = 0
        self.done = threading.Event()
        self.target = 0
        version = mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311
        kwargs: dict[str, Any] = {} if version == mqtt.MQTTv5 else {"clean_session": False}
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=version, **kwargs)
        self.client.on_message = self._on_message
        self.version = version

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        self.count += 1
        if self.count >= self.target:
            self.done.set()

    def connect(self) -> None:
        if self.version == mqtt.MQTTv5:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = 3600
            properties.ReceiveMaximum = 10000
            self.client.connect("127.0.0.1", self.port, clean_start=False, properties=properties)
        else:
            self.client.connect("127.0.0.1", self.port)
        self.client.subscribe(PREFIX + "/+/+", self.qos)
        self.client.loop_start()

    def disconnect(self) -> None:
        time.sleep(0.3)
        self.client.disconnect()
        self.client.loop_stop()


def paho_counter(port: int, protocol: str, qos: int, messages: int, live: bool) -> float:
    counter = PahoCounter(port, protocol, qos, f"bench-paho-{uuid.uuid4().hex[:6]}")
    counter.connect()
    counter.disconnect()                        # the session (and subscription) stays on the broker
    counter.target = messages
    if live:
        counter.connect()
        started = time.monotonic()
        publisher = start_publisher(port, messages, qos)
    else:
        publish(port, messages, qos)
        started = time.monotonic()
        counter.connect()
    if not counter.done.wait(600):
        raise RuntimeError(f"paho counter got {counter.count} of {messages}")
    elapsed = time.monotonic() - started
    counter.disconnect()
    if live:
        publisher.wait()
    return messages / elapsed


# --- consumer 2: our connector, counting sink ---------------------------------------------------------------

class CountingSink:
    def __init__(self) -> None:
        self.count = 0

    async def put(self, readings: Sequence[Reading], on_durable: Callable[[], None] | None = None) -> None:
        self.count += len(readings)
        if on_durable is not None:
            on_durable()


async def connector_counter(port: int, protocol: str, qos: int, messages: int, live: bool,
                            receive_maximum: int) -> float:
    config = MqttConfig.model_validate({
        "type": "mqtt", "name": "bench", "port": port, "protocol": protocol, "receive_maximum": receive_maximum,
        "client_id": f"bench-connector-{uuid.uuid4().hex[:6]}",
        "subscriptions": [{"topic": PREFIX + "/{equipment}/{parameter}", "qos": qos}]})
    first = build_connector(config)
    await first.connect()
    await first.close()
    connector = build_connector(config)
    sink = CountingSink()
    publisher = None
    if live:
        await connector.connect()
        started = time.monotonic()
        publisher = start_publisher(port, messages, qos)
    else:
        await asyncio.to_thread(publish, port, messages, qos)
        started = time.monotonic()
        await connector.connect()
    task = asyncio.create_task(connector.run(sink))
    while sink.count < messages:
        await asyncio.sleep(0.01)
        if task.done():
            task.result()
    elapsed = time.monotonic() - started
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await connector.close()
    if publisher is not None:
        await asyncio.to_thread(publisher.wait)
    return messages / elapsed


# --- consumer 3: the daemon into TimescaleDB -------------------------------------------------------------------

async def rows(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM fact_sensor_event"))
    except asyncpg.UndefinedTableError:
        return 0
    finally:
        await conn.close()


async def daemon_to_database(port: int, protocol: str, qos: int, messages: int, live: bool, server_dsn: str,
                             receive_maximum: int, batch_rows: int, batch_age: str, tmp: Path) -> float:
    name = f"bench_mqtt_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    dsn = server_dsn.rsplit("/", 1)[0] + "/" + name
    equipment = "\n".join(f"                - {{code: PRESS-{i:02d}, name: Press {i}}}" for i in range(1, 11))
    path = tmp / f"{name}.yaml"
    path.write_text(DAEMON_CONFIG.format(
        dsn=dsn, equipment=equipment, port=port, protocol=protocol, client_id=f"bench-daemon-{name}",
        receive_maximum=receive_maximum, prefix=PREFIX, qos=qos, batch_rows=batch_rows, batch_age=batch_age,
        spool=tmp / f"{name}-spool"))
    try:
        config = load_config(path, environ={})
        warmup = Daemon(config, url=dsn)      # creates the schema and the broker session, then stops
        serving = asyncio.create_task(warmup.serve())
        while not warmup.schema_ready.is_set() or warmup.supervisors[0].state != "connected":
            await asyncio.sleep(0.05)
        warmup.stop()
        await serving
        publisher = None
        if live:
            daemon = Daemon(config, url=dsn)
            serving = asyncio.create_task(daemon.serve())
            while daemon.supervisors[0].state != "connected":
                await asyncio.sleep(0.01)
            started = time.monotonic()
            publisher = start_publisher(port, messages, qos)
        else:
            await asyncio.to_thread(publish, port, messages, qos)
            started = time.monotonic()
            daemon = Daemon(config, url=dsn)
            serving = asyncio.create_task(daemon.serve())
        while daemon.writer.written < messages:
            await asyncio.sleep(0.02)
            if serving.done():
                raise RuntimeError(f"daemon stopped: {serving.result()}")
        elapsed = time.monotonic() - started
        daemon.stop()
        await serving
        if publisher is not None:
            await asyncio.to_thread(publisher.wait)
        committed = await rows(dsn)
        if committed != messages:
            print(f"    note: {committed} rows for {messages} messages", file=sys.stderr)
        return messages / elapsed
    finally:
        admin = await asyncpg.connect(server_dsn)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


# --- driver --------------------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--qos", type=int, choices=(0, 1, 2), default=1)
    parser.add_argument("--protocols", nargs="+", default=["5"], choices=["5", "3.1.1"])
    parser.add_argument("--receive-maximum", type=int, default=10000)
    parser.add_argument("--batch-rows", type=int, default=5000)
    parser.add_argument("--batch-age", default="200ms")
    parser.add_argument("--live", action="store_true", help="also measure with the publisher running concurrently")
    parser.add_argument("--modes", nargs="+", choices=["backlog", "live"], help="instead of --live")
    parser.add_argument("--broker-extra", default=BROKER_EXTRA,
                        help="mosquitto settings (default: an unlimited queue; '' for mosquitto's defaults, "
                             "where 3.1.1 clients get max_inflight_messages 20 and backlogs beyond 1000 drop)")
    parser.add_argument("--dsn", default=os.environ.get("INGESTOR_TEST_TSDB_URL",
                                                        "postgresql://postgres@127.0.0.1:5433/postgres"))
    parser.add_argument("--consumers", nargs="+", default=["paho", "connector", "daemon"],
                        choices=["paho", "connector", "daemon"])
    args = parser.parse_args()
    configure_logging(LoggingConfig(level="warning"))
    broker = PrivateBroker(extra=args.broker_extra.replace("\\n", "\n"))
    broker.start()
    tmp = broker.directory
    results: list[tuple[str, str, str, float]] = []
    try:
        publish_rate = publish(broker.port, min(args.messages, 50_000), args.qos)
        print(f"simulator alone (as fast as possible, QoS {args.qos}): {publish_rate:,.0f} messages/s")
        modes = args.modes or (["backlog", "live"] if args.live else ["backlog"])
        for protocol in args.protocols:
            for mode in modes:
                live = mode == "live"
                for consumer in args.consumers:
                    if consumer == "paho":
                        rate = paho_counter(broker.port, protocol, args.qos, args.messages, live)
                        label = "paho counter (broker ceiling)"
                    elif consumer == "connector":
                        rate = asyncio.run(connector_counter(broker.port, protocol, args.qos, args.messages, live,
                                                             args.receive_maximum))
                        label = "connector, counting sink"
                    else:
                        rate = asyncio.run(daemon_to_database(
                            broker.port, protocol, args.qos, args.messages, live, args.dsn, args.receive_maximum,
                            args.batch_rows, args.batch_age, tmp))
                        label = "daemon to TimescaleDB (committed)"
                    results.append((protocol, mode, label, rate))
                    print(f"MQTT {protocol:5} {mode:7} {label:36} {rate:10,.0f} messages/s", flush=True)
    finally:
        broker.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
