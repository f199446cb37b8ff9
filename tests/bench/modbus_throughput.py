"""Measure Modbus registers per second sustained into committed rows, and the CPU the daemon spends on them.

Not part of the test suite.  Run it by hand against the dev TimescaleDB (127.0.0.1:5433)::

    .venv/bin/python tests/bench/modbus_throughput.py                       # 1 and 20 devices, 100 ms
    .venv/bin/python tests/bench/modbus_throughput.py --devices 20 --registers 50 100 200 --duration 60

For each scenario it creates a scratch database, starts the Modbus simulator as its own process
(``python -m simulators.modbus --machines N --bench-registers R``: every unit serves R input registers from
address 1000 whose values change every 100 ms), and runs the real daemon (``python -m ingestor run``) as
another process with one connector per device (one TCP connection each, as 20 PLCs would be) and one uint16
tag per register, all in one poll group at ``--interval``.  Each register becomes one row, so registers per
second and rows per second are the same number.  After ``--warmup`` it measures, over ``--duration``:

* committed rows per second (``ingestor_readings_written_total``, counted after each commit) against what
  was offered (devices x registers / interval);
* the daemon's CPU: process user + system time over wall time (100 % = one core busy), from /proc;
* poll overruns (a poll that took longer than its interval) and queue-full waits (backpressure).

A scenario is "sustained" when at least 97 % of the offered rows were committed and at most 1 % of the polls
overran.  ``--connector-only`` measures the Modbus connector alone instead (in this process, readings into a
null sink): what decoding and pymodbus cost per reading, apart from the pipeline and the database.
The machine running it matters: note its cores and what else ran.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from tests.bench.common import admin, cpu_seconds, dsn_for, free_port, scrape  # noqa: E402


def config_yaml(dsn: str, modbus_port: int, http_port: int, devices: int, registers: int, interval: float,
                spool: Path) -> str:
    equipment = "\n".join(f"                - {{code: BENCH-{d:02d}, name: Bench machine {d}}}"
                          for d in range(1, devices + 1))
    connectors = []
    for d in range(1, devices + 1):
        tags = "\n".join(f"          - {{equipment: BENCH-{d:02d}, parameter: r{a}, register: input, address: {a}, "
                         f"data_type: uint16}}" for a in range(1000, 1000 + registers))
        connectors.append(f"""  - type: modbus
    name: bench-{d:02d}
    host: 127.0.0.1
    port: {modbus_port}
    timeout: 1s
    interval: {interval}
    devices:
      - unit_id: {d}
        name: bench-{d:02d}
        tags:
{tags}""")
    joined = "\n".join(connectors)
    return f"""instance_id: modbus-bench
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
{joined}
pipeline:
  batch_rows: 5000
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
class Result:
    devices: int
    registers: int
    interval: float
    offered: float
    committed: float
    daemon_cpu: float
    simulator_cpu: float
    overruns: float
    queue_waits: float

    duration: float = 0.0

    @property
    def polls(self) -> float:
        return self.devices * self.duration / self.interval

    @property
    def sustained(self) -> bool:
        return self.committed >= 0.97 * self.offered and self.overruns <= 0.01 * self.polls

    def line(self) -> str:
        return (f"{self.devices:>3} dev x {self.registers:>5} reg @ {self.interval * 1000:.0f} ms | offered "
                f"{self.offered:>9,.0f}/s | committed {self.committed:>9,.0f}/s | daemon CPU {self.daemon_cpu:6.1%} "
                f"({self.daemon_cpu / max(self.committed, 1) * 1e6:5.1f} µs/row) | simulator CPU "
                f"{self.simulator_cpu:6.1%} | overruns {self.overruns:.0f}/{self.polls:.0f} polls | queue waits "
                f"{self.queue_waits:.0f} | "
                f"{'sustained' if self.sustained else 'NOT sustained'}")


def run_scenario(server_dsn: str, devices: int, registers: int, interval: float, warmup: float,
                 duration: float) -> Result:
    name = f"bench_modbus_{uuid.uuid4().hex[:8]}"
    asyncio.run(admin(server_dsn, f'CREATE DATABASE "{name}"'))
    modbus_port, http_port = free_port(), free_port()
    work = Path(tempfile.mkdtemp(prefix="modbus-bench-"))
    config = work / "config.yaml"
    config.write_text(config_yaml(dsn_for(server_dsn, name), modbus_port, http_port, devices, registers, interval,
                                  work / "spool"))
    env = {k: v for k, v in os.environ.items() if k != "INGESTOR_DATABASE_URL"}
    simulator = subprocess.Popen(
        [sys.executable, "-m", "simulators.modbus", "--port", str(modbus_port), "--machines", str(devices),
         "--bench-registers", str(registers)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    with (work / "daemon.log").open("w") as log:
        daemon = subprocess.Popen([sys.executable, "-m", "ingestor", "run", "-c", str(config)],
                                  cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if scrape(http_port).get("ingestor_readings_written_total", 0) > 0:
                    break
            except OSError:
                pass
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the daemon did not start writing; see {work / 'daemon.log'}")
            time.sleep(0.2)
        time.sleep(warmup)
        before, cpu0, sim0, t0 = scrape(http_port), cpu_seconds(daemon.pid), cpu_seconds(simulator.pid), time.monotonic()
        time.sleep(duration)
        after, cpu1, sim1, t1 = scrape(http_port), cpu_seconds(daemon.pid), cpu_seconds(simulator.pid), time.monotonic()
        wall = t1 - t0

        def delta(metric: str) -> float:
            return after.get(metric, 0.0) - before.get(metric, 0.0)

        return Result(devices, registers, interval, offered=devices * registers / interval,
                      committed=delta("ingestor_readings_written_total") / wall, daemon_cpu=(cpu1 - cpu0) / wall,
                      simulator_cpu=(sim1 - sim0) / wall, overruns=delta("ingestor_poll_overruns_total"),
                      queue_waits=delta("ingestor_queue_full_waits_total"), duration=wall)
    finally:
        for process in (daemon, simulator):
            process.terminate()
        for process in (daemon, simulator):
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        asyncio.run(admin(server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def connector_only(devices: int, registers: int, interval: float, warmup: float, duration: float) -> str:
    """CPU per reading of the connector alone: simulator in its own process, readings into a null sink."""
    sys.path.insert(0, str(REPO))
    from connectors.modbus import ModbusConfig
    from tests.helpers import build_connector

    port = free_port()
    simulator = subprocess.Popen(
        [sys.executable, "-m", "simulators.modbus", "--port", str(port), "--machines", str(devices),
         "--bench-registers", str(registers)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)

    class NullSink:
        count = 0

        async def put(self, readings: object, on_durable: object = None) -> None:
            NullSink.count += len(readings)  # type: ignore[arg-type]

    async def run() -> str:
        connectors = [build_connector(ModbusConfig.model_validate({
            "type": "modbus", "name": f"bench-{d}", "host": "127.0.0.1", "port": port, "interval": interval,
            "devices": [{"unit_id": d, "tags": [{"equipment": "E", "parameter": f"r{a}", "register": "input",
                                                 "address": a, "data_type": "uint16"}
                                                for a in range(1000, 1000 + registers)]}]}))
            for d in range(1, devices + 1)]
        for connector in connectors:
            await connector.connect()
        tasks = [asyncio.create_task(c.run(NullSink())) for c in connectors]
        await asyncio.sleep(warmup)
        n0, c0, w0 = NullSink.count, time.process_time(), time.monotonic()
        await asyncio.sleep(duration)
        n1, c1, w1 = NullSink.count, time.process_time(), time.monotonic()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for connector in connectors:
            await connector.close()
        rate, cpu = (n1 - n0) / (w1 - w0), (c1 - c0) / (w1 - w0)
        return (f"{devices:>3} dev x {registers:>5} reg @ {interval * 1000:.0f} ms | connector alone: {rate:>9,.0f} "
                f"readings/s | CPU {cpu:6.1%} ({cpu / max(rate, 1) * 1e6:4.1f} µs/reading, pymodbus included)")

    try:
        return asyncio.run(run())
    finally:
        simulator.terminate()
        simulator.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default=os.environ.get("INGESTOR_TEST_TSDB_URL",
                                                           "postgresql://postgres@127.0.0.1:5433/postgres"))
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 20])
    parser.add_argument("--registers", type=int, nargs="+", default=None,
                        help="registers per device (default: 125 250 500 1000 for one device, 25 50 100 for more)")
    parser.add_argument("--interval", type=float, default=0.1, help="poll interval in seconds (default 0.1)")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--connector-only", action="store_true",
                        help="measure the connector alone (null sink) instead of the daemon with the database")
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.2f}", flush=True)
    for devices in args.devices:
        for registers in args.registers or ([125, 250, 500, 1000] if devices == 1 else [25, 50, 100]):
            if args.connector_only:
                print(connector_only(devices, registers, args.interval, args.warmup, args.duration), flush=True)
            else:
                print(run_scenario(args.server, devices, registers, args.interval, args.warmup,
                                   args.duration).line(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
