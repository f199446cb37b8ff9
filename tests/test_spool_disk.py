"""The spool on a file system smaller than ``spool_max_bytes``: a full disk is a full spool.

A real ``ingestor run`` with its spool on a small tmpfs mounted for the test (the tests run as root; mounting
is the honest way to get a small file system, no LD_PRELOAD or RLIMIT tricks), the database down (its
database does not exist yet: every connect fails), readings generated faster than a small disk holds.  The
daemon must stop accepting (back-pressure), stay up, start again on the full disk, and resume by itself when
the database returns and the writer frees space.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.bench.common import scrape

from .conftest import REPO, SERVERS, _admin, dsn_for
from .helpers import free_port, http_get, wait_until

MiB = 2**20
DISK = 8 * MiB

CONFIG = """
instance_id: disk-full
database: {{url: "{dsn}", reconnect: {{initial: 200ms, max: 500ms}},
           refresh: {{view_oee_daily: 0, view_reliability_summary: 0, sensor_5min_avg: 0}}}}
derivation: {{enabled: false}}
plant:
  sites:
    - code: S
      name: S
      timezone: UTC
      areas:
        - code: A
          name: A
          work_centers:
            - code: W
              name: W
              equipment:
                - {{code: M1, name: Machine 1}}
connectors:
  - type: generate
    name: gen
    interval: 10ms
    tags: [{tags}]
pipeline: {{spool_dir: "{spool}", spool_max_bytes: 1GiB, batch_rows: 2000, batch_age: 100ms,
           queue_size: 20000, shutdown_timeout: 1s}}
http: {{listen: "127.0.0.1:{port}"}}
logging: {{format: json}}
"""


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "spool"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK}", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def free_bytes(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "INGESTOR_DATABASE_URL"}
    with log.open("a") as out:
        return subprocess.Popen([sys.executable, "-m", "ingestor", "run", "-c", str(config)], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait(5)


def count_rows(dsn: str) -> int:
    async def count() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM fact_sensor_event"))
        finally:
            await conn.close()
    try:
        return asyncio.run(count())
    except (OSError, asyncpg.PostgresError):
        return 0


def test_a_full_disk_is_a_full_spool(small_disk: Path, tmp_path: Path) -> None:
    name = f"t_disk_full_{uuid.uuid4().hex[:6]}"
    dsn = dsn_for(SERVERS["postgres"], name)  # no such database yet: the database is down
    port = free_port()
    tags = ", ".join(f"{{equipment: M1, parameter: p{i}, unit: degC, signal: ramp}}" for i in range(200))
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(dsn=dsn, tags=tags, spool=small_disk, port=port))
    log = tmp_path / "daemon.log"
    process = start(config, log)
    try:
        wait_until(lambda: http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200, 30, "/healthz")
        assert "smaller than spool_max_bytes" in log.read_text()  # warned at startup

        # the spool stops at the disk's size less a reserve: back-pressure, no crash
        wait_until(lambda: scrape(port).get("ingestor_queue_full_waits_total", 0) > 0, 60,
                   "back-pressure from the full disk")
        assert process.poll() is None, log.read_text()[-3000:]
        metrics = scrape(port)
        assert 0 < metrics["ingestor_spool_free_bytes"] == pytest.approx(free_bytes(small_disk), rel=0.5)
        # it filled the disk (batches; the WAL takes up to 4 MiB of the rest) and stopped short of its end
        assert free_bytes(small_disk) > 0 and metrics["ingestor_spool_bytes"] > DISK / 4
        spooled = metrics["ingestor_readings_spooled_total"]
        assert "database or disk is full" not in log.read_text()

        # restarted on the full disk, it comes up again (it used to crash-loop)
        assert stop(process) == 0, log.read_text()[-3000:]
        process = start(config, log)
        wait_until(lambda: http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200, 30, "/healthz after restart")
        wait_until(lambda: scrape(port).get("ingestor_queue_full_waits_total", 0) > 0, 60,
                   "back-pressure after the restart")
        assert process.poll() is None, log.read_text()[-3000:]

        # the database returns: the writer drains the spool, and the spooler resumes by itself
        asyncio.run(_admin(SERVERS["postgres"], f'CREATE DATABASE "{name}"'))
        wait_until(lambda: count_rows(dsn) > spooled + 50_000, 120, "more readings written than the disk holds")
        wait_until(lambda: scrape(port).get("ingestor_readings_spooled_total", 0) > 50_000, 30,
                   "the spooler accepting again")
        assert process.poll() is None
        assert stop(process) == 0, log.read_text()[-3000:]
        assert "database or disk is full" not in log.read_text()
    finally:
        stop(process)
        asyncio.run(_admin(SERVERS["postgres"], f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
