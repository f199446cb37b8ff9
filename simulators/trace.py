"""Recorded traces: what a real PLC reported, replayed at a speed factor.

A trace is CSV with a header ``timestamp,node,value`` or JSON lines ``{"timestamp": …, "node": …,
"value": …}``.  ``timestamp`` is ISO 8601 or seconds since the epoch; ``node`` is ``MACHINE.parameter``
(``PRESS-01.temperature``), which each simulator maps to its own addresses (OPC UA node, Modbus register,
MQTT topic).  Replay keeps the recorded spacing divided by the speed factor.
"""

from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path


@dataclass(frozen=True)
class TracePoint:
    offset: float          # seconds after the first point
    machine: str
    parameter: str
    value: float


def _seconds(raw: object) -> float:
    if isinstance(raw, int | float):
        return float(raw)
    text = str(raw).strip()
    try:
        return float(text)
    except ValueError:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _rows(path: Path) -> Iterator[tuple[object, str, object]]:
    with path.open(encoding="utf-8") as handle:
        if path.suffix in (".jsonl", ".ndjson", ".json"):
            for number, line in enumerate(handle, 1):
                if line.strip():
                    try:
                        record = json.loads(line)
                        yield record["timestamp"], record["node"], record["value"]
                    except (ValueError, KeyError) as exc:
                        raise ValueError(f"{path}:{number}: not a trace record: {exc}") from None
        else:
            for number, record in enumerate(csv.DictReader(handle), 2):
                try:
                    yield record["timestamp"], record["node"], record["value"]
                except KeyError as exc:
                    raise ValueError(f"{path}:{number}: expected columns timestamp,node,value") from exc


def load_trace(path: str | Path) -> list[TracePoint]:
    """Read a trace file, sorted by time; raises ValueError naming the bad line."""
    path = Path(path)
    points = []
    start: float | None = None
    for raw_time, node, raw_value in _rows(path):
        machine, dot, parameter = str(node).rpartition(".")
        if not dot or not machine:
            raise ValueError(f"{path}: node {node!r} is not MACHINE.parameter")
        moment = _seconds(raw_time)
        start = moment if start is None else min(start, moment)
        points.append((moment, machine, parameter, float(raw_value)))  # type: ignore[arg-type]
    points.sort(key=lambda p: p[0])
    return [TracePoint(moment - (start or 0.0), machine, parameter, value)
            for moment, machine, parameter, value in points]


async def replay(points: list[TracePoint], speed: float = 1.0, loop_forever: bool = False
                 ) -> AsyncIterator[TracePoint]:
    """Yield the points at their recorded spacing divided by ``speed``."""
    if speed <= 0:
        raise ValueError("speed must be positive")
    clock = asyncio.get_running_loop()
    while True:
        started = clock.time()
        for point in points:
            delay = started + point.offset / speed - clock.time()
            if delay > 0:
                await asyncio.sleep(delay)
            yield point
        if not loop_forever or not points:
            return
