"""MQTT intake at broker speed: the daemon's committed rows/s against a bare paho client on the same backlog.

Not part of the test suite.  Run it by hand (needs PostgreSQL on 127.0.0.1:5432, or ``--dsn``)::

    .venv/bin/python tests/bench/mqtt_throughput.py                       # 100,000 messages, MQTT 5 and 3.1.1
    .venv/bin/python tests/bench/mqtt_throughput.py --messages 50000 --protocols 5 --consumers daemon

The workload (issue 15): a private Mosquitto on a free port with an unlimited queue; for each consumer a
persistent session with its subscription is made first, then N QoS 1 JSON messages (one reading each, an ISO
8601 timestamp) are published while it is away, so the broker holds them all.  Then the consumer starts and
we time until the last message is counted (bare paho) or the last row is committed (the daemon).

Each consumer runs in its own process (this script with ``--child``), so its CPU-seconds and peak RSS are
its own.  The child prepares (schema, session), says ``ready``, the parent fills the session, says ``go``, the
child times itself and answers with one JSON line.

The pre-filler is a paho publisher that checks every ``publish()`` result and keeps at most ``WINDOW``
messages unacknowledged (paho refuses more than 65,535 in flight); it runs before the timed part, so its
speed does not matter.

Consumers:

* ``paho``: a bare paho subscriber (``loop_forever``, automatic acks) that only counts: the client ceiling.
* ``daemon``: the real Daemon (connector → queue → spool → binary COPY → commit → acks after durable).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.bench.common import admin, dsn_for  # noqa: E402

PREFIX = "bench/PLANT-1"
MACHINES = 10
PARAMETERS = ("temperature", "pressure", "speed", "current")
WINDOW = 1_000
BROKER_EXTRA = "max_queued_messages 0\nmax_queued_bytes 0\nmax_inflight_messages 0\n"


# --- pre-filling the session ------------------------------------------------------------------------------------

def prefill(port: int, messages: int) -> float:
    """Publish ``messages`` QoS 1 messages and wait for every PUBACK; returns messages/s."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-fill-{uuid.uuid4().hex[:6]}",
                         protocol=mqtt.MQTTv311)
    client.max_inflight_messages_set(WINDOW)
    client.max_queued_messages_set(0)
    window = threading.Semaphore(WINDOW)
    acked = [0]
    all_acked = threading.Event()

    def on_publish(client: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        acked[0] += 1
        window.release()
        if acked[0] >= messages:
            all_acked.set()

    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    started = time.monotonic()
    try:
        for n in range(messages):
            machine, parameter = n % MACHINES, PARAMETERS[(n // MACHINES) % len(PARAMETERS)]
            payload = json.dumps({"value": round(20 + (n % 997) * 0.01, 2),
                                  "timestamp": (start + timedelta(milliseconds=n)).isoformat()})
            window.acquire()
            info = client.publish(f"{PREFIX}/PRESS-{machine + 1:02d}/{parameter}", payload, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise RuntimeError(f"publish {n} refused: {mqtt.error_string(info.rc)}")
        if not all_acked.wait(300):
            raise RuntimeError(f"only {acked[0]} of {messages} publishes acknowledged")
    finally:
        client.disconnect()
        client.loop_stop()
    return messages / (time.monotonic() - started)


# --- the children (one consumer each) ----------------------------------------------------------------------------

def usage() -> tuple[float, int]:
    """CPU-seconds so far and peak RSS in kB of this process."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime, own.ru_maxrss


def handshake() -> None:
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("no go")


def child_paho(args: argparse.Namespace) -> dict[str, Any]:
    count = [0]
    done = threading.Event()
    version = mqtt.MQTTv5 if args.protocol == "5" else mqtt.MQTTv311
    kwargs: dict[str, Any] = {} if version == mqtt.MQTTv5 else {"clean_session": False}
    client_id = f"bench-paho-{uuid.uuid4().hex[:6]}"

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        count[0] += 1
        if count[0] >= args.messages:
            done.set()

    def session() -> mqtt.Client:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=version, **kwargs)
        client.on_message = on_message
        if version == mqtt.MQTTv5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = 3600
            properties.ReceiveMaximum = args.receive_maximum
            client.connect("127.0.0.1", args.port, clean_start=False, properties=properties)
        else:
            client.connect("127.0.0.1", args.port)
        return client

    first = session()
    subscribed = threading.Event()
    first.on_subscribe = lambda *_: subscribed.set()
    first.subscribe(PREFIX + "/+/+", 1)
    first.loop_start()
    if not subscribed.wait(10):  # the SUBACK; the session and subscription stay on the broker
        sys.exit("mqtt_throughput: no SUBACK from the broker within 10 s")
    first.disconnect()
    first.loop_stop()
    handshake()
    cpu, _ = usage()
    started = time.monotonic()
    client = session()
    client.loop_start()
    if not done.wait(600):
        raise RuntimeError(f"paho counted {count[0]} of {args.messages}")
    elapsed = time.monotonic() - started
    used, rss = usage()
    client.disconnect()
    client.loop_stop()
    return {"elapsed": elapsed, "cpu": used - cpu, "rss_kb": rss, "count": count[0]}


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
{extra}
    subscriptions:
      - topic: {prefix}/{{equipment}}/{{parameter}}
        qos: 1
pipeline: {{batch_rows: {batch_rows}, batch_age: {batch_age}, queue_size: 200000, spool_dir: "{spool}"}}
http: {{enabled: false}}
logging: {{level: warning}}
"""


async def child_daemon(args: argparse.Namespace) -> dict[str, Any]:
    from ingestor.config import load_config
    from ingestor.daemon.runtime import Daemon
    from ingestor.service.logs import LoggingConfig, configure_logging

    configure_logging(LoggingConfig(level="warning"))
    tmp = Path(args.tmp)
    equipment = "\n".join(f"                - {{code: PRESS-{i:02d}, name: Press {i}}}"
                          for i in range(1, MACHINES + 1))
    extra = "".join(f"    {line}\n" for line in args.connector_extra) if args.connector_extra else ""
    path = tmp / "daemon.yaml"
    path.write_text(DAEMON_CONFIG.format(
        dsn=args.dsn, equipment=equipment, port=args.port, protocol=args.protocol,
        client_id=f"bench-daemon-{uuid.uuid4().hex[:6]}", receive_maximum=args.receive_maximum,
        extra=extra.rstrip("\n"), prefix=PREFIX, batch_rows=args.batch_rows, batch_age=args.batch_age,
        spool=tmp / "spool"))
    config = load_config(path, environ={})
    warmup = Daemon(config, url=args.dsn)  # the schema and the broker session, then stop
    serving = asyncio.create_task(warmup.serve())
    while not warmup.schema_ready.is_set() or warmup.supervisors[0].state != "connected":
        await asyncio.sleep(0.05)
        if serving.done():
            serving.result()
    warmup.stop()
    await serving
    await asyncio.to_thread(handshake)
    cpu, _ = usage()
    started = time.monotonic()
    daemon = Daemon(config, url=args.dsn)
    serving = asyncio.create_task(daemon.serve())
    profiler = None
    if args.profile:
        profiler = subprocess.Popen(["py-spy",  # noqa: ASYNC220 "record", "-p", str(os.getpid()), "-r", "200", "-f", "raw",
                                     "-o", args.profile, "--nonblocking"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while daemon.writer.written < args.messages:
        await asyncio.sleep(0.005)
        if serving.done():
            raise RuntimeError(f"daemon stopped: {serving.result()}")
    elapsed = time.monotonic() - started
    used, rss = usage()
    if profiler is not None:
        profiler.send_signal(2)
        await asyncio.to_thread(profiler.wait)
    daemon.stop()
    await serving
    return {"elapsed": elapsed, "cpu": used - cpu, "rss_kb": rss, "count": daemon.writer.written}


def child(args: argparse.Namespace) -> int:
    result = child_paho(args) if args.child == "paho" else asyncio.run(child_daemon(args))
    print(json.dumps(result), flush=True)
    return 0


# --- the parent --------------------------------------------------------------------------------------------------

def run_consumer(kind: str, port: int, protocol: str, args: argparse.Namespace, dsn: str, tmp: Path
                 ) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", kind, "--port", str(port), "--protocol", protocol,
               "--messages", str(args.messages), "--receive-maximum", str(args.receive_maximum),
               "--batch-rows", str(args.batch_rows), "--batch-age", args.batch_age, "--dsn", dsn,
               "--tmp", str(tmp)]
    for line in args.connector_extra or []:
        command += ["--connector-extra", line]
    if args.profile and kind == "daemon":
        command += ["--profile", f"{args.profile}-{protocol}.txt"]
    process = subprocess.Popen(command, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdin is not None and process.stdout is not None
    try:
        if process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the {kind} consumer did not get ready (exit {process.wait()})")
        fill = prefill(port, args.messages)
        process.stdin.write("go\n")
        process.stdin.flush()
        line = process.stdout.readline()
        if process.wait(600) != 0 or not line:
            raise RuntimeError(f"the {kind} consumer failed (exit {process.returncode})")
    finally:
        if process.poll() is None:
            process.kill()
    result: dict[str, Any] = json.loads(line)
    result["fill"] = fill
    return result


async def committed(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM fact_sensor_event"))
    finally:
        await conn.close()


def measure(args: argparse.Namespace) -> int:
    from tests.harness_mqtt import PrivateBroker

    broker = PrivateBroker(extra=BROKER_EXTRA)
    broker.start()
    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} CPUs); "
          f"{args.messages:,} QoS 1 JSON messages pre-queued per consumer")
    header = f"{'MQTT':6} {'consumer':10} {'msgs/s':>9} {'ratio':>6} {'CPU-s/100k':>10} {'peak RSS':>9}"
    print(header)
    try:
        for protocol in args.protocols:
            ceiling = None
            for kind in args.consumers:
                tmp = Path(tempfile.mkdtemp(prefix=f"bench-mqtt-{kind}-", dir=broker.directory))
                name = f"bench_mqtt_{uuid.uuid4().hex[:8]}"
                dsn = dsn_for(args.dsn, name)
                if kind == "daemon":
                    asyncio.run(admin(args.dsn, f'CREATE DATABASE "{name}"'))
                try:
                    result = run_consumer(kind, broker.port, protocol, args, dsn, tmp)
                    if kind == "daemon":
                        rows = asyncio.run(committed(dsn))
                        if rows != args.messages:
                            print(f"  note: {rows} rows committed for {args.messages} messages")
                finally:
                    if kind == "daemon":
                        asyncio.run(admin(args.dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                rate = args.messages / result["elapsed"]
                if kind == "paho":
                    ceiling = rate
                ratio = f"{rate / ceiling:6.2f}" if ceiling else "     -"
                print(f"{protocol:6} {kind:10} {rate:9,.0f} {ratio} {result['cpu'] * 100_000 / args.messages:10.2f} "
                      f"{result['rss_kb'] / 1024:7.0f} MB   (pre-fill {result['fill']:,.0f}/s)", flush=True)
    finally:
        broker.close()
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--protocols", nargs="+", default=["5", "3.1.1"], choices=["5", "3.1.1"])
    parser.add_argument("--consumers", nargs="+", default=["paho", "daemon"], choices=["paho", "daemon"])
    parser.add_argument("--receive-maximum", type=int, default=10000)
    parser.add_argument("--batch-rows", type=int, default=5000)
    parser.add_argument("--batch-age", default="200ms")
    parser.add_argument("--connector-extra", action="append",
                        help="a YAML line added to the daemon's connector (e.g. 'workers: 2'); repeatable")
    parser.add_argument("--profile", help="py-spy raw profile of the daemon to PREFIX-PROTOCOL.txt")
    parser.add_argument("--dsn", default=os.environ.get("INGESTOR_TEST_PG_URL",
                                                        "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--child", choices=["paho", "daemon"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--protocol", help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    args = parser.parse_args()
    return child(args) if args.child else measure(args)


if __name__ == "__main__":
    sys.exit(main())
