"""Memory and drain rate with a large backlog in the spool (not part of the test suite).

    .venv/bin/python -m tests.bench.spool_backlog --dsn postgresql://postgres@127.0.0.1:5433/postgres --rows 10000000

The daemon connects to a scratch database, which then goes away (renamed, so the shared server keeps running);
an in-process source puts ROWS readings, which pile up in the spool; then the database comes back and the
backlog drains.  With ``--cold`` the database is away from the start, so the spool has never seen the
database's keys and keeps the readings unencoded until it does (the slow path).  The resident memory is sampled
every 0.5 s throughout: it must not grow with the backlog.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import threading
import time
import uuid
from pathlib import Path

import asyncpg

from ingestor.cli import bench
from ingestor.config import load_config
from ingestor.daemon.runtime import Daemon


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def _admin(dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def main(dsn: str, rows: int, cold: bool) -> dict[str, object]:
    name = f"ingestor_backlog_{uuid.uuid4().hex[:8]}"
    url = bench._database_url(dsn, name)
    samples: list[tuple[float, float, str]] = []
    phase = ["start"]
    stop = threading.Event()

    def sample() -> None:
        started = time.monotonic()
        while not stop.is_set():
            samples.append((round(time.monotonic() - started, 1), rss_mb(), phase[0]))
            time.sleep(0.5)

    threading.Thread(target=sample, daemon=True).start()
    with tempfile.TemporaryDirectory(prefix="ingestor-backlog-") as scratch:
        config_path = bench._write_config(Path(scratch), url)
        text = config_path.read_text().replace("  spool_dir:", "  spool_max_bytes: 8GiB\n  spool_dir:")
        text = text.replace("database:\n", "database:\n  reconnect: {initial: 1s, max: 2s}\n")
        config_path.write_text(text)
        away = f"{name}_away"
        if not cold:
            await _admin(dsn, f'CREATE DATABASE "{name}"')
        daemon = Daemon(load_config(config_path, environ={}))
        served = asyncio.create_task(daemon.serve())
        if not cold:
            await daemon.schema_ready.wait()
            await _admin(dsn, f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'",
                         f'ALTER DATABASE "{name}" RENAME TO "{away}"')
        sink = daemon.queue.sink_for("backlog")
        phase[0] = "filling"
        started = time.perf_counter()
        chunk = []
        for reading in bench._readings(rows, int((time.time() - 7 * 3600) * 1e6)):
            chunk.append(reading)
            if len(chunk) == 1000:
                await sink.put(chunk)
                chunk = []
        if chunk:
            await sink.put(chunk)
        while daemon.spool.spool.readings < rows:
            await asyncio.sleep(0.1)
        filled = time.perf_counter() - started
        spool_bytes = daemon.spool.spool.bytes_used
        phase[0] = "draining"
        await _admin(dsn, f'CREATE DATABASE "{name}"' if cold else f'ALTER DATABASE "{away}" RENAME TO "{name}"')
        started = time.perf_counter()
        while daemon.writer.written < rows:
            await asyncio.sleep(0.2)
        drained = time.perf_counter() - started
        phase[0] = "done"
        daemon.stop()
        await served
    stop.set()
    await bench._drop_database(dsn, name)
    by_phase: dict[str, float] = {}
    for _, mb, name_ in samples:
        by_phase[name_] = max(by_phase.get(name_, 0.0), mb)
    return {"rows": rows, "spool_bytes": spool_bytes, "fill_seconds": round(filled, 1),
            "fill_rows_per_s": round(rows / filled), "drain_seconds": round(drained, 1),
            "drain_rows_per_s": round(rows / drained), "peak_rss_mb_by_phase": by_phase,
            "peak_rss_mb": max(mb for _, mb, _ in samples), "vm_hwm_mb": round(bench.peak_rss_mb(), 1)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--cold", action="store_true", help="the database is away from the start")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.dsn, args.rows, args.cold))))
