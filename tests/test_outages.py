"""The daemon while its database is down, against a private PostgreSQL server that the tests stop and start.

- a shutdown during the outage exits promptly (the spool is durable; waiting out ``shutdown_timeout`` gains
  nothing) and says how many readings wait in the spool; the next start writes them;
- after a long outage the writer is back within seconds of the database, not after a back-off of half a minute;
- the derivation says once that the database is unavailable (no traceback per attempt), and carries on after.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import structlog
import yaml
from structlog.testing import capture_logs

from ingestor.config import IngestorConfig
from ingestor.daemon.runtime import Daemon
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


async def test_a_shutdown_during_an_outage_exits_promptly_and_the_next_start_writes_the_spool(
        server: PrivatePostgres, database: str, tmp_path: Path) -> None:
    config = daemon_config("shutdown", database, tmp_path / "spool")
    daemon = Daemon(config, url=database)
    serving = asyncio.create_task(daemon.serve())
    try:
        await async_wait_until(lambda: daemon.writer.written > 0, 30, "the first commit")
        await asyncio.to_thread(server.stop, "immediate")
        await async_wait_until(lambda: not daemon.writer.connected and daemon.writer.failures >= 2,
                               20, "the writer to find the database down")
        await async_wait_until(lambda: daemon.spool.spool.readings > 0, 10, "readings spooled")
        structlog.reset_defaults()
        with capture_logs() as logs:
            started = time.monotonic()
            daemon.stop()
            assert await asyncio.wait_for(serving, 60) == 0
            took = time.monotonic() - started
    finally:
        if not serving.done():
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)
    print(f"shutdown during the outage took {took:.2f} s (shutdown_timeout 30 s)")
    assert took < 5.0, f"the shutdown waited {took:.1f} s for a database that is down"
    stopped = next(e for e in logs if e["event"] == "ingestor stopped")
    waiting = stopped["readings_left_in_spool"]
    assert waiting > 0
    said = [e for e in logs if e.get("readings_in_spool") == waiting and e["log_level"] == "warning"]
    assert said and "next start" in said[0]["event"], [e["event"] for e in logs]
    assert not [e for e in logs if e["event"].startswith("the database did not take the whole spool")]

    await asyncio.to_thread(server.start)
    again = Daemon(daemon_config("shutdown", database, tmp_path / "spool"), url=database)
    again.supervisors = []  # no new readings: only what waited in the spool
    serving = asyncio.create_task(again.serve())
    try:
        await async_wait_until(lambda: again.spool.spool.readings == 0, 30, "the spool to drain")
        again.stop()
        assert await asyncio.wait_for(serving, 30) == 0
    finally:
        if not serving.done():
            serving.cancel()
    assert again.writer.written == waiting
    assert await _count(database) == daemon.writer.written + waiting


async def test_a_shutdown_with_an_empty_spool_during_an_outage_is_prompt(
        server: PrivatePostgres, database: str, tmp_path: Path) -> None:
    config = daemon_config("empty", database, tmp_path / "spool")
    daemon = Daemon(config, url=database)
    daemon.supervisors = []  # nothing to write at all
    serving = asyncio.create_task(daemon.serve())
    try:
        await async_wait_until(lambda: daemon.writer.connected, 30, "the writer to connect")
        await asyncio.to_thread(server.stop, "immediate")
        await async_wait_until(lambda: daemon.writer.failures >= 2, 20,
                               "the writer to find the database down")
        started = time.monotonic()
        daemon.stop()
        assert await asyncio.wait_for(serving, 60) == 0
        took = time.monotonic() - started
    finally:
        if not serving.done():
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)
    print(f"shutdown with an empty spool during the outage took {took:.2f} s")
    assert took < 5.0


async def test_the_writer_is_back_within_seconds_of_the_database_after_a_long_outage(
        server: PrivatePostgres, database: str, tmp_path: Path) -> None:
    config = daemon_config("recovery", database, tmp_path / "spool")  # the default database.reconnect
    daemon = Daemon(config, url=database)
    serving = asyncio.create_task(daemon.serve())
    try:
        await async_wait_until(lambda: daemon.writer.written > 0, 30, "the first commit")
        await asyncio.to_thread(server.stop, "immediate")
        # six failed attempts: the back-off has grown for half a minute of outage by then
        await async_wait_until(lambda: daemon.writer.failures >= 6, 60, "a long outage")
        await asyncio.to_thread(server.start)
        back = time.monotonic()
        await async_wait_until(lambda: daemon.writer.connected, 60, "the writer to reconnect")
        took = time.monotonic() - back
        print(f"the writer reconnected {took:.2f} s after the database was back")
        assert took < 8.0, f"the writer waited {took:.1f} s after the database was back"
        spooled = daemon.spool.spool.readings
        await async_wait_until(lambda: daemon.spool.spool.readings < max(spooled, 200), 30,
                               "the backlog to drain")
        daemon.stop()
        assert await asyncio.wait_for(serving, 60) == 0
    finally:
        if not serving.done():
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)


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
            await async_wait_until(lambda: len(logs) >= 3, 30, "several attempts")
            await asyncio.to_thread(server.start)
            await async_wait_until(lambda: task.runs >= 1, 30, "a derivation run after the outage")
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
    assert not [e for e in logs if "exc_info" in e], [e["event"] for e in logs if "exc_info" in e]
    loud = [e for e in logs if e["log_level"] in ("warning", "error")]
    assert len(loud) == 1, [(e["event"], e["log_level"]) for e in logs]
    assert "database" in loud[0]["event"] and "cannot connect to" in loud[0]["error"]
    assert any(e["event"] == "derivation reconnected" and e["log_level"] == "info" for e in logs)
