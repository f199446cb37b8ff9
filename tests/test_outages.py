"""The daemon while its database is down, against a private PostgreSQL server that the tests stop and start.

- the derivation says once that the database is unavailable (no traceback per attempt), and carries on after.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import structlog
import yaml
from structlog.testing import capture_logs

from ingestor.config import IngestorConfig
from ingestor.database.dimensions import sync_dimensions
from ingestor.database.schema import apply_schema
from ingestor.derive.task import DerivationTask

from .helpers import async_wait_until
from .private_postgres import PrivatePostgres

pytestmark = pytest.mark.slow

CONFIG = """
instance_id: outage-{name}
database:
  url: {dsn}
  refresh: {{view_oee_daily: 0, view_reliability_summary: 0, sensor_5min_avg: 0}}
derivation: {{interval: 200ms, settle: 0s, check_data_quality: 0}}
plant:
  sites:
    - code: S1
      name: Site 1
      areas:
        - code: A1
          name: Area 1
          work_centers:
            - code: W1
              name: Work center 1
              equipment:
                - code: M1
                  name: Machine 1
                  roles:
                    part_counter: {{parameter: parts, bits: 32}}
pipeline:
  batch_rows: 100
  batch_age: 50ms
  spool_dir: {spool}
  shutdown_timeout: 30s
http: {{enabled: false}}
connectors:
  - type: generate
    name: gen
    interval: 20ms
    tags:
      - {{equipment: M1, parameter: parts, signal: counter, rate: 50}}
"""


def daemon_config(name: str, dsn: str, spool: Path, **overrides: Any) -> IngestorConfig:
    data = yaml.safe_load(CONFIG.format(name=name, dsn=dsn, spool=spool))
    for section, values in overrides.items():
        data[section] = {**data.get(section, {}), **values}
    return IngestorConfig.model_validate(data)


@pytest.fixture(scope="module")
def server() -> Iterator[PrivatePostgres]:
    pg = PrivatePostgres()
    pg.start()
    try:
        yield pg
    finally:
        pg.close()


@pytest.fixture
def database(server: PrivatePostgres, request: pytest.FixtureRequest) -> Iterator[str]:
    """A database of this test's own on the private server, which is running again after the test."""
    name = f"t_{request.node.name[5:35]}"
    asyncio.run(_admin(server.dsn(), f'CREATE DATABASE "{name}"'))
    yield server.dsn(name)
    if not server.running():
        server.start()
    asyncio.run(_admin(server.dsn(), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _admin(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _count(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM fact_sensor_event"))
    finally:
        await conn.close()


async def test_the_derivation_says_once_that_the_database_is_down_and_carries_on_after(
        server: PrivatePostgres, database: str, tmp_path: Path) -> None:
    config = daemon_config("derive", database, tmp_path / "spool",
                           database={"reconnect": {"initial": "50ms", "max": "100ms"}})
    conn = await asyncpg.connect(database)
    try:
        await apply_schema(conn)
        await sync_dimensions(conn, config.plant)
    finally:
        await conn.close()
    await asyncio.to_thread(server.stop, "fast")
    ready = asyncio.Event()
    ready.set()
    task = DerivationTask(config.plant, config.derivation, config.database, config.instance_id, database, ready)
    structlog.reset_defaults()
    with capture_logs() as logs:
        running = asyncio.create_task(task.run())
        try:
            await async_wait_until(lambda: asyncio.sleep(0, len(logs) >= 3), 30, "several attempts")
            await asyncio.to_thread(server.start)
            await async_wait_until(lambda: asyncio.sleep(0, task.runs >= 1), 30, "a derivation run after the outage")
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
    assert not [e for e in logs if "exc_info" in e], [e["event"] for e in logs if "exc_info" in e]
    loud = [e for e in logs if e["log_level"] in ("warning", "error")]
    assert len(loud) == 1, [(e["event"], e["log_level"]) for e in logs]
    assert "database" in loud[0]["event"] and "cannot connect to" in loud[0]["error"]
    assert any(e["event"] == "derivation reconnected" and e["log_level"] == "info" for e in logs)
