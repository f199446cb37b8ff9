"""`ingestor run` end to end: a real process, a real database, real HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg

from ingestor.database.schema import apply_schema

from .conftest import REPO, Database
from .helpers import free_port, http_get, run_on, wait_until

CONFIG = """
instance_id: test-daemon
database:
  url: {dsn}
  refresh: {{view_oee_daily: 1s, view_reliability_summary: 1s, sensor_5min_avg: 1s}}
  retention: {{raw: 30d, archive: 1y}}
plant:
  sites:
    - code: S1
      name: Site 1
      timezone: Europe/Berlin
      areas:
        - code: A1
          name: Area 1
          work_centers:
            - code: W1
              name: Work center 1
              equipment:
                - {{code: M1, name: Machine 1, theoretical_rate: 600}}
                - {{code: M2, name: Machine 2}}
connectors:
  - type: generate
    name: gen
    interval: 50ms
    tags:
      - {{equipment: M1, parameter: temperature, unit: degC, signal: sine, min: 20, max: 80, period: 10s}}
      - {{equipment: M1, parameter: parts_total, unit: pcs, signal: counter, rate: 10}}
      - {{equipment: M2, parameter: current, unit: A, signal: random_walk, min: 1, max: 5}}
pipeline:
  batch_rows: 50
  batch_age: 200ms
  spool_dir: {spool}
http:
  listen: 127.0.0.1:{port}
logging:
  format: json
"""


def _count(dsn: str, table: str = "fact_sensor_event") -> int:
    async def count() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
        finally:
            await conn.close()
    try:
        return asyncio.run(count())
    except asyncpg.UndefinedTableError:
        return 0


async def _old_readings(conn: asyncpg.Connection) -> None:
    """The schema, and 100 readings 40 days old that the daemon's first retention run moves to the archive."""
    await apply_schema(conn)
    await conn.execute("INSERT INTO fact_sensor_event (equipment_id, event_ts, parameter, value) "
                       "SELECT 1, now() - interval '40 days' + g * interval '1 second', 'old', g "
                       "FROM generate_series(1, 100) g")


def test_run_comes_up_writes_readings_serves_http_and_drains_on_sigterm(database: Database, tmp_path: Path) -> None:
    run_on(database.dsn, _old_readings)
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(dsn=database.dsn, port=port, spool=tmp_path / "spool"))
    log_path = tmp_path / "daemon.log"
    env = {k: v for k, v in os.environ.items() if k != "INGESTOR_DATABASE_URL"}
    with log_path.open("w") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "ingestor", "run", "-c", str(config)],
                                   cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200, 20, "/healthz")
        wait_until(lambda: _count(database.dsn) >= 20, 30, "readings in fact_sensor_event")
        # the daemon refreshes the materialized 5-minute averages on its schedule (1 s here)
        wait_until(lambda: _count(database.dsn, "sensor_5min_avg") >= 3, 30, "rows in sensor_5min_avg")
        status, body = http_get(f"http://127.0.0.1:{port}/readyz")
        assert status == 200, body
        ready = json.loads(body)
        assert ready["ready"] is True
        assert ready["connectors"]["gen"]["state"] == "connected"
        status, metrics = http_get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        written = [line for line in metrics.splitlines() if line.startswith("ingestor_readings_written_total ")]
        assert written and float(written[0].split()[1]) > 0
        assert 'ingestor_connector_state{connector="gen",state="connected"} 1.0' in metrics
        # the retention job's first run (at start) moved the old readings, and only them
        wait_until(lambda: _count(database.dsn, "fact_sensor_event_archive") == 100, 30, "old readings archived")
        status, metrics = http_get(f"http://127.0.0.1:{port}/metrics")
        assert 'ingestor_retention_rows_total{action="archived"} 100.0' in metrics
        assert 'ingestor_retention_runs_total{result="ok"} 1.0' in metrics
        assert http_get(f"http://127.0.0.1:{port}/nothing")[0] == 404
        # the operator page's view: each tag's last reading, as the pipeline accepted it
        status, body = http_get(f"http://127.0.0.1:{port}/api/status")
        assert status == 200, body
        tags = {(t["connector"], t["equipment"], t["parameter"]): t for t in json.loads(body)["tags"]}
        assert set(tags) == {("gen", "M1", "temperature"), ("gen", "M1", "parts_total"), ("gen", "M2", "current")}
        assert 20 <= tags["gen", "M1", "temperature"]["value"] <= 80

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    assert all("event" in line and "timestamp" in line for line in lines)
    stopped = [line for line in lines if line["event"] == "ingestor stopped"]
    assert stopped, log_path.read_text()
    final = stopped[0]
    # a graceful drain loses nothing: every accepted reading went through the spool into the table, once
    assert final["readings_dead_lettered"] == final["readings_dropped"] == final["readings_left_in_spool"] == 0
    assert final["readings_accepted"] == final["readings_spooled"] == final["readings_written"]
    assert final["readings_written"] == _count(database.dsn)
    assert not [line for line in lines if line.get("level") == "error"], log_path.read_text()
    runs = [line for line in lines if line["event"] == "retention run"]
    assert len(runs) == 1 and runs[0]["archived"] == 100 and runs[0]["deleted"] == 0
