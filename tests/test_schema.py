"""The analytics schema on plain PostgreSQL, TimescaleDB Apache and full TimescaleDB: what applying creates,
that applying again changes nothing, tiers and skips, versions, the audit trail, the views and their refresh.
What only the full edition has (compression, the continuous aggregate, their policies) is checked in
tests/test_timescaledb_full.py."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from ingestor.database.schema import (
    REFRESHABLE_VIEWS,
    ApplyReport,
    SchemaError,
    SchemaTooNew,
    Tier,
    apply_schema,
    detect_tier,
    refresh_view,
    runner,
    schema_status,
    views_to_refresh,
)
from ingestor.database.schema.migrations import load_migrations, parse

from .conftest import REPO, Database, dsn_for

TABLES = {
    "dim_site", "dim_area", "dim_work_center", "dim_equipment", "dim_product", "dim_downtime_reason",
    "dim_shift", "dim_unit", "fact_production", "fact_downtime", "fact_maintenance", "fact_scrap",
    "fact_sensor_event", "fact_sensor_event_archive", "audit_log", "schema_version", "system_metrics",
}
MATERIALIZED_VIEWS = {"view_oee_daily", "view_reliability_summary"}  # sensor_5min_avg is a view (0011)
FUNCTIONS = {"audit_trigger_func", "set_updated_at", "archive_old_sensor_data", "check_data_quality",
             "oee_ratios", "oee_by_shift", "reliability",
             "downtime_copy_is_planned", "downtime_reason_propagate_is_planned"}
DOCUMENT_INDEXES = {
    "idx_equipment_work_center", "idx_equipment_attributes", "idx_active_equipment",
    "idx_production_time_brin", "idx_production_equipment_time", "idx_downtime_time_brin",
    "idx_downtime_equipment_time", "idx_sensor_time_brin", "idx_sensor_equipment_param_time",
    "idx_audit_before_data", "idx_audit_after_data", "idx_unplanned_downtime", "idx_oee_daily_pk",
    "idx_reliability_summary_pk",
}
DIMENSIONS = ("dim_site", "dim_area", "dim_work_center", "dim_equipment", "dim_product",
              "dim_downtime_reason", "dim_shift", "dim_unit")

SNAPSHOT_QUERIES = {
    "relations": """
        SELECT c.relname, c.relkind::text, c.oid::bigint, c.xmin::text, c.relfilenode::bigint FROM pg_class c
        WHERE c.relnamespace = current_schema()::regnamespace ORDER BY c.relname""",
    "columns": """
        SELECT c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid) AS default_value
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE c.relnamespace = current_schema()::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY c.relname, a.attnum""",
    "functions": """
        SELECT p.proname, pg_get_function_identity_arguments(p.oid), p.oid::bigint, p.xmin::text
        FROM pg_proc p
        WHERE p.pronamespace = current_schema()::regnamespace
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')
        ORDER BY 1, 2""",
    "triggers": """
        SELECT t.tgrelid::regclass::text, t.tgname, t.oid::bigint, t.xmin::text FROM pg_trigger t
        WHERE NOT t.tgisinternal ORDER BY 1, 2""",
    "constraints": """
        SELECT c.conrelid::regclass::text, c.conname, c.oid::bigint, c.xmin::text FROM pg_constraint c
        WHERE c.connamespace = current_schema()::regnamespace ORDER BY 1, 2""",
    "extensions": "SELECT extname, extversion, oid::bigint FROM pg_extension ORDER BY 1",
    "schema_version": "SELECT * FROM schema_version ORDER BY version_id",
}
TIMESCALEDB_SNAPSHOT_QUERIES = {
    "hypertables": "SELECT * FROM timescaledb_information.hypertables ORDER BY hypertable_name",
    "dimensions": "SELECT * FROM timescaledb_information.dimensions ORDER BY hypertable_name",
    "jobs": "SELECT job_id, proc_name, hypertable_name, config::text FROM timescaledb_information.jobs "
            "ORDER BY 1",
}


async def snapshot(conn: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """The catalog rows that any DDL re-run would change (oids and xmin included)."""
    queries = dict(SNAPSHOT_QUERIES)
    if await detect_tier(conn) is not Tier.POSTGRES:
        queries.update(TIMESCALEDB_SNAPSHOT_QUERIES)
    return {name: [tuple(row) for row in await conn.fetch(sql)] for name, sql in queries.items()}


@asynccontextmanager
async def connection(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        yield conn
    finally:
        await conn.close()


@asynccontextmanager
async def scratch_database(db: Database) -> AsyncIterator[str]:
    """A further empty database on the same server, for tests that need one of their own."""
    name = f"t_schema_scratch_{uuid.uuid4().hex[:8]}"
    async with connection(db.server_dsn) as admin:
        await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield dsn_for(db.server_dsn, name)
    finally:
        async with connection(db.server_dsn) as admin:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Applied:
    first: ApplyReport
    second: ApplyReport
    before: dict[str, list[tuple[Any, ...]]]
    after: dict[str, list[tuple[Any, ...]]]


@pytest.fixture(scope="module")
def applied(database: Database) -> Applied:
    """The module's database with the schema applied twice, and catalog snapshots after each apply."""
    async def run() -> Applied:
        async with connection(database.dsn) as conn:
            first = await apply_schema(conn)
            before = await snapshot(conn)
            second = await apply_schema(conn)
            after = await snapshot(conn)
        return Applied(first, second, before, after)
    return asyncio.run(run())


@pytest.fixture
async def conn(database: Database, applied: Applied) -> AsyncIterator[asyncpg.Connection]:
    async with connection(database.dsn) as c:
        yield c


VERSIONS = [m.version for m in load_migrations()]  # every shipped migration (0001 and any later ones)
LATEST = VERSIONS[-1]


def expected_tier(db: Database) -> Tier:
    return db.tier


def materialized_views(db: Database) -> set[str]:
    """sensor_5min_avg is a plain view everywhere: over the continuous aggregate on full TimescaleDB, over the
    incrementally maintained sensor_5min_rollup elsewhere (migration 0011)."""
    return MATERIALIZED_VIEWS


# ---------------------------------------------------------------------------------------------------------
# Applying
# ---------------------------------------------------------------------------------------------------------

def test_first_apply_records_every_migration_on_the_servers_tier(applied: Applied, database: Database) -> None:
    assert VERSIONS[0] == "0001"
    assert applied.first.applied == VERSIONS
    assert applied.first.current_version == LATEST
    assert applied.first.tier is expected_tier(database)


async def test_apply_creates_every_object(conn: asyncpg.Connection, database: Database) -> None:
    relations = {r["relname"]: r["relkind"] for r in await conn.fetch(
        "SELECT relname, relkind::text FROM pg_class WHERE relnamespace = current_schema()::regnamespace")}
    assert {t for t in TABLES if relations.get(t) in ("r", "p")} == TABLES
    views = materialized_views(database)
    assert {v for v in MATERIALIZED_VIEWS if relations.get(v) == "m"} == views
    indexes = DOCUMENT_INDEXES
    assert relations["sensor_5min_avg"] == "v"  # the continuous aggregate's user view, or over the rollup
    if database.tier is not Tier.TIMESCALEDB_FULL:
        assert relations["sensor_5min_rollup"] == relations["sensor_5min_dirty"] == "r"
    assert indexes <= {name for name, kind in relations.items() if kind == "i"}
    functions = {r["proname"] for r in await conn.fetch(
        "SELECT proname FROM pg_proc WHERE pronamespace = current_schema()::regnamespace")}
    assert FUNCTIONS <= functions
    triggers = {r["tgname"] for r in await conn.fetch("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")}
    for table in DIMENSIONS:
        assert {f"audit_{table}", f"audit_{table}_update", f"{table}_updated_at"} <= triggers
    columns = {r["attname"]: r for r in await conn.fetch(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull, a.attidentity::text, "
        "pg_get_expr(d.adbin, d.adrelid) AS default_value FROM pg_attribute a "
        "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
        "WHERE a.attrelid = 'fact_sensor_event'::regclass AND a.attnum > 0")}
    assert [c for c in columns] == ["event_id", "equipment_id", "event_ts", "parameter", "value", "unit_id",
                                    "quality"]
    assert columns["event_id"]["attidentity"] == "d"
    assert columns["value"]["type"] == "double precision"
    assert columns["quality"]["type"] == "smallint" and columns["quality"]["attnotnull"]
    assert columns["quality"]["default_value"] == "0"
    cache = await conn.fetchval(
        "SELECT seqcache FROM pg_sequence WHERE seqrelid = pg_get_serial_sequence('fact_sensor_event', "
        "'event_id')::regclass")
    assert cache == 1000
    product_nullable = await conn.fetchval(
        "SELECT NOT attnotnull FROM pg_attribute WHERE attrelid = 'fact_production'::regclass "
        "AND attname = 'product_id'")
    assert product_nullable


def test_applying_again_changes_nothing(applied: Applied) -> None:
    assert applied.second.applied == []
    assert applied.second.current_version == LATEST
    assert applied.second.skipped == applied.first.skipped
    for part in applied.before:
        assert applied.after[part] == applied.before[part], part


async def test_concurrent_apply_from_two_connections_records_one_set_of_rows(database: Database) -> None:
    async with scratch_database(database) as dsn, connection(dsn) as one, connection(dsn) as two:
        reports = await asyncio.gather(apply_schema(one), apply_schema(two))
        # the two may take turns migration by migration; together they apply each version exactly once
        assert sorted(v for r in reports for v in r.applied) == VERSIONS
        rows = await one.fetch("SELECT version_number FROM schema_version ORDER BY version_number")
        assert [r["version_number"] for r in rows] == VERSIONS


# ---------------------------------------------------------------------------------------------------------
# Tiers
# ---------------------------------------------------------------------------------------------------------

async def test_status_tells_the_tier_and_what_was_skipped_and_why(conn: asyncpg.Connection,
                                                                  database: Database) -> None:
    status = await schema_status(conn)
    assert status.tier is expected_tier(database)
    assert status.applied_on_tier is expected_tier(database)
    assert status.current_version == status.latest_known_version == LATEST
    assert status.pending == [] and status.checksum_mismatches == []
    skipped = {item.object: item.reason for item in status.skipped}
    text = "\n".join(status.lines())
    if database.tier is Tier.POSTGRES:
        assert set(skipped) == {"hypertable", "compression", "continuous aggregate"}
        assert "plain PostgreSQL" in skipped["compression"]
        assert text.startswith("tier:      postgres (plain PostgreSQL")
    elif database.tier is Tier.TIMESCALEDB_FULL:
        assert skipped == {}
        assert text.startswith("tier:      timescaledb (TimescaleDB 2.")
    else:
        assert set(skipped) == {"compression", "continuous aggregate"}
        assert skipped["compression"] == "TimescaleDB Apache edition has no compression"
        assert "materialized view" in skipped["continuous aggregate"]
        assert text.startswith("tier:      timescaledb-apache (TimescaleDB 2.")
    assert f"version {LATEST}" in text and "up to date" in text
    for obj, reason in skipped.items():
        assert f"  - {obj}: {reason}" in text


async def test_sensor_events_are_a_hypertable_with_daily_chunks_on_timescaledb(
        conn: asyncpg.Connection, database: Database) -> None:
    kind = await conn.fetchval("SELECT relkind::text FROM pg_class WHERE oid = 'fact_sensor_event'::regclass")
    assert kind == "r"  # never declaratively partitioned
    if database.tier is Tier.POSTGRES:
        assert await detect_tier(conn) is Tier.POSTGRES
        return
    interval = await conn.fetchval(
        "SELECT time_interval FROM timescaledb_information.dimensions "
        "WHERE hypertable_name = 'fact_sensor_event' AND column_name = 'event_ts'")
    assert interval.days == 1 and interval.seconds == 0
    hypertables = {r["hypertable_name"] for r in await conn.fetch(
        "SELECT hypertable_name FROM timescaledb_information.hypertables")}
    assert hypertables == {"fact_sensor_event"}


async def test_require_and_off(database: Database, conn: asyncpg.Connection) -> None:
    if database.tier is Tier.POSTGRES:
        with pytest.raises(SchemaError, match="'require' but this PostgreSQL server has no TimescaleDB"):
            await apply_schema(conn, timescaledb="require")
        return
    assert (await apply_schema(conn, timescaledb="require")).tier is database.tier
    async with scratch_database(database) as dsn, connection(dsn) as fresh:
        report = await apply_schema(fresh, timescaledb="off")
        assert report.tier is Tier.POSTGRES
        assert "TimescaleDB turned off" in {s.object: s.reason for s in report.skipped}["hypertable"]
        assert await fresh.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'") == 0


# ---------------------------------------------------------------------------------------------------------
# Versions
# ---------------------------------------------------------------------------------------------------------

async def test_a_later_migration_applies_alone_and_older_code_refuses_the_newer_database(
        conn: asyncpg.Connection, database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    later_version = f"{int(LATEST) + 1:04d}"
    later = parse(f"{later_version}_later.sql", (
        "-- A later migration (test stand-in).\n"
        "CREATE TABLE test_later_watermark (name text PRIMARY KEY);\n"
        "-- @tier: full | watermark compression: {edition} has none\n"
        "SELECT 1;\n"))
    shipped = load_migrations()
    monkeypatch.setattr(runner, "load_migrations", lambda: (*shipped, later))
    try:
        report = await apply_schema(conn)
        assert report.applied == [later_version] and report.current_version == later_version
        skipped = {s.object for s in report.skipped}
        assert ("watermark compression" in skipped) is (database.tier is not Tier.TIMESCALEDB_FULL)
        monkeypatch.setattr(runner, "load_migrations", lambda: shipped)
        with pytest.raises(SchemaTooNew) as refused:
            await apply_schema(conn)
        assert str(refused.value) == (
            f"database schema is at version {int(later_version)} but this ingestor knows versions up to "
            f"{int(LATEST)}; upgrade the ingestor (or point it at another database)")
        status = await schema_status(conn)
        assert status.unknown_versions == [later_version]
        assert any(later_version in line and "does not know" in line for line in status.lines())
    finally:
        await conn.execute("DELETE FROM schema_version WHERE version_number = $1", later_version)
        await conn.execute("DROP TABLE IF EXISTS test_later_watermark")


async def test_an_edited_migration_is_reported_not_reapplied(conn: asyncpg.Connection) -> None:
    real = await conn.fetchval("SELECT checksum FROM schema_version WHERE version_number = '0001'")
    await conn.execute("UPDATE schema_version SET checksum = repeat('0', 64) WHERE version_number = '0001'")
    try:
        assert (await apply_schema(conn)).applied == []
        status = await schema_status(conn)
        assert status.checksum_mismatches == ["0001"]
        assert any(line.startswith("warning:   migration 0001 has changed") for line in status.lines())
    finally:
        await conn.execute("UPDATE schema_version SET checksum = $1 WHERE version_number = '0001'", real)


async def test_a_foreign_schema_version_table_is_refused(database: Database) -> None:
    async with scratch_database(database) as dsn, connection(dsn) as fresh:
        await fresh.execute("CREATE TABLE schema_version (version_id serial, version_number varchar(20)); "
                            "INSERT INTO schema_version (version_number) VALUES ('1.0.0')")
        with pytest.raises(SchemaError, match="did not create"):
            await apply_schema(fresh)


def test_migration_markers() -> None:
    migration = parse("0009_example.sql", (
        "-- Example.\nCREATE TABLE a ();\n"
        "-- @tier: timescaledb | hypertable: {edition} has no hypertables\nSELECT create_hypertable();\n"
        "-- @tier: postgres, apache\nCREATE INDEX b ON a ();\n"
        "-- @tier: all\nCREATE TABLE c ();\n"))
    assert migration.version == "0009" and migration.description == "Example."
    run, skipped = migration.plan(Tier.POSTGRES, "plain PostgreSQL")
    assert [s.line for s in run] == [1, 5, 7]
    assert [(s.object, s.reason) for s in skipped] == [("hypertable", "plain PostgreSQL has no hypertables")]
    run, skipped = migration.plan(Tier.TIMESCALEDB_FULL, "full TimescaleDB")
    assert [s.line for s in run] == [1, 3, 7] and skipped == []
    with pytest.raises(SchemaError, match=r"0009_example\.sql:1: unknown tier 'timescale'"):
        parse("0009_example.sql", "-- @tier: timescale\n")
    with pytest.raises(SchemaError, match=r"not named NNNN_name\.sql"):
        parse("9_example.sql", "")


EARLIER_0001 = ("9df58aeb08e8df1127dc6bf62db91daa6dd759fd", "ingestor/schema/migrations/0001_analytics.sql")
"""Where the 0.1 text of 0001 (the views and triggers written out by hand) can be read back from history."""

STRUCTURE_QUERIES = {
    "relations": "SELECT relname, relkind::text FROM pg_class WHERE relnamespace = current_schema()::regnamespace "
                 "AND relname NOT LIKE 'pg_toast%' ORDER BY 1",
    "columns": SNAPSHOT_QUERIES["columns"],
    "functions": "SELECT p.proname, pg_get_functiondef(p.oid) FROM pg_proc p "
                 "WHERE p.pronamespace = current_schema()::regnamespace "
                 "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e') ORDER BY 1",
    "triggers": "SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid) FROM pg_trigger "
                "WHERE NOT tgisinternal ORDER BY 1, 2",
    "views": "SELECT c.relname, pg_get_viewdef(c.oid) FROM pg_class c WHERE c.relkind IN ('v', 'm') "
             "AND c.relnamespace = current_schema()::regnamespace ORDER BY 1",
    "indexes": "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() ORDER BY 1",
}


async def structure(conn: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """What the schema is, without the identities (oids) that differ between two builds of it."""
    return {name: [tuple(row) for row in await conn.fetch(sql)] for name, sql in STRUCTURE_QUERIES.items()}


@pytest.fixture(scope="module")
def earlier_0001() -> str:
    shown = subprocess.run(["git", "-C", str(REPO), "show", f"{EARLIER_0001[0]}:{EARLIER_0001[1]}"],
                           capture_output=True, text=True)
    if shown.returncode != 0:
        pytest.skip(f"the earlier text of 0001 is not in this checkout's history: {shown.stderr.strip()}")
    return shown.stdout


async def test_a_database_built_with_the_earlier_0001_reaches_the_same_schema_without_a_warning(
        database: Database, conn: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch, earlier_0001: str) -> None:
    """0001 was rewritten (triggers generated, the OEE and reliability views moved onto 0004's formula
    functions).  A database that applied its earlier text must end up with exactly the schema of a new one,
    and ``schema status`` must not call 0001 edited."""
    earlier = parse("0001_analytics.sql", earlier_0001)
    current = load_migrations()
    assert earlier.checksum in current[0].superseded
    async with scratch_database(database) as dsn, connection(dsn) as old:
        monkeypatch.setattr(runner, "load_migrations", lambda: (earlier, *[m for m in current if m.version < "0004"]))
        await apply_schema(old)
        monkeypatch.undo()
        report = await apply_schema(old)
        assert report.applied == [m.version for m in current if m.version >= "0004"]
        status = await schema_status(old)
        assert status.checksum_mismatches == [] and status.up_to_date
        assert not any("has changed" in line for line in status.lines())
        assert await structure(old) == await structure(conn)


async def test_oee_and_reliability_have_one_definition_shared_by_views_and_queries(conn: asyncpg.Connection) -> None:
    """The views and the query files call the formula functions; none of them computes a ratio itself."""
    from ingestor.database import queries

    for view in ("view_oee_daily", "view_reliability_summary"):
        definition = await conn.fetchval("SELECT pg_get_viewdef($1::regclass)", view)
        assert "NULLIF" not in definition.upper(), view
    assert "oee_by_shift(" in await conn.fetchval("SELECT pg_get_viewdef('view_oee_daily'::regclass)")
    assert "reliability(" in await conn.fetchval("SELECT pg_get_viewdef('view_reliability_summary'::regclass)")
    for name, function in (("oee_7day", "oee_by_shift("), ("mtbf_mttr", "reliability(")):
        sql = queries.load(name)
        assert function in sql and "NULLIF" not in sql.upper(), name
    ratios = await conn.fetchrow("SELECT * FROM oee_ratios(3600000, 4000000, 3000000, true, 90, 100)")
    assert ratios["availability"] == pytest.approx(0.9) and ratios["performance"] == pytest.approx(3 / 3.6)
    assert ratios["quality"] == pytest.approx(0.9) and ratios["oee"] == pytest.approx(0.9 * 3 / 3.6 * 0.9)
    capped = await conn.fetchrow("SELECT * FROM oee_ratios(100, 50, 400, true, 0, 0)")
    assert capped["availability"] == 1.0 and capped["performance"] == 1.0 and capped["quality"] is None
    unknown = await conn.fetchrow("SELECT * FROM oee_ratios(100, 100, NULL, false, 1, 1)")
    assert unknown["performance"] is None and unknown["oee"] is None
    idle = await conn.fetchrow("SELECT * FROM oee_ratios(0, 100, 0, true, 0, 0)")
    assert idle["availability"] == 0.0 and idle["oee"] == 0.0


def test_the_shipped_migration_is_named_and_checksummed() -> None:
    (first, *_rest) = load_migrations()
    assert first.filename == "0001_analytics.sql"
    assert len(first.checksum) == 64
    assert first.description.startswith("The analytics schema")


# ---------------------------------------------------------------------------------------------------------
# Behaviour of the objects
# ---------------------------------------------------------------------------------------------------------

async def _plant(conn: asyncpg.Connection, suffix: str) -> int:
    """A site, area and work center for a test's equipment; returns the work center id."""
    site = await conn.fetchval(
        "INSERT INTO dim_site (site_code, site_name, timezone) VALUES ($1, 'Test site', 'Europe/Berlin') "
        "RETURNING site_id", f"SITE-{suffix}")
    area = await conn.fetchval("INSERT INTO dim_area (area_code, area_name, site_id) VALUES ($1, 'Area', $2) "
                               "RETURNING area_id", f"AREA-{suffix}", site)
    center: int = await conn.fetchval(
        "INSERT INTO dim_work_center (work_center_code, work_center_name, area_id) VALUES ($1, 'WC', $2) "
        "RETURNING work_center_id", f"WC-{suffix}", area)
    return center


async def test_audit_trail_records_changes_and_ignores_no_op_updates(conn: asyncpg.Connection) -> None:
    center = await _plant(conn, "AUDIT")
    equipment = await conn.fetchval(
        "INSERT INTO dim_equipment (equipment_code, equipment_name, work_center_id, theoretical_rate) "
        "VALUES ('AUDIT-PRESS', 'Press', $1, 600) RETURNING equipment_id", center)
    updated_at = "SELECT updated_at FROM dim_equipment WHERE equipment_id = $1"
    created = await conn.fetchval(updated_at, equipment)
    await conn.execute("UPDATE dim_equipment SET equipment_name = 'Press 2' WHERE equipment_id = $1",
                       equipment)
    renamed_at = await conn.fetchval(updated_at, equipment)
    # What a YAML upsert does when nothing changed: same values, updated_at = now().  Nothing is recorded.
    await conn.execute("UPDATE dim_equipment SET equipment_name = 'Press 2', theoretical_rate = 600.00, "
                       "updated_at = now() WHERE equipment_id = $1", equipment)
    assert await conn.fetchval(updated_at, equipment) == renamed_at
    await conn.execute("DELETE FROM dim_equipment WHERE equipment_id = $1", equipment)

    rows = await conn.fetch(
        "SELECT action, record_id, before_data, after_data, username FROM audit_log "
        "WHERE table_name = 'dim_equipment' AND record_id = $1 ORDER BY audit_id", str(equipment))
    assert [r["action"] for r in rows] == ["INSERT", "UPDATE", "DELETE"]
    insert, update, delete = rows
    assert insert["before_data"] is None
    assert json.loads(insert["after_data"])["equipment_code"] == "AUDIT-PRESS"
    assert json.loads(update["before_data"])["equipment_name"] == "Press"
    assert json.loads(update["after_data"])["equipment_name"] == "Press 2"
    assert json.loads(update["after_data"])["updated_at"] != json.loads(update["before_data"])["updated_at"]
    assert renamed_at >= created
    assert json.loads(delete["before_data"])["equipment_id"] == equipment and delete["after_data"] is None
    assert insert["username"] == await conn.fetchval("SELECT current_user")
    center_row = await conn.fetchrow(
        "SELECT record_id, after_data FROM audit_log WHERE table_name = 'dim_work_center' "
        "AND action = 'INSERT' AND after_data->>'work_center_code' = 'WC-AUDIT'")
    assert center_row["record_id"] == str(center)


async def test_downtime_is_planned_follows_the_reason(conn: asyncpg.Connection) -> None:
    center = await _plant(conn, "PLAN")
    equipment = await conn.fetchval(
        "INSERT INTO dim_equipment (equipment_code, equipment_name, work_center_id) "
        "VALUES ('PLAN-M', 'M', $1) RETURNING equipment_id", center)
    reason = await conn.fetchval(
        "INSERT INTO dim_downtime_reason (reason_code, reason_description, reason_category, is_planned) "
        "VALUES ('PLAN-BREAK', 'Break', 'Scheduled Downtime', true) RETURNING reason_id")
    downtime = await conn.fetchval(
        "INSERT INTO fact_downtime (equipment_id, reason_id, start_time, end_time, downtime_duration) "
        "VALUES ($1, $2, now() - interval '1 hour', now(), 3600000) RETURNING downtime_id", equipment, reason)
    assert await conn.fetchval("SELECT is_planned FROM fact_downtime WHERE downtime_id = $1", downtime)
    await conn.execute("UPDATE dim_downtime_reason SET is_planned = false WHERE reason_id = $1", reason)
    assert not await conn.fetchval("SELECT is_planned FROM fact_downtime WHERE downtime_id = $1", downtime)
    plan = "\n".join(r[0] for r in await conn.fetch(
        "EXPLAIN SELECT * FROM fact_downtime WHERE NOT is_planned AND equipment_id = 1"))
    assert "fact_downtime" in plan  # the partial index's predicate is valid SQL (it was not in the document)


async def test_reliability_summary_keeps_equipment_without_failures(conn: asyncpg.Connection) -> None:
    center = await _plant(conn, "REL")
    site = await conn.fetchval("SELECT site_id FROM dim_site WHERE site_code = 'SITE-REL'")
    shift = await conn.fetchval(
        "INSERT INTO dim_shift (site_id, shift_code, shift_name, start_time, end_time) "
        "VALUES ($1, 'DAY', 'Day', '06:00', '14:00') RETURNING shift_id", site)
    failing, healthy = [await conn.fetchval(
        "INSERT INTO dim_equipment (equipment_code, equipment_name, work_center_id) VALUES ($1, $1, $2) "
        "RETURNING equipment_id", code, center) for code in ("REL-FAILING", "REL-HEALTHY")]
    failure = await conn.fetchval(
        "INSERT INTO dim_downtime_reason (reason_code, reason_description, reason_category, is_failure) "
        "VALUES ('REL-JAM', 'Jam', 'Unscheduled Downtime', true) RETURNING reason_id")
    # Both ran 10 h of operating time two days ago; the failing one failed twice, 30 min and 90 min.
    for equipment in (failing, healthy):
        await conn.execute(
            "INSERT INTO fact_production (date_id, shift_id, equipment_id, start_time, end_time, "
            "planned_production_time, operating_time, planned_parts, total_parts_produced, good_parts) "
            "VALUES (to_char(now() - interval '2 days', 'YYYYMMDD')::int, $1, $2, now() - interval '2 days', "
            "now() - interval '2 days' + interval '12 hours', 43200000, 36000000, 100, 100, 100)",
            shift, equipment)
    for minutes in (30, 90):
        await conn.execute(
            "INSERT INTO fact_downtime (equipment_id, reason_id, start_time, end_time, downtime_duration) "
            "VALUES ($1, $2, now() - interval '2 days', "
            "now() - interval '2 days' + make_interval(mins => $3), $3 * 60000)", failing, failure, minutes)
    await refresh_view(conn, "view_reliability_summary")
    rows = {r["equipment_id"]: r for r in await conn.fetch(
        "SELECT * FROM view_reliability_summary WHERE equipment_id = ANY($1::int[])", [failing, healthy])}
    assert rows[failing]["failure_count"] == 2
    assert float(rows[failing]["mtbf_hours"]) == 5.0  # 10 h operating / 2 failures
    assert float(rows[failing]["mttr_hours"]) == 1.0  # 2 h of failure downtime / 2 failures
    assert rows[healthy]["failure_count"] == 0
    assert float(rows[healthy]["operating_hours"]) == 10.0
    assert rows[healthy]["mtbf_hours"] is None and rows[healthy]["mttr_hours"] is None


async def test_check_data_quality_runs_and_finds_a_bad_record(conn: asyncpg.Connection) -> None:
    center = await _plant(conn, "DQ")
    site = await conn.fetchval("SELECT site_id FROM dim_site WHERE site_code = 'SITE-DQ'")
    shift = await conn.fetchval(
        "INSERT INTO dim_shift (site_id, shift_code, shift_name, start_time, end_time) "
        "VALUES ($1, 'DAY', 'Day', '06:00', '14:00') RETURNING shift_id", site)
    equipment = await conn.fetchval(
        "INSERT INTO dim_equipment (equipment_code, equipment_name, work_center_id) "
        "VALUES ('DQ-M', 'M', $1) RETURNING equipment_id", center)
    bad = await conn.fetchval(
        "INSERT INTO fact_production (date_id, shift_id, equipment_id, start_time, end_time, "
        "planned_production_time, operating_time, planned_parts, total_parts_produced, good_parts) "
        "VALUES (20250101, $1, $2, '2025-01-01 06:00+00', '2025-01-01 14:00+00', 1000, 2000, 1, 1, 1) "
        "RETURNING production_id", shift, equipment)
    try:
        rows = {r["check_name"]: r for r in await conn.fetch("SELECT * FROM check_data_quality()")}
        assert set(rows) == {
            "oee_range_check", "orphaned_production_records", "operating_time_exceeds_planned",
            "downtime_duration_mismatch", "overlapping_downtime", "sensor_events_in_future"}
        exceeding = rows["operating_time_exceeds_planned"]
        assert exceeding["passed"] is False
        assert bad in json.loads(exceeding["details"])["sample_ids"]
        assert rows["orphaned_production_records"]["passed"] is True
    finally:
        await conn.execute("DELETE FROM fact_production WHERE production_id = $1", bad)


async def test_archive_moves_old_sensor_events(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "INSERT INTO fact_sensor_event (equipment_id, event_ts, parameter, value, unit_id, quality) VALUES "
        "(1, now() - interval '400 days', 'archive-test', 1.5, NULL, 0), "
        "(1, now() - interval '1 day', 'archive-test', 2.5, NULL, 1)")
    assert await conn.fetchval("SELECT archive_old_sensor_data()") == 1
    assert [r["value"] for r in await conn.fetch(
        "SELECT value FROM fact_sensor_event_archive WHERE parameter = 'archive-test'")] == [1.5]
    assert [r["value"] for r in await conn.fetch(
        "SELECT value FROM fact_sensor_event WHERE parameter = 'archive-test'")] == [2.5]
    assert await conn.fetchval(
        "SELECT metric_value FROM system_metrics WHERE metric_name = 'sensor_events_archived' "
        "ORDER BY metric_id DESC LIMIT 1") == 1.0
    await conn.execute("DELETE FROM fact_sensor_event WHERE parameter = 'archive-test'")


async def test_every_view_refreshes_concurrently_and_after_with_no_data(conn: asyncpg.Connection,
                                                                         database: Database) -> None:
    views = await views_to_refresh(conn)
    # sensor_5min_avg is refreshed by the daemon except on full TimescaleDB (a continuous aggregate with a policy)
    incremental = set() if database.tier is Tier.TIMESCALEDB_FULL else {"sensor_5min_avg"}
    assert views == [v for v in REFRESHABLE_VIEWS if v in materialized_views(database) | incremental]
    if database.tier is Tier.TIMESCALEDB_FULL:
        with pytest.raises(SchemaError, match="continuous aggregate"):
            await refresh_view(conn, "sensor_5min_avg")
    for view in views:
        await refresh_view(conn, view)  # populated: CONCURRENTLY
    await conn.execute("REFRESH MATERIALIZED VIEW view_oee_daily WITH NO DATA")
    await refresh_view(conn, "view_oee_daily")  # unpopulated: falls back to a plain refresh
    assert await conn.fetchval("SELECT relispopulated FROM pg_class WHERE oid = 'view_oee_daily'::regclass")
    await refresh_view(conn, "view_oee_daily")
    with pytest.raises(ValueError):
        await refresh_view(conn, "dim_equipment")


async def test_refresh_runs_concurrently_while_a_dashboard_reads(conn: asyncpg.Connection,
                                                                  database: Database) -> None:
    """A reader holds ACCESS SHARE on the view: a plain REFRESH (ACCESS EXCLUSIVE) would wait for it, the
    CONCURRENTLY one (EXCLUSIVE) does not."""
    async with connection(database.dsn) as reader, reader.transaction():
        await reader.fetch("SELECT * FROM view_reliability_summary")
        await conn.execute("SET lock_timeout = '2s'")
        try:
            await refresh_view(conn, "view_reliability_summary")
            with pytest.raises(asyncpg.LockNotAvailableError):
                await conn.execute("REFRESH MATERIALIZED VIEW view_reliability_summary")
        finally:
            await conn.execute("RESET lock_timeout")
