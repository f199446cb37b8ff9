"""Measure ``ingestor import scrap`` on a large file: rows per second and the importer's peak memory.

Not part of the test suite.  Run it by hand against a dev server::

    .venv/bin/python tests/bench/records_import.py                     # 1,000,000 rows, plain PostgreSQL
    .venv/bin/python tests/bench/records_import.py --rows 200000 --server postgresql://postgres@127.0.0.1:5433/postgres

It builds a scratch database with the demo plant (config/demo.yaml) and one year of production records for
its nine presses (three shifts a day, so every scrap record finds the production record it belongs to),
writes a scrap file the way a quality station in Germany exports one (``;``, decimal commas, local time
``dd.mm.yyyy HH:MM:SS``, no record ids: the key is equipment + time + reason), then runs the real command in a
child process four times: ``--dry-run``, the first import, the same file again (nothing changes), and an
edited export (every hundredth record's quantity changed: 1 % updated).  Wall time, the child's own peak RSS
(``ru_maxrss``) and the load average before it are reported for each; the scratch database is dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ingestor.config import load_config
from ingestor.database.dimensions import sync_dimensions
from ingestor.database.schema import apply_schema
from tests.bench.common import admin, dsn_for

REPO = Path(__file__).resolve().parents[2]
PRESSES = [f"PRESS-0{i}" for i in range(1, 10)]
REASONS = ["SC-BURR", "SC-CRACK", "SC-DENT", "SC-DIM", "SC-SURF", "SC-MAT", "SC-SETUP"]
START = datetime(2025, 1, 1, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")


async def build(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await apply_schema(conn)
        keys = await sync_dimensions(conn, load_config(REPO / "config" / "demo.yaml").plant)
        # one production record per press and shift, 2025 (UTC times; the Berlin calendar is not needed here)
        await conn.execute("""
            INSERT INTO fact_production (equipment_id, date_id, shift_id, start_time, end_time,
                planned_production_time, operating_time, planned_parts, total_parts_produced, good_parts)
            SELECT e, to_char(t, 'YYYYMMDD')::int, $2, t, t + interval '8 hours', 28800000, 27000000, 4000, 3900, 3800
            FROM unnest($1::int[]) e,
                 generate_series('2025-01-01 00:00Z'::timestamptz, '2025-12-31 16:00Z', interval '8 hours') t""",
            [keys.equipment[p] for p in PRESSES], keys.shifts[("PLANT-1", "EARLY")])
    finally:
        await conn.close()


def write_file(path: Path, rows: int, edit_every: int = 0) -> None:
    """The station's export; with ``edit_every``, the same file with the quantity of every that many-th row
    changed (an edited export: those records are updated, the rest unchanged)."""
    rng = random.Random(12)
    step = 364 * 86400 / rows
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("Equipment;Time;Product;Qty;Reason;Cost;Comment\r\n")
        for i in range(rows):
            local = (START + timedelta(seconds=int(i * step) + 3600)).astimezone(BERLIN)
            # local time as the station writes it; in the hour that happens twice in October, with its offset
            twice = local.replace(fold=0).utcoffset() != local.replace(fold=1).utcoffset()
            when = local.isoformat() if twice else f"{local:%d.%m.%Y %H:%M:%S}"
            cost = rng.randint(1, 9999)
            qty = rng.randint(1, 40) + (1 if edit_every and i % edit_every == 0 else 0)
            out.write(f"{PRESSES[i % 9]};{when};BRACKET-{'AB'[i % 2]};{qty};{REASONS[i % 7]};"
                      f"{cost // 100},{cost % 100:02d};\r\n")


def run(args: list[str]) -> tuple[float, float, str]:
    """Wall time, this child's own peak RSS (``wait4``: RUSAGE_CHILDREN would be the largest child so far),
    and its output."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen([sys.executable, "-m", "ingestor", *args], stdout=out, stderr=err, text=True,
                                 env={**os.environ, "PYTHONPATH": str(REPO)})
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if child.returncode != 0:
        raise SystemExit(f"import failed ({child.returncode}):\n{stdout}\n{stderr[-3000:]}")
    return wall, usage.ru_maxrss / 1024, stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432/postgres")
    options = parser.parse_args()
    name = f"records_bench_{uuid.uuid4().hex[:8]}"
    asyncio.run(admin(options.server, f'CREATE DATABASE "{name}"'))
    dsn = dsn_for(options.server, name)
    try:
        asyncio.run(build(dsn))
        with tempfile.TemporaryDirectory() as scratch:
            path, edited = Path(scratch) / "scrap.csv", Path(scratch) / "scrap-edited.csv"
            write_file(path, options.rows)
            write_file(edited, options.rows, edit_every=100)
            size = path.stat().st_size / 1e6
            print(f"file: {options.rows:,} rows, {size:.0f} MB; server {options.server.rsplit('@', 1)[-1]}")
            # the dry run first, as one would before importing: what it counts is a million new records
            for label, file, extra in (("dry run", path, ["--dry-run"]), ("first import", path, []),
                                       ("same file again", path, []), ("edited (1 %)", edited, [])):
                load = os.getloadavg()[0]
                wall, rss, out = run(["import", "scrap", str(file), "--dsn", dsn, *extra])
                written = next(line for line in out.splitlines() if line.startswith("written:"))
                print(f"{label:16} {wall:7.1f} s  {options.rows / wall:9,.0f} rows/s  peak RSS {rss:5.0f} MB  "
                      f"load {load:.1f}  ({written[10:].strip()})")
    finally:
        asyncio.run(admin(options.server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
