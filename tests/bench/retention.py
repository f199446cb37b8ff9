"""Measure what a retention run costs the ingest: commit latency of a steady ingest with and without a run.

Not part of the test suite.  Run it by hand against the dev servers::

    .venv/bin/python tests/bench/retention.py                       # both servers, 2M old rows, 2000 readings/s
    .venv/bin/python tests/bench/retention.py --old-rows 5000000 --rate 5000 --servers postgres

For each server it makes a scratch database with the analytics schema, fills ``fact_sensor_event`` with
``--old-rows`` readings 120 to 100 days old (50 machines x 20 parameters, evenly spread; one-day chunks on
TimescaleDB), then runs a steady ingest of ``--rate`` readings/s through the writer's commit path
(:func:`ingestor.database.commit.commit_batches`: binary COPY of spool-encoded rows plus the watermark, one
transaction per batch, ``--batches-per-s`` batches a second) in two phases on the same database:

1. ``baseline``: ``--seconds`` of ingest alone;
2. ``retention``: the same ingest while :func:`ingestor.database.retention.run_retention` (``raw: 90d``,
   ``--batch-rows``, default timeouts) moves every old row to the archive on a second connection; the phase lasts exactly
   as long as the run.

It prints the commit latency p50/p99/max of each phase, the rows moved and the run's duration.  A commit
that falls behind the schedule is not skipped: the next starts at once, so a stall shows in the latencies.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ingestor.contract.reading import Reading
from ingestor.database.commit import commit_batches
from ingestor.database.config import RetentionConfig
from ingestor.database.copy_format import RowEncoder
from ingestor.database.retention import RetentionReport, run_retention
from ingestor.database.schema import apply_schema
from ingestor.database.watermark import claim_spool
from tests.bench.common import admin, dsn_for

SERVERS = {
    "postgres": os.environ.get("INGESTOR_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    "timescaledb": os.environ.get("INGESTOR_TEST_TSDB_URL", "postgresql://postgres@127.0.0.1:5433/postgres"),
}
MACHINES, PARAMETERS = 50, 20
SPOOL = str(uuid.uuid4())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class SteadyIngest:
    """``rate`` readings/s in ``batches_per_s`` commits a second through commit_batches, timing each commit."""

    def __init__(self, conn: asyncpg.Connection, rate: int, batches_per_s: int) -> None:
        self.conn = conn
        self.per_batch = max(1, rate // batches_per_s)
        self.period = 1.0 / batches_per_s
        self.encoder = RowEncoder({f"M{m}": m for m in range(1, MACHINES + 1)}, {})
        self.seq = 0
        self.sent = 0

    async def run(self, until: asyncio.Event, latencies: list[float]) -> None:
        next_at = time.monotonic()
        while not until.is_set():
            now_us = time.time_ns() // 1000
            readings = [Reading(f"M{1 + (self.sent + i) % MACHINES}", f"p{(self.sent + i) % PARAMETERS}", float(i),
                                now_us + i) for i in range(self.per_batch)]
            payload, count, _ = self.encoder.encode(readings)
            self.seq += 1
            started = time.monotonic()
            await commit_batches(self.conn, spool_id=SPOOL, instance_id="bench", rows=[payload], row_count=count,
                                 dead=[], last_seq=self.seq)
            latencies.append((time.monotonic() - started) * 1000)
            self.sent += count
            next_at += self.period
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))


async def bench_server(name: str, server_dsn: str, args: argparse.Namespace) -> dict[str, float | str]:
    database = f"ingestor_bench_retention_{uuid.uuid4().hex[:8]}"
    await admin(server_dsn, f'CREATE DATABASE "{database}"')
    dsn = dsn_for(server_dsn, database)
    try:
        writer = await asyncpg.connect(dsn)
        job = await asyncpg.connect(dsn)
        try:
            report = await apply_schema(writer)
            start = datetime.now(UTC) - timedelta(days=120)
            step_us = int(20 * 86400 * 1e6 / args.old_rows)
            filled = time.monotonic()
            await writer.execute(
                "INSERT INTO fact_sensor_event (equipment_id, event_ts, parameter, value, quality) "
                "SELECT 1 + g % $3, $1::timestamptz + g * ($2 * interval '1 microsecond'), 'p' || (g % $4), g, 0 "
                "FROM generate_series(0, $5 - 1) g", start, step_us, MACHINES, PARAMETERS, args.old_rows)
            await writer.execute("VACUUM ANALYZE fact_sensor_event")
            fill_s = time.monotonic() - filled
            await claim_spool(writer, SPOOL, "bench")
            ingest = SteadyIngest(writer, args.rate, args.batches_per_s)

            baseline: list[float] = []
            stop = asyncio.Event()
            task = asyncio.create_task(ingest.run(stop, baseline))
            await asyncio.sleep(args.seconds)
            stop.set()
            await task

            during: list[float] = []
            stop = asyncio.Event()
            task = asyncio.create_task(ingest.run(stop, during))
            result: RetentionReport = await run_retention(
                job, RetentionConfig(raw=90 * 86400.0, batch_rows=args.batch_rows))
            stop.set()
            await task
            left = await writer.fetchval("SELECT count(*) FROM fact_sensor_event WHERE event_ts < now() - "
                                         "interval '90 days'")
        finally:
            await writer.close()
            await job.close()
    finally:
        await admin(server_dsn, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    return {
        "server": name, "tier": str(report.tier), "old_rows": args.old_rows, "fill_s": round(fill_s, 1),
        "rate": args.rate, "commit_rows": ingest.per_batch, "retention_batch_rows": args.batch_rows,
        "baseline_commits": len(baseline), "baseline_p50_ms": round(statistics.median(baseline), 2),
        "baseline_p99_ms": round(percentile(baseline, 0.99), 2), "baseline_max_ms": round(max(baseline), 2),
        "during_commits": len(during), "during_p50_ms": round(statistics.median(during), 2),
        "during_p99_ms": round(percentile(during, 0.99), 2), "during_max_ms": round(max(during), 2),
        "archived": result.archived, "chunks_dropped": result.chunks_dropped, "batches": result.batches,
        "retention_s": round(result.seconds, 1), "archived_rows_per_s": round(result.archived / result.seconds),
        "old_rows_left": int(left),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", nargs="*", default=sorted(SERVERS))
    parser.add_argument("--old-rows", type=int, default=2_000_000)
    parser.add_argument("--rate", type=int, default=2000, help="readings/s of the steady ingest")
    parser.add_argument("--batches-per-s", type=int, default=10)
    parser.add_argument("--batch-rows", type=int, default=50_000, help="database.retention.batch_rows")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the baseline phase")
    args = parser.parse_args()
    for name in args.servers:
        print(await bench_server(name, SERVERS[name], args), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
