"""What only full TimescaleDB has, on the real full edition (127.0.0.1:5434, built by
``deploy/dev/timescaledb.sh --source``): compression and its policy, the continuous aggregate and its refresh
policy, the writer's binary COPY into compressed chunks (a store-and-forward backlog landing late), and
``archive_old_sensor_data()`` moving rows out of compressed chunks.

The policies are run with ``CALL run_job(id)``, as TimescaleDB's scheduler would run them: on the build used here
the scheduler's own runs do their work and then end as Failed (shared/vendor/README.md), and a test must not wait
for a schedule anyway.  Without a full edition this module is one skipped test that says why
(tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from structlog.testing import capture_logs

from ingestor.contract import Reading
from ingestor.database.commit import commit_batches
from ingestor.database.copy_format import RowEncoder
from ingestor.database.jobs import read_jobs
from ingestor.database.schema import Tier, detect_tier
from ingestor.database.watermark import claim_spool
from ingestor.service.jobs import JOB_FAILING, JOBS_FAILING, JobMonitor

from .conftest import FULL_TIER, FULL_TIER_SKIP_REASON, Database, _create_database, _drop_database
from .helpers import async_wait_until, demo_plant

if not FULL_TIER:
    pytest.skip(FULL_TIER_SKIP_REASON, allow_module_level=True)


@pytest.fixture(scope="module")
def full() -> Iterator[Database]:
    db = _create_database("timescaledb_full", __name__)
    yield db
    _drop_database(db)


@pytest.fixture
async def conn(full: Database) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(full.dsn, timeout=10)
    try:
        if await c.fetchval("SELECT to_regclass('schema_version')") is None:
            await demo_plant(c)
        yield c
    finally:
        await c.close()


async def _job(conn: asyncpg.Connection, proc: str) -> asyncpg.Record:
    rows = await conn.fetch("SELECT * FROM timescaledb_information.jobs WHERE proc_name = $1", proc)
    assert len(rows) == 1, rows
    return rows[0]


async def test_compression_and_the_continuous_aggregate_have_their_policies(conn: asyncpg.Connection) -> None:
    assert await detect_tier(conn) is Tier.TIMESCALEDB_FULL
    settings = {r["attname"]: r for r in await conn.fetch(
        "SELECT attname, segmentby_column_index, orderby_column_index, orderby_asc "
        "FROM timescaledb_information.compression_settings WHERE hypertable_name = 'fact_sensor_event'")}
    assert settings["equipment_id"]["segmentby_column_index"] == 1
    assert settings["parameter"]["orderby_column_index"] == 1 and settings["parameter"]["orderby_asc"]
    assert settings["event_ts"]["orderby_column_index"] == 2 and not settings["event_ts"]["orderby_asc"]

    compression = await _job(conn, "policy_compression")
    assert compression["hypertable_name"] == "fact_sensor_event" and compression["scheduled"]
    assert await conn.fetchval("SELECT ($1::jsonb ->> 'compress_after')::interval",
                               compression["config"]) == timedelta(days=7)

    refresh = await _job(conn, "policy_refresh_continuous_aggregate")
    assert refresh["scheduled"] and refresh["schedule_interval"] == timedelta(minutes=5)
    offsets = await conn.fetchrow(
        "SELECT ($1::jsonb ->> 'start_offset')::interval AS start_offset, "
        "($1::jsonb ->> 'end_offset')::interval AS end_offset", refresh["config"])
    assert (offsets["start_offset"], offsets["end_offset"]) == (timedelta(days=7), timedelta(minutes=5))
    view = await conn.fetchrow(
        "SELECT materialized_only, compression_enabled FROM timescaledb_information.continuous_aggregates "
        "WHERE view_name = 'sensor_5min_avg'")
    assert view["materialized_only"] is False  # real-time aggregation: the newest buckets show at once


def _readings(start: datetime, count: int, parameter: str, value: float) -> list[Reading]:
    base = int(start.timestamp() * 1_000_000)
    return [Reading("PRESS-01", parameter, value + i, base + i * 1_000_000, "degC") for i in range(count)]


async def _copy(conn: asyncpg.Connection, encoder: RowEncoder, spool_id: str, seq: int,
                readings: list[Reading]) -> int:
    """What the daemon's writer does with a spool batch: binary COPY and the watermark in one transaction."""
    rows, count, refused = encoder.encode(readings)
    assert not refused
    committed = await commit_batches(conn, spool_id=spool_id, instance_id="test-full", rows=[rows],
                                     row_count=count, dead=[], last_seq=seq)
    assert not committed.dead_letters
    return committed.written


async def _chunks(conn: asyncpg.Connection) -> dict[datetime, bool]:
    return {r["range_start"]: r["is_compressed"] for r in await conn.fetch(
        "SELECT range_start, is_compressed FROM timescaledb_information.chunks "
        "WHERE hypertable_name = 'fact_sensor_event'")}


async def _bucket(conn: asyncpg.Connection, bucket: datetime, parameter: str) -> int | None:
    count: int | None = await conn.fetchval(
        "SELECT sample_count FROM sensor_5min_avg WHERE bucket = $1 AND parameter = $2", bucket, parameter)
    return count


async def test_backfill_copies_into_compressed_chunks_and_archive_moves_rows_out_of_them(
        conn: asyncpg.Connection) -> None:
    equipment = {r["equipment_code"]: r["equipment_id"] for r in await conn.fetch(
        "SELECT equipment_code, equipment_id FROM dim_equipment")}
    units = {r["unit_code"]: r["unit_id"] for r in await conn.fetch("SELECT unit_code, unit_id FROM dim_unit")}
    encoder = RowEncoder(equipment, units)
    spool_id = str(uuid.uuid4())
    await claim_spool(conn, spool_id, "test-full")
    now = datetime.now(UTC)
    # 5-minute buckets: one 10 days back (older than compress_after and than the aggregate's window), one 2 days
    # back (inside the window, not compressed)
    old = datetime.fromtimestamp((now - timedelta(days=10)).timestamp() // 300 * 300, UTC)
    recent = datetime.fromtimestamp((now - timedelta(days=2)).timestamp() // 300 * 300, UTC)

    assert await _copy(conn, encoder, spool_id, 1, _readings(old, 60, "full-old", 100.0)) == 60
    assert await _copy(conn, encoder, spool_id, 2, _readings(recent, 60, "full-recent", 10.0)) == 60

    # the compression policy compresses the chunk older than 7 days, and only that one
    compression = await _job(conn, "policy_compression")
    await conn.execute("CALL run_job($1)", compression["job_id"])
    chunks = await _chunks(conn)
    old_chunk = max(start for start in chunks if start <= old)
    recent_chunk = max(start for start in chunks if start <= recent)
    assert chunks[old_chunk] is True and chunks[recent_chunk] is False

    # the refresh policy materializes its window (7 days back to 5 minutes ago)
    refresh = await _job(conn, "policy_refresh_continuous_aggregate")
    await conn.execute("CALL run_job($1)", refresh["job_id"])
    assert await _bucket(conn, recent, "full-recent") == 60

    # a backlog lands late: the writer's COPY into the compressed chunk and into the recent one
    assert await _copy(conn, encoder, spool_id, 3, _readings(old + timedelta(seconds=60), 30, "full-old", 500.0)) == 30
    assert await _copy(conn, encoder, spool_id, 4,
                       _readings(recent + timedelta(seconds=60), 30, "full-recent", 50.0)) == 30
    assert await conn.fetchval("SELECT count(*) FROM fact_sensor_event WHERE parameter = 'full-old'") == 90
    assert await conn.fetchval(
        "SELECT count(*) FROM fact_sensor_event WHERE parameter = 'full-old' AND value >= 500") == 30
    assert (await _chunks(conn))[old_chunk] is True  # still a compressed chunk (partially, until recompressed)
    await conn.execute("CALL run_job($1)", compression["job_id"])  # the policy recompresses it
    assert await conn.fetchval("SELECT count(*) FROM fact_sensor_event WHERE parameter = 'full-old'") == 90

    # the late rows inside the window are aggregated by the next policy run ...
    await conn.execute("CALL run_job($1)", refresh["job_id"])
    assert await _bucket(conn, recent, "full-recent") == 90
    # ... those older than its 7 days are not (docs/schema.md): a refresh over their range adds them
    assert await _bucket(conn, old, "full-old") is None
    await conn.execute("CALL refresh_continuous_aggregate('sensor_5min_avg', $1::timestamptz, $2::timestamptz)",
                       old, old + timedelta(minutes=5))
    assert await _bucket(conn, old, "full-old") == 90

    # archiving moves the rows out of the compressed chunk, and nothing newer
    archived = await conn.fetchval("SELECT archive_old_sensor_data(INTERVAL '9 days')")
    assert archived == 90
    assert await conn.fetchval("SELECT count(*) FROM fact_sensor_event WHERE parameter = 'full-old'") == 0
    assert await conn.fetchval(
        "SELECT count(*) FROM fact_sensor_event_archive WHERE parameter = 'full-old'") == 90
    assert await conn.fetchval(
        "SELECT sum(value) FROM fact_sensor_event_archive WHERE parameter = 'full-old'") == (
            sum(100.0 + i for i in range(60)) + sum(500.0 + i for i in range(30)))
    assert await conn.fetchval("SELECT count(*) FROM fact_sensor_event WHERE parameter = 'full-recent'") == 90


async def test_the_job_monitor_reads_real_failures_and_logs_each_change_once(full: Database,
                                                                            conn: asyncpg.Connection) -> None:
    """A user-defined action that raises, run by TimescaleDB's scheduler: the monitor reports it with its error,
    logs it once over several checks, and logs the recovery (made up from the real reading: on this build no
    scheduled run can succeed) and the job's removal."""
    await conn.execute("""
        CREATE OR REPLACE PROCEDURE test_failing_action(job_id int, config jsonb) LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'test action refuses to run (job %)', job_id; END $$""")
    job_id = await conn.fetchval(
        "SELECT add_job('test_failing_action', INTERVAL '1 hour', initial_start => now())")
    monitor = JobMonitor(full.dsn, interval=1, connect_timeout=10, schema_ready=asyncio.Event())

    async def failing() -> bool:
        jobs = await read_jobs(conn)
        assert jobs is not None
        return any(j.job_id == job_id and j.failing and j.last_error for j in jobs)
    await async_wait_until(failing, 30, "the scheduler's failed run of the test action")

    with capture_logs() as logs:
        for _ in range(3):
            monitor.update(await read_jobs(conn))
        job = monitor.jobs[job_id]
        assert job.proc == "public.test_failing_action" and job.total_failures >= 1
        assert job.last_error == f"test action refuses to run (job {job_id})" and job.last_error_code == "P0001"
        failing_lines = [e for e in logs if e["event"] == "TimescaleDB background job failing"
                         and e["job_id"] == job_id]
        assert len(failing_lines) == 1 and failing_lines[0]["log_level"] == "warning"
        assert failing_lines[0]["error"] == job.last_error
        status = monitor.status()
        assert status["timescaledb"] is True
        assert {"job_id": job_id, "proc": "public.test_failing_action",
                "last_error": job.last_error} == {k: v for k, v in next(
                    f for f in status["failing"] if f["job_id"] == job_id).items()
                    if k in ("job_id", "proc", "last_error")}
        assert any(reason.startswith(f"TimescaleDB job {job_id} (public.test_failing_action) failing: test action")
                   for reason in monitor.degraded())
        assert JOB_FAILING.labels(str(job_id), job.proc)._value.get() == 1
        failing_now = JOBS_FAILING._value.get()

        recovered = [dataclasses.replace(j, last_run_status="Success") if j.job_id == job_id else j
                     for j in await read_jobs(conn) or []]
        monitor.update(recovered)
        monitor.update(recovered)
        assert [e["job_id"] for e in logs if e["event"] == "TimescaleDB background job recovered"] == [job_id]
        assert JOB_FAILING.labels(str(job_id), job.proc)._value.get() == 0
        assert JOBS_FAILING._value.get() == failing_now - 1
        assert job_id not in {f["job_id"] for f in monitor.status()["failing"]}

        monitor.update(recovered)
        await conn.execute("SELECT delete_job($1)", job_id)
        monitor.update(await read_jobs(conn))
        assert job_id not in monitor.jobs
    assert ("ingestor_timescaledb_job_failing", str(job_id)) not in {
        (m.name, s.labels.get("job_id")) for m in JOB_FAILING.collect() for s in m.samples}
