"""Measure registers per second on one Modbus RTU line, against the line's own limit.

Not part of the test suite.  Run it by hand::

    .venv/bin/python tests/bench/modbus_rtu_line.py                          # 19200 baud, 125 registers a read
    .venv/bin/python tests/bench/modbus_rtu_line.py --registers 10 60 125 --duration 30

A pseudo-terminal moves bytes as fast as the kernel copies them, whatever baud rate it is set to, so the
simulator paces the line itself (``python -m simulators.modbus --transport rtu --pace``, as its own process):
a request counts as received once its bytes would have crossed the wire at ``--baudrate`` plus the
3.5-character silence that ends a frame, and the answer is written no faster than the line carries it.  The
connector (in this process, readings into a null sink) polls ``--units`` units, each with R uint16 input
registers from address 1000 in one poll group at ``--interval`` (shorter than a read takes, so the bus is never
idle), for ``--duration`` after ``--warmup``.

The wire limit per read of R registers, in characters of 11 bits (8E1 or 8N2): the request (8), the
3.5-character silence after it, the answer (5 + 2R), and the silence after it before the next request (3.5);
the slave's own turnaround is taken as zero.  Reported: registers/s measured, registers/s the wire allows,
their ratio, and the simulator's count of collisions and short gaps (both must be 0).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from connectors.modbus import ModbusConfig  # noqa: E402
from connectors.modbus.connector import ModbusConnector  # noqa: E402
from ingestor.contract import Reading  # noqa: E402

BITS_PER_CHAR = 11


def wire_limit(registers: int, baudrate: int) -> float:
    """Registers per second one line carries reading ``registers`` per request, back to back."""
    characters = 8 + 3.5 + (5 + 2 * registers) + 3.5
    return registers / (characters * BITS_PER_CHAR / baudrate)


class NullSink:
    def __init__(self) -> None:
        self.count = 0

    async def put(self, readings: Sequence[Reading], on_durable: object = None) -> None:
        self.count += len(readings)


async def measure(port: str, units: int, registers: int, baudrate: int, interval: float, warmup: float,
                  duration: float) -> tuple[float, int]:
    config = ModbusConfig.model_validate({
        "type": "modbus", "name": "rtu-bench", "transport": "rtu",
        "serial": {"port": port, "baudrate": baudrate, "parity": "N", "stopbits": 2},
        "timeout": "2s", "interval": interval,
        "devices": [{"unit_id": unit, "name": f"unit-{unit}", "tags": [
            {"equipment": f"BENCH-{unit}", "parameter": f"r{a}", "register": "input", "address": a,
             "data_type": "uint16"} for a in range(1000, 1000 + registers)]} for unit in range(1, units + 1)]})
    connector = ModbusConnector(config)
    sink = NullSink()
    await connector.connect()
    task = asyncio.create_task(connector.run(sink))
    try:
        await asyncio.sleep(warmup)
        start_count, started = sink.count, time.monotonic()
        await asyncio.sleep(duration)
        rate = (sink.count - start_count) / (time.monotonic() - started)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await connector.close()
    errors = sum(sum(d["errors"].values()) for d in connector.status()["devices"].values())
    return rate, errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baudrate", type=int, default=19200)
    parser.add_argument("--units", type=int, default=2)
    parser.add_argument("--registers", type=int, nargs="+", default=[125])
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--duration", type=float, default=20.0)
    args = parser.parse_args()
    print(f"| registers a read | measured registers/s | wire limit | of the limit | tag errors | "
          f"simulator: collisions, short gaps |  ({args.units} units, {args.baudrate} baud, 11 bits a character)")
    for registers in args.registers:
        with tempfile.TemporaryDirectory() as scratch:
            link = Path(scratch) / "line"
            log = Path(scratch) / "simulator.log"
            with log.open("w") as out:
                simulator = subprocess.Popen(
                    [sys.executable, "-m", "simulators.modbus", "--transport", "rtu", "--pace",
                     "--serial-link", str(link), "--baudrate", str(args.baudrate), "--machines", str(args.units),
                     "--bench-registers", str(registers)], cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
            try:
                deadline = time.monotonic() + 10
                while not link.exists() and time.monotonic() < deadline:
                    time.sleep(0.05)
                rate, errors = asyncio.run(measure(str(link), args.units, registers, args.baudrate, args.interval,
                                                   args.warmup, args.duration))
            finally:
                simulator.terminate()
                simulator.wait(15)
            line = log.read_text().strip().splitlines()[-1]
            manners = line.split("; line: ")[-1] if "; line: " in line else line
        limit = wire_limit(registers, args.baudrate)
        print(f"| {registers} | {rate:,.0f} | {limit:,.0f} | {rate / limit:.0%} | {errors} | {manners} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
