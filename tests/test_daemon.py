"""`ingestor run` end to end: a real process, a real database, real HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg

from ingestor.database.schema import Tier, apply_schema

from .conftest import REPO, Database
from .helpers import free_port, http_get, run_on, wait_until

CONFIG = """
instance_id: test-daemon
database:
  url: {dsn}
  refresh: {{view_oee_daily: 1s, view_reliability_summary: 1s, sensor_5min_avg: 1s}}
  retention: {{raw: 30d, archive: 1y}}
  timescaledb_jobs_check: 1s
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


FAILING_ACTION = """
CREATE EXTENSION IF NOT EXISTS timescaledb;
CREATE PROCEDURE test_failing_action(job_id int, config jsonb) LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'test action refuses to run'; END $$;
SELECT add_job('test_failing_action', INTERVAL '1 hour', initial_start => now());
"""


def _readyz(port: int) -> dict[str, Any]:
    status, body = http_get(f"http://127.0.0.1:{port}/readyz")
    assert status == 200, body  # failing jobs leave the daemon ready (degraded)
    ready: dict[str, Any] = json.loads(body)
    return ready


def _jobs(port: int, kind: str, expected: str) -> list[dict[str, Any]]:
    """The jobs /readyz lists under ``kind`` (failing, unsupported), once one has ``expected`` in its error."""
    jobs: list[dict[str, Any]] = _readyz(port)["timescaledb_jobs"].get(kind) or []
    return jobs if any(expected in (job["last_error"] or "") for job in jobs) else []


def test_run_comes_up_writes_readings_serves_http_and_drains_on_sigterm(database: Database, tmp_path: Path) -> None:
    # On the full edition a background job that fails: a user-defined action that raises.  The Apache edition
    # may not add jobs; its own job-history retention job (job 3) fails at its first run, right after CREATE
    # EXTENSION, because that edition's licence refuses it (TimescaleDB 2.19): listed as unsupported, not failing.
    # Old readings for the retention job's first run.
    run_on(database.dsn, _old_readings)
    if database.tier is Tier.TIMESCALEDB_FULL:
        run_on(database.dsn, lambda conn: conn.execute(FAILING_ACTION))
    job: dict[str, Any] = {}  # the failing job /readyz shows (TimescaleDB tiers)
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
        # failing TimescaleDB jobs: listed with their error in /readyz (still ready), and as metrics
        if database.tier is Tier.POSTGRES:
            wait_until(lambda: _readyz(port)["timescaledb_jobs"]["checked_at"], 20, "a check of the job stats")
            assert _readyz(port)["timescaledb_jobs"]["timescaledb"] is False and _readyz(port)["degraded"] == []
        elif database.tier is Tier.TIMESCALEDB_APACHE:
            refused = wait_until(lambda: _jobs(port, "unsupported", "license"), 30, "job 3 refused in /readyz")
            assert [j["job_id"] for j in refused] == [3]
            ready = _readyz(port)
            assert ready["degraded"] == [] and ready["timescaledb_jobs"]["failing"] == []
            metrics = http_get(f"http://127.0.0.1:{port}/metrics")[1]
            assert 'ingestor_timescaledb_job_failing{job_id="3",' in metrics
            assert not [line for line in metrics.splitlines()
                        if line.startswith("ingestor_timescaledb_job_failing{") and not line.endswith(" 0.0")]
        else:
            expected = "test action refuses to run"
            failing = wait_until(lambda: _jobs(port, "failing", expected), 30, "the failing job in /readyz")
            job = next(j for j in failing if expected in j["last_error"])
            assert job["total_failures"] >= 1 and job["proc"]
            ready = _readyz(port)
            assert ready["ready"] is True
            assert any(f"TimescaleDB job {job['job_id']} ({job['proc']}) failing" in r for r in ready["degraded"])
            checked = ready["timescaledb_jobs"]["checked_at"]
            wait_until(lambda: _readyz(port)["timescaledb_jobs"]["checked_at"] > checked, 20, "another check")
            metrics = http_get(f"http://127.0.0.1:{port}/metrics")[1]
            assert (f'ingestor_timescaledb_job_failing{{job_id="{job["job_id"]}",proc="{job["proc"]}"}} 1.0'
                    in metrics)
            assert f'ingestor_timescaledb_job_failures{{job_id="{job["job_id"]}",proc="{job["proc"]}"}}' in metrics
            count = [line for line in metrics.splitlines() if line.startswith("ingestor_timescaledb_jobs_failing ")]
            assert count and float(count[0].split()[1]) >= 1
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
    warned = [line["job_id"] for line in lines if line["event"] == "TimescaleDB background job failing"]
    assert len(warned) == len(set(warned)), warned  # one warning per failing job, however many checks saw it
    if database.tier is Tier.TIMESCALEDB_FULL:
        assert next(line for line in lines if line["event"] == "TimescaleDB background job failing"
                    and line["job_id"] == job["job_id"])["error"] == job["last_error"]
    else:
        assert warned == []
    refused = [line for line in lines if "refused by the Apache edition" in line["event"]]
    assert [line["job_id"] for line in refused] == ([3] if database.tier is Tier.TIMESCALEDB_APACHE else [])
