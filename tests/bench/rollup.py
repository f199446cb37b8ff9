"""Refresh cost of the incremental sensor_5min_avg (migration 0011) under a steady ingest, against the old
full-recompute materialized view at the same data volume.

Not part of the test suite.  Run it by hand::

    .venv/bin/python tests/bench/rollup.py                         # PostgreSQL, 10 minutes at 10k readings/s
    .venv/bin/python tests/bench/rollup.py --server timescaledb --minutes 3
    .venv/bin/python tests/bench/rollup.py --prefill-minutes 120   # start with two hours already stored

A scratch database gets the real schema (apply_schema).  A writer commits 1,000 readings (50 machines x 20
parameters) ten times a second through the daemon's commit path (``commit_batches``: binary COPY, spool
watermark, one transaction), so 10,000 readings/s, timestamped now.  On its own connection a refresher runs
``refresh_view('sensor_5min_avg')`` every ``--interval`` seconds (the daemon's default, 60 s) and prints how
long each took and how many keys it recomputed.  At the first and the last refresh the old definition (the
materialized view of 0001, last 24 hours, ``REFRESH MATERIALIZED VIEW CONCURRENTLY``) is refreshed too over
the same table, for comparison.  The writer's achieved rate is reported: if the machine cannot keep
10,000/s, the numbers say so.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ingestor.contract.reading import Reading
from ingestor.database.commit import commit_batches
from ingestor.database.copy_format import RowEncoder
from ingestor.database.schema import apply_schema
from ingestor.database.schema.views import refresh_view
from ingestor.database.watermark import claim_spool
from tests.bench.common import admin, dsn_for

SERVERS = {
    "postgres": os.environ.get("INGESTOR_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    "timescaledb": os.environ.get("INGESTOR_TEST_TSDB_URL", "postgresql://postgres@127.0.0.1:5433/postgres"),
}
MACHINES, PARAMETERS = 50, 20

OLD_VIEW = """
CREATE MATERIALIZED VIEW bench_old_sensor_5min_avg AS
SELECT date_bin(INTERVAL '5 minutes', event_ts, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket,
       equipment_id, parameter, avg(value) AS avg_value, min(value) AS min_value, max(value) AS max_value,
       count(*) AS sample_count
FROM fact_sensor_event
WHERE quality < 2
  AND event_ts >= date_bin(INTERVAL '5 minutes', now() - INTERVAL '24 hours', TIMESTAMPTZ '2000-01-01 00:00:00+00')
GROUP BY 1, 2, 3
WITH DATA;
CREATE UNIQUE INDEX ON bench_old_sensor_5min_avg (bucket, equipment_id, parameter);
"""


async def writer(dsn: str, rate: int, seconds: float, stats: dict[str, float]) -> None:
    conn = await asyncpg.connect(dsn)
    spool = str(uuid.uuid4())
    await claim_spool(conn, spool, "bench")
    encoder = RowEncoder({f"M{m}": m for m in range(1, MACHINES + 1)}, {})
    per_tick = rate // 10
    start = time.monotonic()
    seq = written = 0
    latencies: list[float] = []
    try:
        while (elapsed := time.monotonic() - start) < seconds:
            due = start + seq * 0.1
            if due > time.monotonic():
                await asyncio.sleep(due - time.monotonic())
            now_us = time.time_ns() // 1000
            readings = [Reading(f"M{1 + (i // PARAMETERS) % MACHINES}", f"p{i % PARAMETERS}", float(i % 97),
                                now_us - (i // (MACHINES * PARAMETERS)) * 1000)
                        for i in range(per_tick)]
            payload, count, _ = encoder.encode(readings)
            seq += 1
            t0 = time.perf_counter()
            await commit_batches(conn, spool_id=spool, instance_id="bench", rows=[payload], row_count=count,
                                 dead=[], last_seq=seq)
            latencies.append(time.perf_counter() - t0)
            written += count
        stats["written"] = written
        stats["seconds"] = elapsed
        latencies.sort()
        stats["commit_p50_ms"] = latencies[len(latencies) // 2] * 1000
        stats["commit_p99_ms"] = latencies[int(len(latencies) * 0.99)] * 1000
        stats["commit_max_ms"] = latencies[-1] * 1000
    finally:
        await conn.close()


async def refresher(dsn: str, interval: float, seconds: float, results: list[tuple[float, float, int]],
                    compare: list[tuple[float, float, int]]) -> None:
    conn = await asyncpg.connect(dsn)
    start = time.monotonic()
    n = 0
    try:
        while True:
            n += 1
            due = start + n * interval
            last = due + interval > start + seconds
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            dirty = int(await conn.fetchval("SELECT count(DISTINCT (bucket, equipment_id, parameter)) "
                                            "FROM sensor_5min_dirty"))
            t0 = time.perf_counter()
            await refresh_view(conn, "sensor_5min_avg")
            took = time.perf_counter() - t0
            rows = int(await conn.fetchval("SELECT count(*) FROM fact_sensor_event"))
            results.append((time.monotonic() - start, took, dirty))
            print(f"  t={time.monotonic() - start:6.0f}s  incremental refresh {took * 1000:8.1f} ms  "
                  f"keys {dirty:5d}  table rows {rows:,}", flush=True)
            if n == 1 or last:
                t0 = time.perf_counter()
                await conn.execute("REFRESH MATERIALIZED VIEW CONCURRENTLY bench_old_sensor_5min_avg")
                old = time.perf_counter() - t0
                compare.append((time.monotonic() - start, old, rows))
                print(f"  t={time.monotonic() - start:6.0f}s  old full refresh   {old * 1000:8.1f} ms  "
                      f"(24 h window, {rows:,} rows)", flush=True)
            if last:
                return
    finally:
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", choices=sorted(SERVERS), default="postgres")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=10_000, help="readings per second")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between refreshes")
    parser.add_argument("--prefill-minutes", type=int, default=0,
                        help="readings of this many minutes before now stored first (same rate)")
    args = parser.parse_args()
    server_dsn = SERVERS[args.server]
    name = f"bench_rollup_{uuid.uuid4().hex[:8]}"
    await admin(server_dsn, f'CREATE DATABASE "{name}"')
    dsn = dsn_for(server_dsn, name)
    try:
        conn = await asyncpg.connect(dsn)
        await apply_schema(conn)
        if args.prefill_minutes:
            await conn.execute(
                "INSERT INTO fact_sensor_event (equipment_id, event_ts, parameter, value) "
                "SELECT 1 + (i / $3) % $2, now() - make_interval(secs => (i / ($2 * $3) + 1) / 10.0), "
                "'p' || (i % $3), (i % 97)::float8 FROM generate_series(0, $1 - 1) i",
                args.prefill_minutes * 60 * args.rate, MACHINES, PARAMETERS)
            await refresh_view(conn, "sensor_5min_avg")
            await conn.execute("VACUUM ANALYZE fact_sensor_event")
        await conn.execute(OLD_VIEW)
        await conn.close()
        seconds = args.minutes * 60
        print(f"{args.server}: {args.rate:,} readings/s for {args.minutes:g} min, refresh every "
              f"{args.interval:g} s, prefill {args.prefill_minutes} min", flush=True)
        stats: dict[str, float] = {}
        results: list[tuple[float, float, int]] = []
        compare: list[tuple[float, float, int]] = []
        await asyncio.gather(writer(dsn, args.rate, seconds, stats),
                             refresher(dsn, args.interval, seconds, results, compare))
        print(f"writer: {stats['written']:,.0f} readings in {stats['seconds']:.0f} s = "
              f"{stats['written'] / stats['seconds']:,.0f}/s; commit of 1,000 readings p50 {stats['commit_p50_ms']:.1f} ms, "
              f"p99 {stats['commit_p99_ms']:.1f} ms, max {stats['commit_max_ms']:.0f} ms")
        times = [t * 1000 for _, t, _ in results]
        print(f"incremental refresh ms: first {times[0]:.0f}, median {statistics.median(times):.0f}, "
              f"max {max(times):.0f}, last {times[-1]:.0f}")
        for at, took, rows in compare:
            print(f"old full refresh at t={at:.0f}s over {rows:,} rows: {took * 1000:.0f} ms")
    finally:
        await admin(server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    asyncio.run(main())
