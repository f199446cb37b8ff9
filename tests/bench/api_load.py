"""Measure the REST API under load: ``/oee`` and ``/production`` over one year of facts for 50 machines, with
50 concurrent clients, served by a real ``ingestor api`` process (uvicorn) on a loopback port.

Not part of the test suite.  Run it by hand against a dev server::

    .venv/bin/python tests/bench/api_load.py                          # TimescaleDB (5433), 50 machines, 1 year
    .venv/bin/python tests/bench/api_load.py --server postgres --clients 20 --seconds 20

1. A scratch database with the full schema and ``--machines`` machines in three 8-hour shifts; one production
   record per machine and hour for ``--days`` days (a year: 438,000 rows for 50 machines) with varied
   availability, performance and quality, and two downtime records per machine and day.
2. ``ingestor api`` serving it; ``--clients`` concurrent HTTP clients (keep-alive, one process) each asking
   in turn for the OEE (granularity day) and the production summary of a random 7-day window (``--window``)
   of the year, filtered to one work center or all of them, for ``--seconds``.
3. Latency per endpoint (p50, p90, p99, max), requests per second, and the server's CPU per request.

The clients share the two cores with the server and the database, so the figures are an upper bound of what
a dashboard sees on a dedicated server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ingestor.config import IngestorConfig
from ingestor.database.dimensions import sync_dimensions
from ingestor.database.schema import apply_schema
from tests.bench.common import admin, cpu_seconds, dsn_for, free_port, start_ingestor, wait_ready

REPO = Path(__file__).resolve().parents[2]
SERVERS = {
    "postgres": os.environ.get("INGESTOR_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    "timescaledb": os.environ.get("INGESTOR_TEST_TSDB_URL", "postgresql://postgres@127.0.0.1:5433/postgres"),
}
YEAR_START = datetime(2025, 1, 1, tzinfo=UTC)


def plant(machines: int, work_centers: int) -> dict[str, Any]:
    per = max(1, machines // work_centers)
    return {"instance_id": "bench-api", "plant": {"sites": [{
        "code": "S", "name": "Site", "timezone": "UTC",
        "shifts": [{"code": "EARLY", "name": "Early", "start": "06:00", "end": "14:00"},
                   {"code": "LATE", "name": "Late", "start": "14:00", "end": "22:00"},
                   {"code": "NIGHT", "name": "Night", "start": "22:00", "end": "06:00"}],
        "areas": [{"code": "A", "name": "Area", "work_centers": [
            {"code": f"W{w}", "name": f"Work center {w}", "equipment": [
                {"code": f"M{i:03d}", "name": f"Machine {i}", "theoretical_rate": 600}
                for i in range(w * per, min(machines, (w + 1) * per))]}
            for w in range(work_centers)]}]}]}}


FACTS = """
INSERT INTO fact_production (date_id, shift_id, equipment_id, start_time, end_time, planned_production_time,
                             operating_time, planned_parts, total_parts_produced, good_parts, scrap_parts)
SELECT to_char(h - INTERVAL '6 hours', 'YYYYMMDD')::int,
       CASE WHEN extract(hour FROM h) BETWEEN 6 AND 13 THEN early
            WHEN extract(hour FROM h) BETWEEN 14 AND 21 THEN late ELSE night END,
       e.equipment_id, h, h + INTERVAL '1 hour', 3600000,
       op.ms, 600, op.parts, op.parts - op.scrap, op.scrap
FROM dim_equipment e
CROSS JOIN generate_series($1::timestamptz, $1::timestamptz + make_interval(days => $2) - INTERVAL '1 hour',
                           INTERVAL '1 hour') h
CROSS JOIN LATERAL (SELECT (3600000 * (0.70 + 0.30 * random()))::bigint AS ms) avail
CROSS JOIN LATERAL (SELECT avail.ms, (avail.ms / 6000.0 * (0.80 + 0.20 * random()))::int AS parts) p0
CROSS JOIN LATERAL (SELECT p0.ms, p0.parts, (p0.parts * 0.05 * random())::int AS scrap) op
CROSS JOIN (SELECT max(shift_id) FILTER (WHERE shift_code = 'EARLY') AS early,
                   max(shift_id) FILTER (WHERE shift_code = 'LATE') AS late,
                   max(shift_id) FILTER (WHERE shift_code = 'NIGHT') AS night FROM dim_shift) s
"""

DOWNTIME = """
INSERT INTO fact_downtime (equipment_id, reason_id, start_time, end_time, downtime_duration)
SELECT e.equipment_id, r.reason_id, d + offs.t, d + offs.t + make_interval(secs => dur.s), dur.s * 1000
FROM dim_equipment e
CROSS JOIN generate_series($1::timestamptz, $1::timestamptz + make_interval(days => $2) - INTERVAL '1 day',
                           INTERVAL '1 day') d
CROSS JOIN generate_series(1, 2) n
CROSS JOIN LATERAL (SELECT make_interval(secs => (random() * 80000)::int) AS t,
                           (60 + random() * 1800)::int AS s) offs
CROSS JOIN LATERAL (SELECT offs.s) dur
CROSS JOIN LATERAL (SELECT reason_id FROM dim_downtime_reason ORDER BY (e.equipment_id * 7 + n + extract(doy FROM d)::int) % 5,
                    reason_id LIMIT 1) r
"""


async def build(server_dsn: str, machines: int, days: int, work_centers: int) -> str:
    name = f"bench_api_{uuid.uuid4().hex[:8]}"
    await admin(server_dsn, f'CREATE DATABASE "{name}"')
    dsn = dsn_for(server_dsn, name)
    config = IngestorConfig.model_validate(plant(machines, work_centers))
    conn = await asyncpg.connect(dsn)
    try:
        await apply_schema(conn)
        await sync_dimensions(conn, config.plant)
        started = time.perf_counter()
        await conn.execute(FACTS, YEAR_START, days)
        await conn.execute(DOWNTIME, YEAR_START, days)
        await conn.execute("ANALYZE")
        await conn.execute("REFRESH MATERIALIZED VIEW view_oee_daily")
        rows = await conn.fetchval("SELECT count(*) FROM fact_production")
        print(f"facts: {rows} production records, "
              f"{await conn.fetchval('SELECT count(*) FROM fact_downtime')} downtime records "
              f"({time.perf_counter() - started:.0f} s to build)")
    finally:
        await conn.close()
    return dsn


def start_api(dsn: str, port: int, tmp: Path) -> subprocess.Popen[bytes]:
    body = plant(1, 1)  # the API reads the plant from the database; the file needs one to be valid
    body.update({"database": {"url": dsn, "apply_schema": False}, "http": {"listen": f"127.0.0.1:{port}"},
                 "logging": {"format": "json", "level": "warning"}})
    return start_ingestor("api", body, tmp)


async def load(base: str, clients: int, seconds: float, days: int, window: int, work_centers: int
               ) -> dict[str, list[float]]:
    latencies: dict[str, list[float]] = {"oee": [], "production": []}
    errors: dict[int | str, int] = {}
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(seed: int, http: httpx.AsyncClient) -> None:
        rng = random.Random(seed)
        while time.monotonic() < deadline:
            for endpoint in ("oee", "production"):
                start_day = rng.randrange(0, max(1, days - window))
                params: dict[str, str] = {
                    "from": _day(start_day), "to": _day(start_day + window)}
                if rng.random() < 0.5:
                    params["workCenter"] = f"W{rng.randrange(work_centers)}"
                if endpoint == "oee":
                    params["granularity"] = "day"
                began = time.perf_counter()
                try:
                    response = await http.get(f"/api/manufacturing-metrics/{endpoint}", params=params)
                except httpx.TransportError as exc:
                    # e.g. a keep-alive connection the server closed just as it was reused: counted, not fatal
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    continue
                elapsed = time.perf_counter() - began
                if response.status_code != 200:
                    errors[response.status_code] = errors.get(response.status_code, 0) + 1
                    continue
                latencies[endpoint].append(elapsed)

    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as http:
        await asyncio.gather(*(client(i, http) for i in range(clients)))
    if errors:
        print(f"non-200 answers: {errors}")
    return latencies


def _day(offset: int) -> str:
    return (YEAR_START + timedelta(days=offset)).isoformat().replace("+00:00", "Z")


def _report(name: str, values: list[float], seconds: float) -> None:
    if not values:
        print(f"{name}: no successful request")
        return
    ordered = sorted(values)
    q = statistics.quantiles(ordered, n=100, method="inclusive")  # never beyond the max
    print(f"{name:>11}: {len(values)} requests, {len(values) / seconds:.0f}/s; "
          f"p50 {q[49] * 1000:.1f} ms, p90 {q[89] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms, "
          f"max {ordered[-1] * 1000:.1f} ms")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=sorted(SERVERS), default="timescaledb")
    parser.add_argument("--machines", type=int, default=50)
    parser.add_argument("--work-centers", type=int, default=5)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--window", type=int, default=7, help="days asked for per request")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()
    server_dsn = SERVERS[args.server]
    dsn = await build(server_dsn, args.machines, args.days, args.work_centers)
    port = free_port()
    tmp = Path(f"/tmp/{dsn.rsplit('/', 1)[1]}")
    os.makedirs(tmp, exist_ok=True)
    process = start_api(dsn, port, tmp)
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(port, process, "ingestor api")
        await load(base, 2, 3, args.days, args.window, args.work_centers)  # warm the pool and the caches
        cpu_before = cpu_seconds(process.pid)
        began = time.perf_counter()
        latencies = await load(base, args.clients, args.seconds, args.days, args.window, args.work_centers)
        took = time.perf_counter() - began
        cpu = cpu_seconds(process.pid) - cpu_before
        print(f"{args.server}: {args.machines} machines x {args.days} days, {args.clients} clients for "
              f"{took:.0f} s, {args.window}-day windows")
        for name, values in latencies.items():
            _report(name, values, took)
        total = sum(len(v) for v in latencies.values())
        if total:
            print(f"server CPU: {cpu:.1f} s for {total} requests ({cpu / total * 1000:.1f} ms a request, "
                  f"{cpu / took * 100:.0f} % of a core)")
    finally:
        process.terminate()
        process.wait(timeout=20)
        if not args.keep:
            await admin(server_dsn, f'DROP DATABASE IF EXISTS "{dsn.rsplit("/", 1)[1]}" WITH (FORCE)')


if __name__ == "__main__":
    asyncio.run(main())
