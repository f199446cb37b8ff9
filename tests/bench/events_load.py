"""Measure live events: the latency from a state change to the WebSocket clients, and what holding many
clients costs the API process.

Not part of the test suite.  Run it by hand against the dev servers (TimescaleDB on 5433, Mosquitto on 1883)::

    .venv/bin/python tests/bench/events_load.py                           # 500 clients, 20 machines, 30 s
    .venv/bin/python tests/bench/events_load.py --clients 1 --rate 10     # the latency without the fan-out

The path is the one a central deployment has:

1. ``ingestor run`` (a real daemon) reads ``--machines`` machines' state from MQTT (the machine's Mosquitto,
   QoS 1, a topic prefix of its own), batches them (``batch_age`` 100 ms), commits them by binary COPY; its
   live task turns each committed state change into a ``downtime`` event (a stop started or ended) and
   NOTIFYs it.
2. ``ingestor api`` (a second process, without connectors, as in front of a shared database) LISTENs and
   sends each event to every WebSocket client subscribed to ``types=downtime``.
3. This script holds ``--clients`` WebSocket clients, and publishes ``--rate`` state changes per second for
   ``--seconds`` (each machine in turn stops and runs again), each reading stamped with the wall clock
   at publication.

Latency is the time from that stamp (the event's ``startTime`` or ``endTime``) to a client receiving the
event, for every client and event: an upper bound of "commit to client", as it also holds the MQTT hop, the
batch age and the COPY.  The API's CPU is sampled while the clients are idle and while events flow.  The
clients run in this process, on the same two cores as the servers and the database.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import websockets
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.common import admin, cpu_seconds, dsn_for, free_port, scrape, start_ingestor, wait_ready

REPO = Path(__file__).resolve().parents[2]
SERVERS = {
    "postgres": os.environ.get("INGESTOR_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    "timescaledb": os.environ.get("INGESTOR_TEST_TSDB_URL", "postgresql://postgres@127.0.0.1:5433/postgres"),
}


def plant(machines: int) -> dict[str, Any]:
    return {"sites": [{"code": "S", "name": "Site", "timezone": "UTC", "areas": [{
        "code": "A", "name": "Area", "work_centers": [{"code": "W", "name": "Line", "equipment": [
            {"code": f"M{i:03d}", "name": f"Machine {i}",
             "roles": {"state": {"parameter": "state", "running": [1], "planned_stop": [2],
                                 "default_unplanned_reason": "MECH_FAIL", "default_planned_reason": "SCHED_MAINT"}}}
            for i in range(machines)]}]}]}]}


def configs(dsn: str, machines: int, prefix: str, daemon_port: int, api_port: int, spool: Path
            ) -> tuple[dict[str, Any], dict[str, Any]]:
    logging = {"format": "json", "level": "warning"}
    daemon = {
        "instance_id": "bench-events",
        "database": {"url": dsn, "refresh": {"view_oee_daily": 0, "view_reliability_summary": 0,
                                             "sensor_5min_avg": 0}},
        "plant": plant(machines),
        "connectors": [{"type": "mqtt", "name": "states", "host": "127.0.0.1", "port": 1883,
                        "client_id": f"bench-events-{uuid.uuid4().hex[:8]}",
                        "subscriptions": [{"topic": prefix + "/{equipment}/{parameter}", "qos": 1,
                                           "payload": {"format": "json", "value": "value",
                                                       "timestamp": "timestamp"}}]}],
        "pipeline": {"batch_rows": 1000, "batch_age": "100ms", "spool_dir": str(spool)},
        "http": {"listen": f"127.0.0.1:{daemon_port}"},
        "logging": logging,
    }
    api = {"instance_id": "bench-events-api", "plant": plant(1),
           "database": {"url": dsn, "apply_schema": False},
           "http": {"listen": f"127.0.0.1:{api_port}"}, "logging": logging}
    return daemon, api


class Client:
    """One WebSocket client: keeps the arrival time and the raw text of every message (parsed afterwards, so
    500 clients in one process cost as little as they can while they listen)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.received: list[tuple[float, str | bytes]] = []
        self.socket: Any = None
        self.task: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        self.socket = await websockets.connect(self.url, max_queue=None, open_timeout=60, ping_interval=None)
        self.task = asyncio.create_task(self._listen())

    async def _listen(self) -> None:
        try:
            async for message in self.socket:
                self.received.append((time.time(), message))
        except websockets.ConnectionClosed:
            pass


def publisher(prefix: str) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-events-pub-{uuid.uuid4().hex[:8]}")
    client.connect("127.0.0.1", 1883)
    client.loop_start()
    return client


def publish(client: mqtt.Client, prefix: str, machine: int, state: int) -> float:
    stamp = time.time()
    payload = json.dumps({"value": state, "timestamp": datetime.fromtimestamp(stamp, UTC).isoformat()})
    client.publish(f"{prefix}/M{machine:03d}/state", payload, qos=1).wait_for_publish(5)
    return stamp


def quantiles(values: list[float]) -> str:
    if len(values) < 2:
        return f"{len(values)} values"
    q = statistics.quantiles(sorted(values), n=100, method="inclusive")
    return (f"p50 {q[49] * 1000:.0f} ms, p90 {q[89] * 1000:.0f} ms, p99 {q[98] * 1000:.0f} ms, "
            f"max {max(values) * 1000:.0f} ms")


async def run(args: argparse.Namespace) -> None:
    server = SERVERS[args.server]
    name = f"bench_events_{uuid.uuid4().hex[:8]}"
    await admin(server, f'CREATE DATABASE "{name}"')
    dsn = dsn_for(server, name)
    prefix = f"bench-events/{uuid.uuid4().hex[:8]}"
    tmp = Path(tempfile.mkdtemp(prefix="bench-events-"))
    daemon_port, api_port = free_port(), free_port()
    daemon_config, api_config = configs(dsn, args.machines, prefix, daemon_port, api_port, tmp / "spool")
    daemon = start_ingestor("run", daemon_config, tmp)
    api: subprocess.Popen[bytes] | None = None
    mqtt_client: mqtt.Client | None = None
    clients: list[Client] = []
    try:
        await wait_ready(daemon_port, daemon, "the daemon")
        api = start_ingestor("api", api_config, tmp)
        await wait_ready(api_port, api, "the API")
        mqtt_client = publisher(prefix)
        # every machine running first: the stops to come are transitions from a known state
        for machine in range(args.machines):
            publish(mqtt_client, prefix, machine, 1)
        # the first states committed before any client listens: the stops to come are transitions
        deadline = time.monotonic() + 30
        while scrape(daemon_port).get("ingestor_readings_written_total", 0) < args.machines:
            if time.monotonic() > deadline:
                raise SystemExit("the first states were not written within 30 s; see the daemon's log")
            await asyncio.sleep(0.1)

        url = f"ws://127.0.0.1:{api_port}/api/events?types=downtime"
        started = time.perf_counter()
        clients = [Client(url) for _ in range(args.clients)]
        for offset in range(0, len(clients), 50):
            await asyncio.gather(*(c.connect() for c in clients[offset:offset + 50]))
        print(f"{args.server}: {args.clients} WebSocket clients connected in {time.perf_counter() - started:.1f} s")

        idle_cpu = cpu_seconds(api.pid)
        await asyncio.sleep(args.idle)
        idle_cpu = cpu_seconds(api.pid) - idle_cpu
        print(f"holding {args.clients} idle clients: API process {idle_cpu / args.idle * 100:.1f} % of a core")

        # the traffic: machine after machine stops, and on its next turn runs again
        state = [1] * args.machines
        changes = int(args.rate * args.seconds)
        cpu_before, daemon_before = cpu_seconds(api.pid), cpu_seconds(daemon.pid)
        begun = time.perf_counter()
        for n in range(changes):
            machine = n % args.machines
            state[machine] = 3 if state[machine] == 1 else 1
            await asyncio.to_thread(publish, mqtt_client, prefix, machine, state[machine])
            await asyncio.sleep(max(0.0, begun + (n + 1) / args.rate - time.perf_counter()))
        # every client has every event, or 10 s have passed
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and min(len(c.received) for c in clients) < changes:
            await asyncio.sleep(0.1)
        elapsed = time.perf_counter() - begun
        api_cpu = cpu_seconds(api.pid) - cpu_before
        daemon_cpu = cpu_seconds(daemon.pid) - daemon_before

        latencies: list[float] = []
        first: dict[int, float] = {}
        for client in clients:
            for arrived, message in client.received:
                event = json.loads(message)
                data = event["data"]
                stamp = datetime.fromisoformat(data["endTime" if data["phase"] == "ended" else "startTime"])
                latency = arrived - stamp.timestamp()
                latencies.append(latency)
                first[event["id"]] = min(first.get(event["id"], latency), latency)
        deliveries = len(latencies)
        print(f"{changes} state changes at {args.rate:g}/s for {args.seconds:g} s: {len(first)} events, "
              f"{deliveries} deliveries of {changes * args.clients} expected")
        print(f"   latency, every delivery: {quantiles(latencies)}")
        print(f"  latency, first delivery of each event: {quantiles(list(first.values()))}")
        print(f"while events flowed ({elapsed:.0f} s): API process {api_cpu / elapsed * 100:.1f} % of a core "
              f"({api_cpu / max(1, deliveries) * 1e6:.0f} µs per delivery), daemon {daemon_cpu / elapsed * 100:.1f} %")
    finally:
        for client in clients:
            if client.socket is not None:
                await client.socket.close()
        if mqtt_client is not None:
            mqtt_client.loop_stop()
            mqtt_client.disconnect()
        for process in (api, daemon):
            if process is not None:
                process.terminate()
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()
        if not args.keep:
            await admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", choices=sorted(SERVERS), default="timescaledb")
    parser.add_argument("--machines", type=int, default=20)
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--rate", type=float, default=5.0, help="state changes per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds the idle clients are measured")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
