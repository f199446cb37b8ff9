"""Measure OPC UA notifications per second sustained into committed rows, and the lag from source to commit.

Not part of the test suite.  Run it by hand against the dev TimescaleDB (127.0.0.1:5433)::

    .venv/bin/python tests/bench/opcua_throughput.py                          # 10,000 tags, one subscription
    .venv/bin/python tests/bench/opcua_throughput.py --tags 10000 --groups 4 --duration 120
    .venv/bin/python tests/bench/opcua_throughput.py --server postgresql://postgres@127.0.0.1:5432/postgres

It creates a scratch database, starts the OPC UA simulator as its own process (``python -m simulators.opcua
--extra-tags N``: N Double variables that all change every ``--interval``, each with a source timestamp) and
the real daemon (``python -m ingestor run``) as another process, with one ``opcua`` connector monitoring all N
tags (in ``--groups`` subscriptions, publishing every ``--publishing-interval``).  Every notification becomes one
row.  After the daemon's first commit and ``--warmup`` seconds it measures, over ``--duration``:

* notifications received per second (``ingestor_opcua_notifications_total``) and rows committed per second
  (``ingestor_readings_written_total``), against what the simulator offers (N / interval);
* the lag from a value's source timestamp to its row being visible in the database: a probe reads, every
  ``--probe`` seconds, the rows committed since its last look and takes ``clock_timestamp() - event_ts`` for
  each (in the database, in 10 ms buckets), so the figures are upper bounds by at most one probe interval;
* the CPU of the daemon and of the simulator (process user + system time over wall time; 100 % = one core);
* notifications dropped because the pipeline was full (``ingestor_opcua_values_skipped_total``).

Every value of one simulator tick carries the same source timestamp, so after the window the script counts
the committed rows of each tick: a run is "sustained" when every tick in the window has all N rows, the
simulator kept its rate (at least 97 % of the ticks it should have written) and nothing was dropped.  The
rates from the metrics are averages over the window and move by a few percent with where the window's edges
fall between two publishes.  The simulator is one Python process too: when it falls behind it offers less,
which the ticks line shows.  Note the machine's cores and what else ran.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from tests.bench.common import admin, cpu_seconds, dsn_for, free_port, scrape  # noqa: E402

BLOCK = 100     # the simulator groups extra tags in objects of 100 (EXTRA-001/tag-000 …)


def config_yaml(dsn: str, opcua_port: int, http_port: int, spool: Path, tags: int, groups: int,
                publishing_interval: float, queue_size: int) -> str:
    blocks = (tags + BLOCK - 1) // BLOCK
    equipment = "\n".join(f"                - {{code: EXTRA-{b:03d}, name: Load block {b}}}"
                          for b in range(1, blocks + 1))
    per_group = (tags + groups - 1) // groups
    group_text = []
    for g in range(groups):
        lines = []
        for index in range(g * per_group, min(tags, (g + 1) * per_group)):
            block, name = f"EXTRA-{index // BLOCK + 1:03d}", f"tag-{index % BLOCK:03d}"
            lines.append(f'          - {{node: "ns=2;s={block}.{name}", equipment: {block}, parameter: {name}}}')
        group_text.append(f"""      - name: load-{g + 1}
        publishing_interval: {publishing_interval}
        queue_size: {queue_size}
        tags:
""" + "\n".join(lines))
    joined = "\n".join(group_text)
    return f"""instance_id: opcua-bench
database:
  url: {dsn}
  refresh: {{view_oee_daily: 0, view_reliability_summary: 0, sensor_5min_avg: 0}}
plant:
  sites:
    - code: BENCH
      name: Bench
      areas:
        - code: A
          name: Area
          work_centers:
            - code: W
              name: Work center
              equipment:
{equipment}
connectors:
  - type: opcua
    name: bench
    endpoint: opc.tcp://127.0.0.1:{opcua_port}
    timeout: 10s
    watchdog_interval: 10s
    groups:
{joined}
pipeline:
  batch_rows: 10000
  batch_age: 500ms
  queue_size: 200000
  spool_dir: {spool}
http:
  listen: 127.0.0.1:{http_port}
logging:
  level: warning
  format: json
"""


@dataclass
class LagProbe:
    """Every ``interval`` seconds: the lag of each row committed since the last look, as a histogram."""

    dsn: str
    interval: float
    buckets: dict[int, int] = field(default_factory=dict)   # 10 ms bucket → rows
    _last_id: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            self._last_id = int(await conn.fetchval("SELECT coalesce(max(event_id), 0) FROM fact_sensor_event"))
            while not stop.is_set():
                await asyncio.sleep(self.interval)
                rows = await conn.fetch(
                    "SELECT round(extract(epoch FROM now() - event_ts) * 100)::int AS bucket, count(*) AS n, "
                    "max(event_id) AS top FROM fact_sensor_event WHERE event_id > $1 GROUP BY 1", self._last_id)
                for row in rows:
                    self.buckets[row["bucket"]] = self.buckets.get(row["bucket"], 0) + row["n"]
                    self._last_id = max(self._last_id, row["top"])
        finally:
            await conn.close()

    def percentile(self, share: float) -> float:
        total = sum(self.buckets.values())
        if not total:
            return float("nan")
        running = 0
        for bucket in sorted(self.buckets):
            running += self.buckets[bucket]
            if running >= share * total:
                return bucket / 100
        return max(self.buckets) / 100

    @property
    def rows(self) -> int:
        return sum(self.buckets.values())


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the simulator exited")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"the simulator is not listening after {timeout} s")


def run(args: argparse.Namespace) -> int:
    name = f"bench_opcua_{uuid.uuid4().hex[:8]}"
    asyncio.run(admin(args.server, f'CREATE DATABASE "{name}"'))
    dsn = dsn_for(args.server, name)
    opcua_port, http_port = free_port(), free_port()
    work = Path(tempfile.mkdtemp(prefix="opcua-bench-"))
    config = work / "config.yaml"
    config.write_text(config_yaml(dsn, opcua_port, http_port, work / "spool", args.tags, args.groups,
                                  args.publishing_interval, args.queue_size))
    env = {k: v for k, v in os.environ.items() if k != "INGESTOR_DATABASE_URL"}
    print(f"scratch database {name}; files in {work}", flush=True)
    started = time.monotonic()
    with (work / "simulator.log").open("w") as log:
        simulator = subprocess.Popen(
            [sys.executable, "-m", "simulators.opcua", "--port", str(opcua_port), "--machines", "1",
             "--extra-tags", str(args.tags), "--interval", str(args.interval)],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    daemon: subprocess.Popen[bytes] | None = None
    try:
        wait_listening(opcua_port, simulator, 300)
        print(f"simulator serving {args.tags} tags after {time.monotonic() - started:.1f} s", flush=True)
        with (work / "daemon.log").open("w") as log:
            daemon = subprocess.Popen([sys.executable, "-m", "ingestor", "run", "-c", str(config)],
                                      cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while True:
            try:
                if scrape(http_port).get("ingestor_readings_written_total", 0) >= args.tags:
                    break
            except OSError:
                pass
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the daemon did not start writing; see {work / 'daemon.log'}")
            time.sleep(0.5)
        print(f"first {args.tags} rows committed {time.monotonic() - started:.1f} s after the start "
              f"(subscriptions created); warming up {args.warmup:.0f} s", flush=True)
        time.sleep(args.warmup)
        probe = LagProbe(dsn, args.probe)

        async def measure() -> tuple[dict[str, float], dict[str, float], float, float, float]:
            stop = asyncio.Event()
            task = asyncio.create_task(probe.run(stop))
            await asyncio.sleep(args.probe)       # the probe has its starting point
            before = await asyncio.to_thread(scrape, http_port)
            cpu0, sim0, t0 = cpu_seconds(daemon.pid), cpu_seconds(simulator.pid), time.monotonic()
            window[0] = time.time()
            await asyncio.sleep(args.duration)
            window[1] = time.time()
            after = await asyncio.to_thread(scrape, http_port)
            cpu1, sim1, t1 = cpu_seconds(daemon.pid), cpu_seconds(simulator.pid), time.monotonic()
            stop.set()
            await task
            return before, after, t1 - t0, cpu1 - cpu0, sim1 - sim0

        async def ticks() -> list[int]:
            """Rows per simulator tick (all values of one tick share its source timestamp) in the window."""
            await asyncio.sleep(5)     # let the last ticks of the window commit
            conn = await asyncpg.connect(dsn)
            try:
                rows = await conn.fetch(
                    "SELECT event_ts, count(*) AS n FROM fact_sensor_event WHERE event_ts >= to_timestamp($1) "
                    "AND event_ts < to_timestamp($2) AND equipment_id IN (SELECT equipment_id FROM dim_equipment "
                    "WHERE equipment_code LIKE 'EXTRA-%') GROUP BY 1 ORDER BY 1", window[0], window[1])
                return [row["n"] for row in rows]
            finally:
                await conn.close()

        window = [0.0, 0.0]

        assert daemon is not None
        before, after, wall, daemon_cpu, simulator_cpu = asyncio.run(measure())

        def rate(metric: str) -> float:
            return (after.get(metric, 0.0) - before.get(metric, 0.0)) / wall

        offered = args.tags / args.interval
        received = rate("ingestor_opcua_notifications_total")
        committed = rate("ingestor_readings_written_total")
        dropped = rate("ingestor_opcua_values_skipped_total") * wall
        per_tick = asyncio.run(ticks())
        complete = sum(1 for n in per_tick if n == args.tags)
        expected_ticks = int(args.duration / args.interval)
        sustained = dropped == 0 and complete == len(per_tick) and len(per_tick) >= 0.97 * expected_ticks
        print(f"\n{args.tags} tags in {args.groups} subscription(s), publishing every {args.publishing_interval} s "
              f"(queue {args.queue_size}), values changing every {args.interval} s, measured over {wall:.0f} s:")
        print(f"  offered              {offered:>10,.0f} notifications/s")
        print(f"  received             {received:>10,.0f} notifications/s")
        print(f"  committed            {committed:>10,.0f} rows/s")
        print(f"  dropped (full)       {dropped:>10,.0f}")
        print(f"  simulator ticks      {len(per_tick):>10} in the window, {complete} with all {args.tags:,} values "
              f"committed (fewest: {min(per_tick, default=0):,}); {sum(per_tick) / args.duration:,.0f} values/s: "
              f"{'sustained' if sustained else 'NOT sustained'}")
        print(f"  lag source→commit    p50 {probe.percentile(0.5):.2f} s, p95 {probe.percentile(0.95):.2f} s, "
              f"p99 {probe.percentile(0.99):.2f} s, max {probe.percentile(1.0):.2f} s "
              f"({probe.rows:,} rows, probe every {args.probe} s)")
        per_row = daemon_cpu / max(committed * wall, 1) * 1e6
        print(f"  daemon CPU           {daemon_cpu / wall:10.1%}  ({per_row:.1f} µs/row)")
        print(f"  simulator CPU        {simulator_cpu / wall:10.1%}")
        return 0 if sustained else 1
    finally:
        for process in (daemon, simulator):
            if process is not None:
                process.terminate()
        for process in (daemon, simulator):
            if process is not None:
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
        if not args.keep:
            asyncio.run(admin(args.server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--server", default=os.environ.get("INGESTOR_TEST_TSDB_URL",
                                                           "postgresql://postgres@127.0.0.1:5433/postgres"),
                        help="database server (a scratch database is created and dropped on it)")
    parser.add_argument("--tags", type=int, default=10_000, help="monitored items (default 10,000)")
    parser.add_argument("--groups", type=int, default=1, help="subscriptions to spread them over (default 1)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between value changes (default 1)")
    parser.add_argument("--publishing-interval", type=float, default=1.0, help="subscription publishing interval")
    parser.add_argument("--queue-size", type=int, default=10,
                        help="samples the server queues per tag between publishes (default 10: none is lost when "
                        "two changes fall into one publishing interval)")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds before measuring (default 10)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds measured (default 60)")
    parser.add_argument("--probe", type=float, default=0.25, help="seconds between lag probes (default 0.25)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
