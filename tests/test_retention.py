"""Retention (ingestor/database/retention.py, ingestor/service/retention.py) on every test tier (on the full
edition out of compressed chunks), with time-shifted readings: old readings leave fact_sensor_event and are in the archive exactly once, nothing newer is touched,
archive rows past the archive age are deleted, a run that dies halfway loses and duplicates nothing, only one
session runs at a time (advisory lock), COPY of new readings goes on while a batch or chunk transaction is
open, and the daemon's task reports runs and failures in its metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import structlog
from prometheus_client import REGISTRY
from pydantic import ValidationError
from structlog.testing import capture_logs

from ingestor.cli.check import summary
from ingestor.config import load_config
from ingestor.database.config import DatabaseConfig, RetentionConfig
from ingestor.database.retention import RETENTION_LOCK_KEY, run_retention
from ingestor.database.schema import Tier, apply_schema
from ingestor.service.retention import RetentionTask

from .conftest import REPO, Database
from .helpers import async_wait_until

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
RAW_CUTOFF = NOW - timedelta(days=90)       # 2026-03-17 12:00
ARCHIVE_CUTOFF = NOW - timedelta(days=730)  # 2024-06-15 12:00
DAY_OF_CUTOFF = datetime(2026, 3, 17, tzinfo=UTC)  # the 1-day chunk holding the cutoff starts here
ROW = "event_id, equipment_id, event_ts, parameter, value, unit_id, quality"


def settings(**overrides: Any) -> RetentionConfig:
    values: dict[str, Any] = {"raw": "90d", "archive": "2y", "batch_rows": 500, **overrides}
    return RetentionConfig.model_validate(values)


@pytest.fixture
async def conn(database: Database) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database.dsn)
    await apply_schema(connection)
    await connection.execute("TRUNCATE fact_sensor_event, fact_sensor_event_archive")
    try:
        yield connection
    finally:
        await connection.close()


async def fill(conn: asyncpg.Connection) -> None:
    """Readings of 3 machines every 10 minutes from 100 to 80 days before NOW (8 640 rows, 2/3 of them older
    than the cutoff), and archive rows on both sides of the archive age."""
    await conn.execute(
        "INSERT INTO fact_sensor_event (equipment_id, event_ts, parameter, value, unit_id, quality) "
        "SELECT e, t, 'temperature', extract(epoch FROM t) / 1000 + e, 1, 0 "
        "FROM generate_series($1::timestamptz, $2::timestamptz - interval '1 second', interval '10 minutes') t, "
        "generate_series(1, 3) e", NOW - timedelta(days=100), NOW - timedelta(days=80))
    await conn.execute(
        f"INSERT INTO fact_sensor_event_archive ({ROW}) "
        "SELECT -g, 1, $1::timestamptz + g * interval '1 day', 'old', g, NULL, 0 FROM generate_series(1, 60) g",
        ARCHIVE_CUTOFF - timedelta(days=30, hours=1))


def first_kept(database: Database) -> datetime:
    """Readings from here on stay in the hot table: the cutoff itself on PostgreSQL, the start of the chunk
    holding the cutoff on TimescaleDB (whole chunks only)."""
    return RAW_CUTOFF if database.server == "postgres" else DAY_OF_CUTOFF


async def rows(conn: asyncpg.Connection, table: str, where: str = "true", *args: Any) -> set[tuple[Any, ...]]:
    return {tuple(r) for r in await conn.fetch(f"SELECT {ROW} FROM {table} WHERE {where}", *args)}


async def test_old_readings_move_to_the_archive_and_old_archive_rows_go(conn: asyncpg.Connection,
                                                                        database: Database) -> None:
    await fill(conn)
    kept_from = first_kept(database)
    hot_before = await rows(conn, "fact_sensor_event")
    old = {r for r in hot_before if r[2] < kept_from}
    archive_kept = await rows(conn, "fact_sensor_event_archive", "event_ts >= $1", ARCHIVE_CUTOFF)
    assert old and len(old) < len(hot_before) and archive_kept
    if database.tier is Tier.TIMESCALEDB_FULL:  # archive out of compressed chunks: every chunk compressed first
        compressed = await conn.fetchval(
            "SELECT count(compress_chunk(c)) FROM show_chunks('fact_sensor_event') c")
        assert compressed == 21 and await conn.fetchval(
            "SELECT bool_and(is_compressed) FROM timescaledb_information.chunks "
            "WHERE hypertable_name = 'fact_sensor_event'")

    report = await run_retention(conn, settings(), now=NOW)

    assert report.ran and report.archived == len(old)
    assert await rows(conn, "fact_sensor_event") == hot_before - old  # nothing newer touched
    archived = await conn.fetch(f"SELECT {ROW} FROM fact_sensor_event_archive WHERE event_id >= 0")
    assert len(archived) == len(old) and {tuple(r) for r in archived} == old  # each exactly once, same values
    assert await rows(conn, "fact_sensor_event_archive", "event_id < 0") == archive_kept
    assert report.deleted == 30
    if database.server == "postgres":
        assert report.batches > len(old) // 500 and report.chunks_dropped == 0
    else:
        assert report.chunks_dropped == 10  # 2026-03-07 .. 03-16; the chunk of 03-17 holds newer readings
        assert not await conn.fetchval(
            "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'fact_sensor_event' "
            "AND range_end <= $1", DAY_OF_CUTOFF)

    again = await run_retention(conn, settings(), now=NOW)
    assert (again.archived, again.deleted, again.chunks_dropped) == (0, 0, 0)


async def test_a_run_that_dies_halfway_keeps_every_reading_exactly_once(conn: asyncpg.Connection,
                                                                         database: Database) -> None:
    await fill(conn)
    everything = await rows(conn, "fact_sensor_event")
    calls = 0

    async def die_in_third(what: str) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("killed")

    committed: list[int] = []
    with pytest.raises(RuntimeError, match="killed"):
        await run_retention(conn, settings(archive=None), now=NOW, inside=die_in_third,
                            on_progress=lambda report: committed.append(report.archived))
    hot = await rows(conn, "fact_sensor_event")
    archived = await conn.fetch(f"SELECT {ROW} FROM fact_sensor_event_archive WHERE event_id >= 0")
    assert len(committed) == 2 and len(archived) == committed[-1] > 0  # what the two commits moved, no more
    assert any(r[2] < first_kept(database) for r in hot), "the third batch rolled back"
    assert len(hot) + len(archived) == len(everything)
    assert hot | {tuple(r) for r in archived} == everything
    assert not await conn.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = "
                                   "pg_backend_pid()"), "the retention lock is released after a failure"

    await run_retention(conn, settings(archive=None), now=NOW)
    hot = await rows(conn, "fact_sensor_event")
    archived = await conn.fetch(f"SELECT {ROW} FROM fact_sensor_event_archive WHERE event_id >= 0")
    assert hot == {r for r in everything if r[2] >= first_kept(database)}
    assert len(archived) == len(everything) - len(hot) and hot | {tuple(r) for r in archived} == everything


async def test_a_cancelled_run_rolls_back_its_batch_and_releases_the_lock(database: Database) -> None:
    conn = await asyncpg.connect(database.dsn)
    await apply_schema(conn)
    await conn.execute("TRUNCATE fact_sensor_event, fact_sensor_event_archive")
    await fill(conn)
    total = await conn.fetchval("SELECT count(*) FROM fact_sensor_event")
    inside = asyncio.Event()

    async def stall(what: str) -> None:
        inside.set()
        await asyncio.Event().wait()

    job = asyncio.create_task(run_retention(conn, settings(), now=NOW, inside=stall))
    await asyncio.wait_for(inside.wait(), 30)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    assert conn.is_closed()
    other = await asyncpg.connect(database.dsn)
    try:
        await async_wait_until(lambda: other.fetchval("SELECT pg_try_advisory_lock($1)", RETENTION_LOCK_KEY), 10,
                               "the retention lock free again")
        assert await other.fetchval("SELECT count(*) FROM fact_sensor_event") == total
        assert not await other.fetchval("SELECT count(*) FROM fact_sensor_event_archive WHERE event_id >= 0")
    finally:
        await other.close()


async def test_only_one_session_runs_retention(conn: asyncpg.Connection, database: Database) -> None:
    await fill(conn)
    assert RETENTION_LOCK_KEY == 5928237141146749263, "the key docs/schema.md gives to operators"
    other = await asyncpg.connect(database.dsn)
    try:
        await other.execute("SELECT pg_advisory_lock($1)", RETENTION_LOCK_KEY)
        blocked = await run_retention(conn, settings(), now=NOW)
        assert not blocked.ran and blocked.archived == 0
        assert not await conn.fetchval("SELECT count(*) FROM fact_sensor_event_archive WHERE event_id >= 0")
        await other.execute("SELECT pg_advisory_unlock($1)", RETENTION_LOCK_KEY)

        old = await conn.fetchval("SELECT count(*) FROM fact_sensor_event WHERE event_ts < $1", first_kept(database))
        first_batch = asyncio.Event()
        release = asyncio.Event()

        async def hold(what: str) -> None:  # the first job stays inside its first batch until the second tried
            first_batch.set()
            await release.wait()

        job1 = asyncio.create_task(run_retention(conn, settings(), now=NOW, inside=hold))
        await asyncio.wait_for(first_batch.wait(), 30)
        second = await run_retention(other, settings(), now=NOW)
        release.set()
        first = await job1
        assert first.ran and not second.ran
        assert first.archived == old
        assert await conn.fetchval("SELECT count(*) = count(DISTINCT event_id) FROM fact_sensor_event_archive")
    finally:
        await other.close()


async def test_copy_goes_on_while_a_batch_or_chunk_is_moved(conn: asyncpg.Connection, database: Database) -> None:
    await fill(conn)
    writer = await asyncpg.connect(database.dsn)
    copied: list[float] = []

    async def ingest_meanwhile(what: str) -> None:
        # The retention transaction is open (rows moved, chunk dropped, not committed): the writer's binary
        # COPY of current readings must not wait for it.
        if copied:
            return
        records = [(9, NOW + timedelta(seconds=i), "pressure", float(i), None, 0) for i in range(1000)]
        started = asyncio.get_running_loop().time()
        await asyncio.wait_for(writer.copy_records_to_table(
            "fact_sensor_event", records=records,
            columns=["equipment_id", "event_ts", "parameter", "value", "unit_id", "quality"]), 10)
        copied.append(asyncio.get_running_loop().time() - started)

    try:
        report = await run_retention(conn, settings(), now=NOW, inside=ingest_meanwhile)
    finally:
        await writer.close()
    assert copied and report.archived > 0
    assert await conn.fetchval("SELECT count(*) FROM fact_sensor_event WHERE equipment_id = 9") == 1000


async def test_the_daemon_task_counts_runs_and_reports_a_failure_once(conn: asyncpg.Connection,
                                                                      database: Database) -> None:
    await conn.execute(
        "INSERT INTO fact_sensor_event (equipment_id, event_ts, parameter, value) "
        "SELECT 1, now() - interval '200 days' + g * interval '1 minute', 'p', g FROM generate_series(1, 100) g")
    config = DatabaseConfig(url=database.dsn, retention=settings(lock_timeout="200ms"))
    task = RetentionTask(config, database.dsn, asyncio.Event())

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    archived_before = sample("ingestor_retention_rows_total", action="archived")
    errors_before = sample("ingestor_retention_runs_total", result="error")
    locker = await asyncpg.connect(database.dsn)
    structlog.reset_defaults()
    with capture_logs() as logs:
        try:
            async with locker.transaction():
                await locker.execute("LOCK TABLE fact_sensor_event IN ACCESS EXCLUSIVE MODE")
                for _ in range(2):
                    assert await task.run_once(conn) is None
                failing = sample("ingestor_retention_failing"), task.last_error
        finally:
            await locker.close()
        report = await task.run_once(conn)
    task_error = "canceling statement due to lock timeout (a batch waited longer than " \
                 "database.retention.lock_timeout, 0.2 s, for a lock; what was done stays done)"
    assert failing == (1, task_error)
    assert REGISTRY.get_sample_value("ingestor_retention_last_error_info", {"error": task_error}) == 1
    assert sample("ingestor_retention_runs_total", result="error") == errors_before + 2
    failed = [(e["log_level"], e["error"]) for e in logs if e["event"].startswith("retention run failed")]
    assert failed == [("warning", task_error), ("debug", task_error)], "once, repeats at debug"
    assert [e["event"] for e in logs if e["log_level"] == "info"] == ["retention recovered", "retention run"]
    run_line = next(e for e in logs if e["event"] == "retention run")
    assert (run_line["archived"], run_line["deleted"], run_line["tier"]) == (100, 0, str(report and report.tier))

    assert report is not None and report.archived == 100
    assert sample("ingestor_retention_rows_total", action="archived") == archived_before + 100
    assert sample("ingestor_retention_failing") == 0
    assert sample("ingestor_retention_last_success_timestamp_seconds") > 0
    assert task.last_error is None


def test_retention_settings_are_checked_at_load() -> None:
    parsed = RetentionConfig.model_validate({"raw": "90d", "archive": "2y", "interval": "6h"})
    assert (parsed.raw, parsed.archive, parsed.interval) == (90 * 86400, 730 * 86400, 6 * 3600)
    assert not RetentionConfig().enabled and DatabaseConfig().retention == RetentionConfig()
    for values, message in (
        ({"raw": 90}, "must be at least 1d (a bare number is seconds: write 90d"),
        ({"raw": "90d", "archive": "30d"}, "archive (30d) must be longer than raw (90d)"),
        ({"archive": "2y"}, "archive needs raw"),
        ({"raw": "90 days"}, "expected a duration"),
        ({"raw": "90d", "batch_rows": 10}, "greater than or equal to 100"),
        ({"raw": "90d", "keep": "1y"}, "Extra inputs are not permitted"),
    ):
        with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
            RetentionConfig.model_validate(values)


def test_check_config_says_what_retention_does(tmp_path: Path) -> None:
    example = (REPO / "config" / "generate-demo.yaml").read_text()
    path = tmp_path / "config.yaml"
    path.write_text(example.replace("    sensor_5min_avg: 1m\n",
                                    "    sensor_5min_avg: 1m\n  retention: {raw: 90d, archive: 2y, interval: 6h}\n", 1))
    assert "  retention:  readings archived at 90 days, deleted at 730 days; a run every 21600 s" in summary(
        load_config(path), path)
    assert "  retention:  off (every reading stays in fact_sensor_event)" in summary(
        load_config(REPO / "config" / "generate-demo.yaml"), path)
