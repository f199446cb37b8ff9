"""The database side of plant records: the dimensions rows are checked against, a staging table per import,
the merge into the facts by natural key with an audit row per change, and undoing a batch.

An import is one transaction: rows are COPYed into a temporary staging table (the specification's migration
path: staging table → facts and dimensions), duplicate keys are found there, and the staged rows are merged,
changing only rows whose values differ and writing each change with its values before and after into
``record_import_audit``.  Nothing is committed when the caller finds problems.  A scrap import without
--dry-run or --skip-bad stages, compares and writes in chunks while the file is still read
(:class:`ScrapPipeline`); the events of an import are emitted set-based just before it commits
(:func:`emit_batch_events`, :func:`emit_undo_events`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import asyncpg

from ingestor.records.kinds import Kind, Plant, Staged


async def load_plant(conn: asyncpg.Connection) -> Plant:
    """The codes and time zones rows are checked against."""
    rows = await conn.fetch(
        "SELECT e.equipment_code, e.equipment_id, s.timezone FROM dim_equipment e "
        "JOIN dim_work_center w USING (work_center_id) JOIN dim_area a USING (area_id) JOIN dim_site s USING (site_id)")
    sites = [r[0] for r in await conn.fetch("SELECT DISTINCT timezone FROM dim_site")]
    zones: dict[str, ZoneInfo] = {}
    equipment_zone = {}
    for r in rows:
        zone = zones.setdefault(r["timezone"], ZoneInfo(r["timezone"]))
        equipment_zone[r["equipment_code"]] = zone
    centers = await conn.fetch(
        "SELECT w.work_center_id, w.work_center_code, w.work_center_name, s.timezone FROM dim_work_center w "
        "JOIN dim_area a USING (area_id) JOIN dim_site s USING (site_id)")
    work_centers: dict[str, int] = {}
    for c in centers:
        work_centers.setdefault(c["work_center_name"].casefold(), c["work_center_id"])
    for c in centers:  # a code wins over another center's name
        work_centers[c["work_center_code"]] = c["work_center_id"]
    return Plant(
        equipment={r["equipment_code"]: r["equipment_id"] for r in rows},
        equipment_zone=equipment_zone,
        work_centers=work_centers,
        work_center_zone={c["work_center_id"]: ZoneInfo(c["timezone"]) for c in centers},
        products={r[0]: r[1] for r in await conn.fetch("SELECT product_code, product_id FROM dim_product")},
        downtime_reasons={r[0] for r in await conn.fetch("SELECT reason_code FROM dim_downtime_reason")},
        scrap_reasons={r[0] for r in await conn.fetch("SELECT scrap_code FROM dim_scrap_reason")},
        default_zone=ZoneInfo(sites[0]) if len(sites) == 1 else None,
    )


_STAGE_COLUMNS: dict[Kind, tuple[str, ...]] = {
    "maintenance": ("line", "record_key", "equipment_id", "work_order_number", "maintenance_type", "start_time",
                    "end_time", "labor_hours", "material_cost", "labor_cost", "failure_code", "technician",
                    "description"),
    "scrap": ("line", "record_key", "equipment_id", "recorded_at", "product_id", "scrap_qty", "scrap_code",
              "scrap_cost", "comments"),
    "equipment": ("line", "record_key", "legacy_id", "equipment_name", "equipment_type", "work_center_id",
                  "manufacturer", "model", "serial_number", "criticality_level"),
}

_STAGE_TABLE: dict[Kind, str] = {
    "maintenance": """
        line integer, record_key text, equipment_id integer, work_order_number text, maintenance_type text,
        start_time timestamptz, end_time timestamptz, labor_hours numeric, material_cost numeric,
        labor_cost numeric, failure_code text, technician text, description text""",
    "scrap": """
        line integer, record_key text, equipment_id integer, recorded_at timestamptz, product_id integer,
        scrap_qty integer, scrap_code text, scrap_cost numeric, comments text""",
    "equipment": """
        line integer, record_key text, legacy_id text, equipment_name text, equipment_type text,
        work_center_id integer, manufacturer text, model text, serial_number text, criticality_level text""",
}

STAGE = "record_stage"
SCRAP_CHANGES = "record_scrap_changes"

# (table, key column, the columns an import writes and an undo restores)
TARGETS: dict[Kind, tuple[str, str, tuple[str, ...]]] = {
    "maintenance": ("fact_maintenance", "record_key",
                    ("equipment_id", "work_order_number", "maintenance_type", "start_time", "end_time",
                     "labor_hours", "material_cost", "labor_cost", "failure_code", "technician", "description",
                     "import_batch")),
    "scrap": ("fact_scrap", "record_key",
              ("production_id", "product_id", "equipment_id", "scrap_code", "scrap_qty", "scrap_cost", "comments",
               "recorded_at", "import_batch")),
    "equipment": ("dim_equipment", "equipment_code",
                  ("equipment_name", "equipment_type", "work_center_id", "manufacturer", "model", "serial_number",
                   "criticality_level", "attributes")),
}


async def create_stage(conn: asyncpg.Connection, kind: Kind) -> None:
    """The temporary staging table of this transaction.  JIT compilation is turned off for the transaction:
    it cost a second per merge, more than it saved on these plain statements.  ``work_mem`` is raised for it
    so that grouping and joining a million staged keys stays in memory instead of spilling to disk."""
    await conn.execute("SET LOCAL jit = off")
    await conn.execute("SET LOCAL work_mem = '64MB'")
    await conn.execute(f"CREATE TEMPORARY TABLE {STAGE} ({_STAGE_TABLE[kind]}) ON COMMIT DROP")


async def stage(conn: asyncpg.Connection, kind: Kind, records: Iterable[Staged]) -> None:
    """COPY the records (an iterator: consumed as it is sent) into the staging table."""
    await conn.copy_records_to_table(STAGE, records=records, columns=list(_STAGE_COLUMNS[kind]))


async def stage_chunk(conn: asyncpg.Connection, records: list[Staged]) -> None:
    """COPY one chunk of scrap records into the chunk table of a streamed import (:class:`ScrapPipeline`)."""
    await conn.copy_records_to_table(CHUNK_TABLE, records=records, columns=list(_STAGE_COLUMNS["scrap"]))


async def duplicates(conn: asyncpg.Connection) -> list[tuple[str, list[int]]]:
    """Keys staged more than once, with their lines in order.  The keys are found by hashing (an ordered
    aggregate over every staged row would sort them all), then the lines of just those."""
    await conn.execute(f"ANALYZE {STAGE}")
    rows = await conn.fetch(
        f"WITH twice AS (SELECT record_key FROM {STAGE} GROUP BY record_key HAVING count(*) > 1) "
        f"SELECT s.record_key, array_agg(s.line ORDER BY s.line) AS lines FROM {STAGE} s "
        "WHERE s.record_key IN (SELECT record_key FROM twice) GROUP BY s.record_key ORDER BY min(s.line)")
    return [(r["record_key"], list(r["lines"])) for r in rows]


async def drop_lines(conn: asyncpg.Connection, lines: list[int]) -> None:
    await conn.execute(f"DELETE FROM {STAGE} WHERE line = ANY($1::int[])", lines)


_AUDIT = """
INSERT INTO record_import_audit (batch_id, kind, record_key, action, old_values, new_values)
SELECT $1::uuid, '{kind}', w.{key}, CASE WHEN w.inserted THEN 'insert' ELSE 'update' END,
       CASE WHEN NOT w.inserted THEN to_jsonb(o) END,
       CASE WHEN NOT w.inserted THEN to_jsonb(w) - 'inserted' END
FROM written w LEFT JOIN old o ON o.{key} = w.{key}
"""

_MERGE: dict[Kind, str] = {
    "maintenance": f"""
WITH old AS (
    SELECT m.* FROM fact_maintenance m JOIN {STAGE} s ON m.record_key = s.record_key
), written AS (
    INSERT INTO fact_maintenance AS m (equipment_id, work_order_number, maintenance_type, start_time, end_time,
                                       labor_hours, material_cost, labor_cost, failure_code, technician,
                                       description, record_key, import_batch)
    SELECT equipment_id, work_order_number, maintenance_type, start_time, end_time, labor_hours, material_cost,
           labor_cost, failure_code, technician, description, record_key, $1::uuid
    FROM {STAGE}
    ON CONFLICT (record_key) WHERE record_key IS NOT NULL DO UPDATE SET
        equipment_id = EXCLUDED.equipment_id, work_order_number = EXCLUDED.work_order_number,
        maintenance_type = EXCLUDED.maintenance_type, start_time = EXCLUDED.start_time,
        end_time = EXCLUDED.end_time, labor_hours = EXCLUDED.labor_hours, material_cost = EXCLUDED.material_cost,
        labor_cost = EXCLUDED.labor_cost, failure_code = EXCLUDED.failure_code,
        technician = EXCLUDED.technician, description = EXCLUDED.description, import_batch = EXCLUDED.import_batch
    WHERE (m.equipment_id, m.work_order_number, m.maintenance_type, m.start_time, m.end_time, m.labor_hours,
           m.material_cost, m.labor_cost, m.failure_code, m.technician, m.description)
          IS DISTINCT FROM
          (EXCLUDED.equipment_id, EXCLUDED.work_order_number, EXCLUDED.maintenance_type, EXCLUDED.start_time,
           EXCLUDED.end_time, EXCLUDED.labor_hours, EXCLUDED.material_cost, EXCLUDED.labor_cost,
           EXCLUDED.failure_code, EXCLUDED.technician, EXCLUDED.description)
    RETURNING m.*, (xmax = 0) AS inserted
)""" + _AUDIT.format(kind="maintenance", key="record_key"),
    # The specification's migration: the legacy id becomes the code (unless a code is given) and is kept in
    # attributes with the batch and the day; columns the file leaves empty keep what the row had.
    "equipment": f"""
WITH old AS (
    SELECT e.* FROM dim_equipment e JOIN {STAGE} s ON e.equipment_code = s.record_key
), written AS (
    INSERT INTO dim_equipment AS e (equipment_code, equipment_name, equipment_type, work_center_id, manufacturer,
                                    model, serial_number, criticality_level, attributes)
    SELECT record_key, equipment_name, equipment_type, work_center_id, manufacturer, model, serial_number,
           criticality_level,
           jsonb_build_object('legacy_id', legacy_id, 'import_batch', $1::uuid::text, 'import_date', current_date::text)
    FROM {STAGE}
    ON CONFLICT (equipment_code) DO UPDATE SET
        equipment_name = EXCLUDED.equipment_name,
        equipment_type = COALESCE(EXCLUDED.equipment_type, e.equipment_type),
        work_center_id = EXCLUDED.work_center_id,
        manufacturer = COALESCE(EXCLUDED.manufacturer, e.manufacturer),
        model = COALESCE(EXCLUDED.model, e.model),
        serial_number = COALESCE(EXCLUDED.serial_number, e.serial_number),
        criticality_level = COALESCE(EXCLUDED.criticality_level, e.criticality_level),
        attributes = COALESCE(e.attributes, '{{}}'::jsonb) || EXCLUDED.attributes,
        updated_at = now()
    WHERE (e.equipment_name, e.equipment_type, e.work_center_id, e.manufacturer, e.model, e.serial_number,
           e.criticality_level, e.attributes ->> 'legacy_id')
          IS DISTINCT FROM
          (EXCLUDED.equipment_name, COALESCE(EXCLUDED.equipment_type, e.equipment_type), EXCLUDED.work_center_id,
           COALESCE(EXCLUDED.manufacturer, e.manufacturer), COALESCE(EXCLUDED.model, e.model),
           COALESCE(EXCLUDED.serial_number, e.serial_number),
           COALESCE(EXCLUDED.criticality_level, e.criticality_level), EXCLUDED.attributes ->> 'legacy_id')
    RETURNING e.*, (xmax = 0) AS inserted
)""" + _AUDIT.format(kind="equipment", key="equipment_code"),
}


# A scrap record belongs to the production record of its machine that covers its time (the derivation keeps
# such references pointing at the record covering the same start when it rewrites one).  The merge runs in
# steps, each one set-based, because the one-statement upsert spent most of its time on rows that were not
# going to change and on per-row foreign-key triggers (docs/records.md, "Measurements"):
#
# 1. _SCRAP_CHANGES keeps the staged records that are new or differ from their row, each with its production
#    record (one index probe per record) and the id of the row it changes.  Re-importing a file ends here.
# 2. _SCRAP_REFERENCES checks and key-share-locks, once per distinct id, the rows the changes refer to: what
#    the foreign keys' triggers would do once per record.  When they all hold, and the import may (see
#    _may_skip_row_triggers), step 3 runs without those per-row triggers.  (The audit rows' one reference is
#    to the batch this transaction inserted, which nothing else can see, let alone delete.)
# 3. _SCRAP_INSERT and _SCRAP_UPDATE write them (below).
_SCRAP_CHANGES = f"""
CREATE TEMPORARY TABLE {SCRAP_CHANGES} ON COMMIT DROP AS
SELECT s.record_key, s.equipment_id, s.recorded_at, s.product_id, s.scrap_qty, s.scrap_code, s.scrap_cost,
       s.comments, prod.production_id, f.scrap_id AS old_id
FROM {STAGE} s
CROSS JOIN LATERAL (
    SELECT (SELECT p.production_id FROM fact_production p
            WHERE p.equipment_id = s.equipment_id AND p.start_time <= s.recorded_at AND p.end_time > s.recorded_at
            ORDER BY p.start_time DESC LIMIT 1) AS production_id
) prod
LEFT JOIN fact_scrap f ON f.record_key = s.record_key
WHERE f.scrap_id IS NULL
   OR (f.production_id, f.product_id, f.equipment_id, f.scrap_code, f.scrap_qty, f.scrap_cost, f.comments,
       f.recorded_at)
      IS DISTINCT FROM
      (prod.production_id, s.product_id, s.equipment_id, s.scrap_code, s.scrap_qty, s.scrap_cost, s.comments,
       s.recorded_at)"""

# The rows the staged scrap points at, locked against deletion while it is written (both reference checks).
_LOCKED_REFERENCES = f"""WITH production AS (
    SELECT p.production_id FROM fact_production p
    WHERE p.production_id IN (SELECT production_id FROM {SCRAP_CHANGES}) FOR KEY SHARE
), product AS (
    SELECT d.product_id FROM dim_product d
    WHERE d.product_id IN (SELECT product_id FROM {SCRAP_CHANGES}) FOR KEY SHARE
), equipment AS (
    SELECT e.equipment_id FROM dim_equipment e
    WHERE e.equipment_id IN (SELECT equipment_id FROM {SCRAP_CHANGES}) FOR KEY SHARE
)"""

_SCRAP_REFERENCES = f"""
{_LOCKED_REFERENCES}, wanted AS (
    SELECT count(DISTINCT production_id) AS production, count(DISTINCT product_id) AS product,
           count(DISTINCT equipment_id) AS equipment
    FROM {SCRAP_CHANGES}
)
SELECT wanted.production = (SELECT count(*) FROM production)
   AND wanted.product = (SELECT count(*) FROM product)
   AND wanted.equipment = (SELECT count(*) FROM equipment)
FROM wanted"""

# 3. The new records are a plain INSERT (no speculative insertion, and no audit row each: the row carries its
#    batch in import_batch, which is how an undo finds it, and the batch row counts them); the changed ones an
#    UPDATE audited with their values before and after.  Importers of one kind take turns (_KIND_LOCK, taken
#    before step 1), so no other import can insert a key between step 1 and the INSERT.
_SCRAP_INSERT = f"""
INSERT INTO fact_scrap (production_id, product_id, equipment_id, scrap_code, scrap_qty, scrap_cost, comments,
                        recorded_at, record_key, import_batch)
SELECT production_id, product_id, equipment_id, scrap_code, scrap_qty, scrap_cost, comments, recorded_at,
       record_key, $1::uuid
FROM {SCRAP_CHANGES} WHERE old_id IS NULL"""

_SCRAP_UPDATE = f"""
WITH old AS (
    SELECT f.* FROM fact_scrap f JOIN {SCRAP_CHANGES} c ON f.scrap_id = c.old_id
), written AS (
    UPDATE fact_scrap f SET
        production_id = c.production_id, product_id = c.product_id, equipment_id = c.equipment_id,
        scrap_code = c.scrap_code, scrap_qty = c.scrap_qty, scrap_cost = c.scrap_cost, comments = c.comments,
        recorded_at = c.recorded_at, import_batch = $1::uuid
    FROM {SCRAP_CHANGES} c WHERE f.scrap_id = c.old_id
    RETURNING f.*
)
INSERT INTO record_import_audit (batch_id, kind, record_key, action, old_values, new_values)
SELECT $1::uuid, 'scrap', w.record_key, 'update', to_jsonb(o), to_jsonb(w)
FROM written w JOIN old o ON o.scrap_id = w.scrap_id"""

# Imports of one kind take turns: a transaction-level advisory lock per kind (its keys: 0x52454344, 'RECD', and
# the kind's hash).
_KIND_LOCK = "SELECT pg_advisory_xact_lock(1380270916, hashtext($1::text))"


async def _may_skip_row_triggers(conn: asyncpg.Connection) -> bool:
    """Whether this connection may write the scrap changes without the per-row foreign-key triggers, after
    _SCRAP_REFERENCES checked and locked what they refer to: ``session_replication_role = replica`` turns
    them off for the one statement.  It needs the right to set that (a superuser, or on PostgreSQL 15 and
    later a ``GRANT SET ON PARAMETER``), and the two tables written must have no trigger of their own that
    replica mode would silence or wake (only internal ones, or ``ENABLE ALWAYS`` ones, which fire either way).
    """
    allowed = await conn.fetchval("SELECT current_setting('is_superuser') = 'on'")
    if not allowed and await conn.fetchval("SELECT current_setting('server_version_num')::int >= 150000"):
        allowed = await conn.fetchval("SELECT has_parameter_privilege('session_replication_role', 'SET')")
    if not allowed:
        return False
    triggers: int = await conn.fetchval(
        "SELECT count(*) FROM pg_trigger WHERE tgrelid IN ('fact_scrap'::regclass, 'record_import_audit'::regclass)"
        " AND NOT tgisinternal AND tgenabled IN ('O', 'R')")
    return triggers == 0


async def _merge_scrap(conn: asyncpg.Connection, batch: uuid.UUID, dry_run: bool) -> Written:
    if not dry_run:
        await conn.execute(_KIND_LOCK, "scrap")
    await conn.execute(_SCRAP_CHANGES)
    row = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE old_id IS NULL) AS inserted, count(old_id) AS updated, "
        f"count(*) FILTER (WHERE production_id IS NULL) AS without_production FROM {SCRAP_CHANGES}")
    written = Written(row["inserted"], row["updated"], row["without_production"])
    if not dry_run and written.inserted + written.updated:
        await conn.execute(f"ANALYZE {SCRAP_CHANGES}")
        await _write_scrap(conn, batch, written)
    await conn.execute(f"DROP TABLE {SCRAP_CHANGES}")
    return written


async def _write_scrap(conn: asyncpg.Connection, batch: uuid.UUID, counts: Written) -> None:
    fast = await conn.fetchval(_SCRAP_REFERENCES) and await _may_skip_row_triggers(conn)
    role = None
    if fast:  # on an error the transaction is rolled back, and the setting with it
        role = await conn.fetchval("SELECT current_setting('session_replication_role')")
        await conn.execute("SELECT set_config('session_replication_role', 'replica', true)")
    # else the triggers check each row (and name the one that fails)
    if counts.inserted:
        await conn.execute(_SCRAP_INSERT, batch)
    if counts.updated:
        await conn.execute(_SCRAP_UPDATE, batch)
    if role is not None:
        await conn.execute("SELECT set_config('session_replication_role', $1, true)", role)


@dataclass
class Written:
    inserted: int = 0
    updated: int = 0
    without_production: int = 0
    """scrap records written that no production record covers"""


async def open_batch(conn: asyncpg.Connection, kind: Kind, source: str, encoding: str | None) -> uuid.UUID:
    batch: uuid.UUID = await conn.fetchval(
        "INSERT INTO record_import_batch (kind, source, encoding) VALUES ($1, $2, $3) RETURNING batch_id",
        kind, source, encoding)
    return batch


async def bulk(conn: asyncpg.Connection, on: bool) -> None:
    """Quiet (or wake again) the per-row event triggers of migration 0009 for the rest of the transaction: the
    importer emits those events itself, set-based, last (:func:`emit_batch_events`).  A custom setting, which
    any role may set."""
    await conn.execute("SELECT set_config('ingestor.bulk', $1, true)", "on" if on else "off")


async def merge(conn: asyncpg.Connection, kind: Kind, batch: uuid.UUID, *, dry_run: bool = False) -> Written:
    """Upsert the staged records; each insert and real change is audited under ``batch``.  ``dry_run``: the
    caller rolls back, so scrap records are only counted, not written (the kinds a CMMS or a register
    exports are small enough to write and roll back).  The per-row event triggers are quiet meanwhile: the
    caller emits the batch's events with :func:`emit_batch_events` just before it commits."""
    if kind == "scrap":
        return await _merge_scrap(conn, batch, dry_run)
    await bulk(conn, True)
    await conn.execute(_MERGE[kind], batch)
    await bulk(conn, False)
    counts = {r["action"]: r["n"] for r in await conn.fetch(
        "SELECT action, count(*) AS n FROM record_import_audit WHERE batch_id = $1 GROUP BY action", batch)}
    return Written(counts.get("insert", 0), counts.get("update", 0))


async def close_batch(conn: asyncpg.Connection, batch: uuid.UUID, *, rows_read: int, written: Written,
                      unchanged: int, rejected: int) -> bool:
    """Record the batch's counts; a batch that changed nothing is not kept.  True when it was kept."""
    if written.inserted + written.updated == 0:
        await conn.execute("DELETE FROM record_import_batch WHERE batch_id = $1", batch)
        return False
    await conn.execute(
        "UPDATE record_import_batch SET rows_read = $2, inserted = $3, updated = $4, unchanged = $5, rejected = $6 "
        "WHERE batch_id = $1", batch, rows_read, written.inserted, written.updated, unchanged, rejected)
    return True


@dataclass(frozen=True)
class MaintenanceLinks:
    """How the work orders of a batch line up with the stops the daemon derived."""

    corrective_linked: list[tuple[str, int]]
    """(work order, downtime_id)"""
    corrective_unlinked: list[str]
    preventive_without_stop: list[str]


async def maintenance_links(conn: asyncpg.Connection, batch: uuid.UUID | None = None) -> MaintenanceLinks:
    """The links of the work orders written by ``batch`` (all imported ones when None)."""
    rows = await conn.fetch(
        "SELECT l.work_order_number, l.maintenance_type, l.downtime_id FROM maintenance_downtime l "
        "JOIN fact_maintenance m USING (maintenance_id) "
        "WHERE ($1::uuid IS NULL AND m.record_key IS NOT NULL) OR m.import_batch = $1 "
        "ORDER BY l.start_time, l.work_order_number", batch)
    return MaintenanceLinks(
        [(r[0], r[2]) for r in rows if r[1] == "Corrective" and r[2] is not None],
        [r[0] for r in rows if r[1] == "Corrective" and r[2] is None],
        [r[0] for r in rows if r[1] == "Preventive" and r[2] is None])


class UndoRefused(Exception):
    """The batch cannot be taken back (unknown, undone already, or later batches changed its records)."""


@dataclass(frozen=True)
class Undone:
    kind: Kind
    deleted: int
    restored: int
    events: int = 0
    """events emitted to retract or correct those the batch emitted"""


async def undo_batch(conn: asyncpg.Connection, batch: uuid.UUID) -> Undone:
    """Take ``batch`` back out, in the caller's transaction: delete the rows it inserted, put back the values
    of the rows it changed, and audit both (``undo`` true).  Refused while a later batch that is not undone
    changed one of its records: undo that one first."""
    row = await conn.fetchrow("SELECT kind, undone_at FROM record_import_batch WHERE batch_id = $1 FOR UPDATE",
                              batch)
    if row is None:
        raise UndoRefused(f"no import batch {batch}")
    if row["undone_at"] is not None:
        raise UndoRefused(f"batch {batch} was undone already ({row['undone_at'].isoformat()})")
    kind: Kind = row["kind"]
    # a later batch changed a record of this one: its audit says so by the key (this batch's audited inserts
    # and changes), or by the batch the record had before (scrap inserts, which are not audited one by one)
    later = await conn.fetch(
        "SELECT DISTINCT l.batch_id, b.imported_at FROM record_import_audit l "
        "JOIN record_import_batch b ON b.batch_id = l.batch_id AND b.undone_at IS NULL "
        "WHERE l.kind = $2 AND l.batch_id <> $1 AND NOT l.undo AND l.action = 'update' "
        "  AND (l.old_values ->> 'import_batch' = $1::uuid::text OR EXISTS ("
        "    SELECT FROM record_import_audit a WHERE a.batch_id = $1 AND NOT a.undo AND a.kind = l.kind "
        "      AND a.record_key = l.record_key AND a.audit_id < l.audit_id)) "
        "ORDER BY b.imported_at", batch, kind)
    if later:
        raise UndoRefused(f"later batches changed records of batch {batch}; undo them first: "
                          + ", ".join(str(r["batch_id"]) for r in later))
    table, key, columns = TARGETS[kind]
    await bulk(conn, True)
    # what the batch inserted: by its audit rows, or for scrap the rows still carrying the batch that it
    # did not update (a later batch that changed one would have been undone first, restoring the batch)
    inserted = f"""DELETE FROM {table} t USING record_import_audit a
            WHERE a.batch_id = $1 AND a.action = 'insert' AND NOT a.undo AND t.{key} = a.record_key"""
    if kind == "scrap":
        inserted = """DELETE FROM fact_scrap t WHERE t.import_batch = $1 AND NOT EXISTS (
                SELECT FROM record_import_audit a WHERE a.batch_id = $1 AND a.action = 'update' AND NOT a.undo
                  AND a.record_key = t.record_key)"""
    deleted = await conn.execute(f"""
        WITH gone AS (
            {inserted}
            RETURNING t.*
        )
        INSERT INTO record_import_audit (batch_id, kind, record_key, action, undo, old_values)
        SELECT $1::uuid, '{kind}', g.{key}, 'delete', true, to_jsonb(g) FROM gone g""", batch)
    cols = ", ".join(columns)
    restored = await conn.execute(f"""
        WITH prior AS (
            SELECT record_key, old_values FROM record_import_audit
            WHERE batch_id = $1 AND action = 'update' AND NOT undo
        ), now_ AS (
            SELECT t.* FROM {table} t JOIN prior p ON t.{key} = p.record_key
        ), back AS (
            UPDATE {table} t SET ({cols}) = (SELECT {cols} FROM jsonb_populate_record(NULL::{table}, p.old_values))
            FROM prior p WHERE t.{key} = p.record_key
            RETURNING t.*
        )
        INSERT INTO record_import_audit (batch_id, kind, record_key, action, undo, old_values, new_values)
        SELECT $1::uuid, '{kind}', b.{key}, 'update', true, to_jsonb(n), to_jsonb(b)
        FROM back b JOIN now_ n ON n.{key} = b.{key}""", batch)
    await bulk(conn, False)
    await conn.execute("UPDATE record_import_batch SET undone_at = now() WHERE batch_id = $1", batch)
    retracted = await emit_undo_events(conn, kind, batch)
    return Undone(kind, int(deleted.rsplit(" ", 1)[1]), int(restored.rsplit(" ", 1)[1]), retracted)


async def scrap_rate_alerts(conn: asyncpg.Connection, batch: uuid.UUID, threshold: float, min_parts: int) -> int:
    """Emit a ``quality_alert`` (kind ``scrap_rate``) for each machine and shift that the scrap records of
    ``batch`` fall into whose recorded scrap exceeds ``threshold`` of its parts, once the shift has
    ``min_parts`` parts.  The dedupe key is the daemon's own for the shift's scrap alert, so a machine's shift
    is alerted once, whichever of the two noticed first.  Returns how many were emitted."""
    emitted: int = await conn.fetchval("""
        WITH shifts AS (
            SELECT DISTINCT p.equipment_id, p.date_id, p.shift_id
            FROM fact_scrap s JOIN fact_production p USING (production_id)
            WHERE s.import_batch = $1
        ), rates AS (
            SELECT sh.*,
                   (SELECT sum(p.total_parts_produced) FROM fact_production p
                    WHERE (p.equipment_id, p.date_id, p.shift_id) = (sh.equipment_id, sh.date_id, sh.shift_id))
                       AS parts,
                   (SELECT sum(s.scrap_qty) FROM fact_scrap s JOIN fact_production p USING (production_id)
                    WHERE (p.equipment_id, p.date_id, p.shift_id) = (sh.equipment_id, sh.date_id, sh.shift_id))
                       AS scrap
            FROM shifts sh
        )
        SELECT count(emit_event('quality_alert', now(), r.equipment_id, jsonb_build_object(
                   'kind', 'scrap_rate', 'source', 'scrap_records', 'batchId', $1::uuid, 'shift', d.shift_name,
                   'shiftCode', d.shift_code, 'productionDay', r.date_id,
                   'scrapRate', round(r.scrap::numeric / r.parts, 4), 'threshold', $2::float8,
                   'scrapParts', r.scrap, 'partsProduced', r.parts),
               'quality:scrap_rate:' || r.equipment_id || ':' || r.date_id || ':' || r.shift_id))
        FROM rates r JOIN dim_shift d USING (shift_id)
        WHERE r.parts >= $3 AND r.parts > 0 AND r.scrap::float8 / r.parts > $2""", batch, threshold, min_parts)
    return emitted


# The events of an import, emitted by the importer rather than the per-row triggers (migration 0009), in one
# statement just before its transaction commits: the event-order lock of 0005, which the first event takes and
# holds to the commit, is held for this statement only, not for the whole merge.  One event per work order
# inserted ('created', with 0005's dedupe key) or changed ('updated', keyed by the batch).
_BATCH_EVENTS = """
SELECT count(emit_event('maintenance', w.event_time, w.equipment_id, w.data, w.dedupe_key)) FROM (
    SELECT CASE WHEN a.action = 'insert' THEN m.created_at ELSE now() END AS event_time, m.equipment_id,
           maintenance_event_data(m, CASE WHEN a.action = 'insert' THEN 'created' ELSE 'updated' END, $1::uuid, false)
               AS data,
           'maintenance:' || m.maintenance_id || CASE WHEN a.action = 'insert' THEN '' ELSE ':' || $1::uuid::text END
               AS dedupe_key
    FROM record_import_audit a JOIN fact_maintenance m ON m.record_key = a.record_key
    WHERE a.batch_id = $1::uuid AND a.kind = 'maintenance' AND NOT a.undo
    ORDER BY a.audit_id
) w"""


async def emit_batch_events(conn: asyncpg.Connection, kind: Kind, batch: uuid.UUID) -> int:
    """Emit the live events of what ``batch`` wrote (call it last in the import's transaction).  Only work
    orders have events of their own; scrap raises ``quality_alert`` through :func:`scrap_rate_alerts`."""
    if kind != "maintenance":
        return 0
    emitted: int = await conn.fetchval(_BATCH_EVENTS, batch)
    return emitted


# Undo: a work order the batch inserted and the undo deleted gets a 'deleted' event, one it changed and the
# undo restored an 'updated' one with the values put back, both with undo true and `retracts`, the ids of the
# events the batch emitted about that work order (those still kept).  A scrap-rate alert the batch raised is
# retracted by a quality_alert of kind 'retracted', and its dedupe key is released, so that the shift can be
# alerted again if its scrap, without the batch, still crosses the threshold.
_UNDO_EVENTS = """
WITH emitted AS (
    SELECT (e.data ->> 'maintenanceId')::int AS maintenance_id, jsonb_agg(e.event_id ORDER BY e.event_id) AS ids
    FROM api_event e
    WHERE e.event_type = 'maintenance' AND e.data ->> 'batchId' = $1::uuid::text AND e.data ->> 'undo' = 'false'
    GROUP BY 1
)
SELECT count(emit_event('maintenance', now(), w.equipment_id, w.data, w.dedupe_key)) FROM (
    SELECT m.equipment_id,
           maintenance_event_data(m, CASE WHEN a.action = 'delete' THEN 'deleted' ELSE 'updated' END, $1::uuid, true)
               || jsonb_build_object('retracts', COALESCE(x.ids, '[]'::jsonb)) AS data,
           'maintenance:' || m.maintenance_id || ':undo:' || $1::uuid::text AS dedupe_key
    FROM record_import_audit a
    CROSS JOIN LATERAL jsonb_populate_record(NULL::fact_maintenance,
                                             CASE WHEN a.action = 'delete' THEN a.old_values ELSE a.new_values END) m
    LEFT JOIN emitted x ON x.maintenance_id = m.maintenance_id
    WHERE a.batch_id = $1::uuid AND a.kind = 'maintenance' AND a.undo
    ORDER BY a.audit_id
) w"""

_RETRACTED_ALERTS = """
UPDATE api_event SET dedupe_key = NULL
WHERE event_type = 'quality_alert' AND data ->> 'batchId' = $1::uuid::text AND data ->> 'kind' = 'scrap_rate'
RETURNING event_id, equipment_id, data"""

_RETRACT_ALERTS = """
SELECT count(emit_event('quality_alert', now(), a.equipment_id,
                        a.data || jsonb_build_object('kind', 'retracted', 'retractedKind', a.data ->> 'kind',
                                                     'retracts', a.event_id, 'undo', true),
                        'quality:retract:' || a.event_id))
FROM unnest($1::bigint[], $2::int[], $3::jsonb[]) AS a (event_id, equipment_id, data)"""


async def emit_undo_events(conn: asyncpg.Connection, kind: Kind, batch: uuid.UUID) -> int:
    """The events that take back those ``batch`` emitted (call it last in the undo's transaction)."""
    if kind == "maintenance":
        emitted: int = await conn.fetchval(_UNDO_EVENTS, batch)
        return emitted
    if kind != "scrap":
        return 0
    alerts = await conn.fetch(_RETRACTED_ALERTS, batch)
    if not alerts:
        return 0
    retracted: int = await conn.fetchval(
        _RETRACT_ALERTS, [a["event_id"] for a in alerts], [a["equipment_id"] for a in alerts],
        [a["data"] for a in alerts])
    return retracted


# Writing a scrap file while it is read (importer.import_rows, when neither --dry-run nor --skip-bad): each
# chunk of parsed records is COPYed into a chunk table, and one script (one round trip, so that the server
# works on it while Python parses the next chunk) appends it to the staging table (for the duplicate check at
# the end), finds its new and changed records and writes them.  A problem anywhere in the file rolls all of it
# back, so what the chunks wrote before it does not matter; what matters is that no chunk fails on account of
# another: a key twice in one chunk is written once (DISTINCT ON), and a key a previous chunk of this batch
# wrote already is left alone (the duplicate check reports it).  The importers of one kind take turns
# (_KIND_LOCK), so a plain INSERT is safe.
CHUNK_TABLE = "record_stage_chunk"


async def open_scrap_pipeline(conn: asyncpg.Connection, batch: uuid.UUID) -> ScrapPipeline:
    """Take the kind's lock, create the chunk and changes tables, and see whether the writes may run without
    the per-row foreign-key triggers (:func:`_may_skip_row_triggers`)."""
    await conn.execute(_KIND_LOCK, "scrap")
    await conn.execute(f"CREATE TEMPORARY TABLE {CHUNK_TABLE} (LIKE {STAGE}) ON COMMIT DROP")
    await conn.execute(f"""CREATE TEMPORARY TABLE {SCRAP_CHANGES} (
        record_key text, equipment_id integer, recorded_at timestamptz, product_id integer, scrap_qty integer,
        scrap_code text, scrap_cost numeric, comments text, production_id integer, old_id integer)
        ON COMMIT DROP""")
    role = await conn.fetchval("SELECT current_setting('session_replication_role')")
    return ScrapPipeline(conn, batch, await _may_skip_row_triggers(conn), role)


@dataclass
class ScrapPipeline:
    conn: asyncpg.Connection
    batch: uuid.UUID
    may_skip_triggers: bool
    role: str

    def script(self) -> str:
        """The SQL of one chunk: a simple-query script, so one round trip (the batch id and the setting are
        this process's own values, quoted as literals)."""
        batch = f"'{self.batch}'::uuid"
        replica = ""
        if self.may_skip_triggers:  # only when every id the chunk refers to exists (and is locked)
            replica = (f"SELECT set_config('session_replication_role', "
                       f"CASE WHEN ({_CHUNK_REFERENCES}) THEN 'replica' ELSE '{self.role}' END, true);")
        return f"""
INSERT INTO {STAGE} SELECT * FROM {CHUNK_TABLE};
TRUNCATE {SCRAP_CHANGES};
INSERT INTO {SCRAP_CHANGES}
SELECT DISTINCT ON (s.record_key) s.record_key, s.equipment_id, s.recorded_at, s.product_id, s.scrap_qty,
       s.scrap_code, s.scrap_cost, s.comments, prod.production_id, f.scrap_id
FROM {CHUNK_TABLE} s
CROSS JOIN LATERAL (
    SELECT (SELECT p.production_id FROM fact_production p
            WHERE p.equipment_id = s.equipment_id AND p.start_time <= s.recorded_at AND p.end_time > s.recorded_at
            ORDER BY p.start_time DESC LIMIT 1) AS production_id
) prod
-- one index probe per record: a hash join would read all of fact_scrap for every chunk
LEFT JOIN LATERAL (SELECT * FROM fact_scrap f WHERE f.record_key = s.record_key LIMIT 1) f ON true
WHERE f.scrap_id IS NULL
   OR (f.import_batch IS DISTINCT FROM {batch}
       AND (f.production_id, f.product_id, f.equipment_id, f.scrap_code, f.scrap_qty, f.scrap_cost, f.comments,
            f.recorded_at)
           IS DISTINCT FROM
           (prod.production_id, s.product_id, s.equipment_id, s.scrap_code, s.scrap_qty, s.scrap_cost,
            s.comments, s.recorded_at))
ORDER BY s.record_key, s.line;
{replica}
{_SCRAP_INSERT.replace("$1::uuid", batch)};
{_SCRAP_UPDATE.replace("$1::uuid", batch)};
INSERT INTO record_scrap_written SELECT count(*) FILTER (WHERE old_id IS NULL), count(old_id),
                                        count(*) FILTER (WHERE production_id IS NULL) FROM {SCRAP_CHANGES};
{f"SELECT set_config('session_replication_role', '{self.role}', true);" if replica else ""}
TRUNCATE {CHUNK_TABLE};"""

    async def start(self) -> None:
        await self.conn.execute("CREATE TEMPORARY TABLE record_scrap_written (inserted bigint, updated bigint, "
                                "without_production bigint) ON COMMIT DROP")

    async def written(self) -> Written:
        row = await self.conn.fetchrow("SELECT COALESCE(sum(inserted), 0)::bigint AS inserted, "
                                       "COALESCE(sum(updated), 0)::bigint AS updated, "
                                       "COALESCE(sum(without_production), 0)::bigint AS without_production "
                                       "FROM record_scrap_written")
        await self.conn.execute(f"DROP TABLE record_scrap_written, {SCRAP_CHANGES}, {CHUNK_TABLE}")
        return Written(row["inserted"], row["updated"], row["without_production"])


_CHUNK_REFERENCES = f"""
{_LOCKED_REFERENCES}
SELECT count(DISTINCT c.production_id) = (SELECT count(*) FROM production)
   AND count(DISTINCT c.product_id) = (SELECT count(*) FROM product)
   AND count(DISTINCT c.equipment_id) = (SELECT count(*) FROM equipment)
FROM {SCRAP_CHANGES} c"""
