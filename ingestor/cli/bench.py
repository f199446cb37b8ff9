"""``ingestor bench``: how fast this database takes readings, and how close the daemon gets to that.

Three measurements of the same rows, in a scratch database created on the target server and dropped after:

(a) the server's own ``COPY`` of a pre-encoded CSV file of the rows: the ceiling;
(b) the driver alone: asyncpg ``copy_records_to_table`` fed prebuilt tuples;
(c) the full pipeline: an in-process source → queue → spooler → durable spool (default durability) → writer
    → commit, in a child process so that its peak memory is its own.

It prints rows/s for each, the ratios c/a and c/b, the p50/p99 commit latency of (c) and its peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import random
import resource
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from ingestor.cli.common import EXIT_CONFIG, database_url
from ingestor.config import load_config
from ingestor.contract import Reading
from ingestor.database.config import DATABASE_URL_ENV
from ingestor.database.connection import redact
from ingestor.database.prepare import prepare_database
from ingestor.service.logs import configure_logging

EQUIPMENT = 50
PARAMETERS = ("temperature", "vibration", "current", "pressure", "speed", "torque", "flow", "power",
              "parts_total", "parts_good", "state", "reason", "humidity", "voltage", "frequency", "level",
              "position", "force", "energy", "spindle_load")
SPAN_US = 6 * 3600 * 1_000_000  # the rows cover six hours (one or two 1-day chunks on TimescaleDB)


def _readings(rows: int, start_us: int, seed: int = 7) -> Iterator[Reading]:
    """The benchmark's rows, the same every time for the same arguments (cheap to make: the source should
    cost as little as a connector's callback does)."""
    rng = random.Random(seed)
    values = [round(rng.uniform(0, 1000), 3) for _ in range(997)]
    codes = [f"BENCH-{i:03d}" for i in range(EQUIPMENT)]
    names = [PARAMETERS[(i // EQUIPMENT) % len(PARAMETERS)] for i in range(EQUIPMENT * len(PARAMETERS))]
    cycle = len(names)
    step = max(1, SPAN_US // max(rows, 1))
    for i in range(rows):
        yield Reading(codes[i % EQUIPMENT], names[i % cycle], values[i % 997], start_us + i * step, "degC")


def _database_url(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


async def _scratch_database(dsn: str) -> str:
    name = f"ingestor_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    except asyncpg.InsufficientPrivilegeError as exc:
        raise SystemExit(f"ingestor bench: needs permission to create a scratch database ({exc})") from None
    finally:
        await conn.close()
    return name


async def _drop_database(dsn: str, name: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


BENCH_CONFIG = """
instance_id: bench
database:
  url: {url}
  refresh: {{view_oee_daily: 0, view_reliability_summary: 0, sensor_5min_avg: 0}}
plant:
  sites:
    - code: BENCH
      name: Benchmark site
      areas:
        - code: BENCH-AREA
          name: Benchmark area
          work_centers:
            - code: BENCH-WC
              name: Benchmark work center
              equipment:
{equipment}
pipeline:
  spool_dir: {spool}
http:
  enabled: false
logging:
  level: warning
  format: json
"""


def _write_config(directory: Path, url: str) -> Path:
    equipment = "\n".join(f"                - {{code: BENCH-{i:03d}, name: Bench machine {i}}}"
                          for i in range(EQUIPMENT))
    path = directory / "bench.yaml"
    path.write_text(BENCH_CONFIG.format(url=url, equipment=equipment, spool=directory / "spool"))
    return path


async def _prepare(url: str, config_path: Path) -> dict[str, Any]:
    """Apply the schema and sync the benchmark's plant; returns the keys and the tier."""
    config = load_config(config_path, environ={})
    conn = await asyncpg.connect(url)
    try:
        prepared = await prepare_database(conn, config.database, config.plant)
    finally:
        await conn.close()
    assert prepared.schema is not None  # the benchmark's configuration applies the schema
    return {"tier": str(prepared.schema.tier), "equipment": prepared.keys.equipment, "units": prepared.keys.units}


def _tuples(rows: int, start_us: int, keys: dict[str, Any]) -> list[tuple[Any, ...]]:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    equipment, units = keys["equipment"], keys["units"]
    return [(equipment[r.equipment], epoch + timedelta(microseconds=r.timestamp_us), r.parameter, r.value,
             units[r.unit], 0) for r in _readings(rows, start_us)]


async def _measure_server_copy(url: str, path: Path, rows: int) -> float:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("TRUNCATE fact_sensor_event")
        started = time.perf_counter()
        await conn.copy_to_table("fact_sensor_event", source=str(path), format="csv",
                                 columns=["equipment_id", "event_ts", "parameter", "value", "unit_id", "quality"])
        elapsed = time.perf_counter() - started
        assert await conn.fetchval("SELECT count(*) FROM fact_sensor_event") == rows
        return rows / elapsed
    finally:
        await conn.close()


async def _measure_driver(url: str, records: list[tuple[Any, ...]]) -> float:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("TRUNCATE fact_sensor_event")
        started = time.perf_counter()
        await conn.copy_records_to_table(
            "fact_sensor_event", records=records,
            columns=["equipment_id", "event_ts", "parameter", "value", "unit_id", "quality"])
        elapsed = time.perf_counter() - started
        assert await conn.fetchval("SELECT count(*) FROM fact_sensor_event") == len(records)
        return len(records) / elapsed
    finally:
        await conn.close()


async def _truncate(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("TRUNCATE fact_sensor_event")
    finally:
        await conn.close()


async def _count(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM fact_sensor_event"))
    finally:
        await conn.close()


def pipeline_child(config_path: str, rows: int, start_us: int) -> None:
    """Run in a child process: the full pipeline on the benchmark rows; prints one JSON line."""
    from ingestor.daemon.runtime import Daemon

    config = load_config(config_path, environ={})
    configure_logging(config.logging)

    async def main() -> dict[str, Any]:
        daemon = Daemon(config)
        served = asyncio.create_task(daemon.serve())
        sink = daemon.queue.sink_for("bench")
        await daemon.schema_ready.wait()  # measure ingest, not the schema check at startup
        started = time.perf_counter()
        chunk: list[Reading] = []
        for reading in _readings(rows, start_us):
            chunk.append(reading)
            if len(chunk) == 1000:
                await sink.put(chunk)
                chunk = []
        if chunk:
            await sink.put(chunk)
        while daemon.writer.written < rows:  # noqa: ASYNC110 - polling a counter is the measurement's clock
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - started
        daemon.stop()
        await served
        commits = sorted(daemon.writer.commit_seconds)
        return {"rows_per_s": rows / elapsed, "seconds": elapsed, "written": daemon.writer.written,
                "commit_p50_ms": 1000 * statistics.median(commits),
                "commit_p99_ms": 1000 * commits[min(len(commits) - 1, int(len(commits) * 0.99))],
                "commits": len(commits)}

    result = asyncio.run(main())
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result))


def peak_rss_mb() -> float:
    """This process's peak resident memory.  VmHWM where Linux has it: getrusage's ru_maxrss survives exec,
    so a child started by a big parent would report the parent's peak."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _run(dsn: str, rows: int) -> dict[str, Any]:
    name = await _scratch_database(dsn)
    url = _database_url(dsn, name)
    try:
        with tempfile.TemporaryDirectory(prefix="ingestor-bench-") as scratch:
            directory = Path(scratch)
            config_path = _write_config(directory, url)
            prepared = await _prepare(url, config_path)
            start_us = int((time.time() - 7 * 3600) * 1_000_000)
            records = _tuples(rows, start_us, prepared)
            csv_path = directory / "rows.csv"
            with csv_path.open("w", newline="") as handle:
                writer = csv.writer(handle)
                for record in records:
                    writer.writerow([record[0], record[1].isoformat(), record[2], repr(record[3]), record[4],
                                     record[5]])
            server = await _measure_server_copy(url, csv_path, rows)
            csv_path.unlink()
            driver = await _measure_driver(url, records)
            del records
            await _truncate(url)
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-c", "import sys; from ingestor.cli.bench import pipeline_child; "
                "pipeline_child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))",
                str(config_path), str(rows), str(start_us),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                env={**os.environ, "INGESTOR_DATABASE_URL": ""})
            out, err = await child.communicate()
            if child.returncode != 0:
                raise RuntimeError(f"the pipeline run failed:\n{err.decode()[-3000:]}")
            pipeline = json.loads(out.decode().strip().splitlines()[-1])
            written = await _count(url)
            if written != rows:
                raise RuntimeError(f"the pipeline wrote {written} rows, expected {rows}")
    finally:
        await _drop_database(dsn, name)
    return {
        "rows": rows,
        "tier": prepared["tier"],
        "server_copy_rows_per_s": round(server),
        "driver_rows_per_s": round(driver),
        "pipeline_rows_per_s": round(pipeline["rows_per_s"]),
        "pipeline_vs_server": round(pipeline["rows_per_s"] / server, 3),
        "pipeline_vs_driver": round(pipeline["rows_per_s"] / driver, 3),
        "commit_latency_p50_ms": round(pipeline["commit_p50_ms"], 1),
        "commit_latency_p99_ms": round(pipeline["commit_p99_ms"], 1),
        "commits": pipeline["commits"],
        "peak_rss_mb": round(pipeline["peak_rss_mb"], 1),
    }


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = commands.add_parser("bench", help="measure how fast the database takes readings, and the pipeline")
    bench.add_argument("--dsn", help=f"server to measure (default: ${DATABASE_URL_ENV}); a scratch database is "
                                     "created on it and dropped afterwards")
    bench.add_argument("--rows", type=int, default=1_000_000, help="readings per measurement (default 1,000,000)")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.set_defaults(command_main=run)


def run(args: argparse.Namespace) -> int:
    dsn = database_url(args.dsn, None)
    if not dsn:
        print(f"ingestor bench: give --dsn or set {DATABASE_URL_ENV}", file=sys.stderr)
        return EXIT_CONFIG
    return bench(dsn, args.rows, args.json)


def bench(dsn: str, rows: int, as_json: bool) -> int:
    result = asyncio.run(_run(dsn, rows))
    if as_json:
        print(json.dumps(result))
        return 0
    print(f"database:                  {redact(dsn)} ({result['tier']})")
    print(f"rows:                      {rows:,} (indexed fact_sensor_event, {EQUIPMENT} machines)")
    print(f"(a) server COPY of a file: {result['server_copy_rows_per_s']:>10,} rows/s")
    print(f"(b) driver, prebuilt rows: {result['driver_rows_per_s']:>10,} rows/s")
    print(f"(c) full pipeline:         {result['pipeline_rows_per_s']:>10,} rows/s  "
          f"(c/a {result['pipeline_vs_server']:.2f}, c/b {result['pipeline_vs_driver']:.2f})")
    print(f"commit latency (c):        p50 {result['commit_latency_p50_ms']} ms, "
          f"p99 {result['commit_latency_p99_ms']} ms over {result['commits']} commits")
    print(f"peak RSS (c):              {result['peak_rss_mb']} MB")
    return 0
