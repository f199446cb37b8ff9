"""`ingestor bench` end to end, small: it measures, reports every key, and cleans up after itself."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import asyncpg

from .conftest import REPO, SERVERS

KEYS = {"server_copy_rows_per_s", "driver_rows_per_s", "pipeline_rows_per_s", "pipeline_vs_server",
        "pipeline_vs_driver", "commit_latency_p50_ms", "commit_latency_p99_ms", "peak_rss_mb", "rows"}


async def _scratch_databases(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return {r[0] for r in await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE 'ingestor_bench_%'")}
    finally:
        await conn.close()


def test_bench_reports_every_measurement_as_json_and_drops_its_scratch_database() -> None:
    dsn = SERVERS["timescaledb"]
    before = asyncio.run(_scratch_databases(dsn))
    result = subprocess.run([sys.executable, "-m", "ingestor", "bench", "--dsn", dsn, "--rows", "20000", "--json"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert KEYS <= set(report)
    assert report["rows"] == 20000 and report["tier"] == "timescaledb-apache"
    for key in ("server_copy_rows_per_s", "driver_rows_per_s", "pipeline_rows_per_s", "peak_rss_mb"):
        assert report[key] > 0
    ratio = report["pipeline_rows_per_s"] / report["server_copy_rows_per_s"]
    assert abs(report["pipeline_vs_server"] - ratio) < 0.01
    assert 0 < report["commit_latency_p50_ms"] <= report["commit_latency_p99_ms"]
    assert asyncio.run(_scratch_databases(dsn)) == before
