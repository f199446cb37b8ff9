"""Which spool batches a database already holds: one watermark row per spool, guarded by an advisory lock.

Every spool has a random id (made when its file is created).  ``ingest_watermark`` keeps, per spool id, the
sequence number of the last spool batch committed; the writer moves it in the same transaction as the rows
(:mod:`ingestor.database.commit`), which is what makes replaying a spool after a crash exactly-once.  A
session advisory lock on the spool id makes sure that two daemons never write from the same spool (a copied
spool directory) at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg


class SpoolInUse(Exception):
    """Another daemon holds this spool's lock in the database (a copy of the same spool is running)."""


class WatermarkMoved(Exception):
    """The watermark is not where this writer left it: someone else wrote from this spool."""


@dataclass(frozen=True)
class SpoolClaim:
    """This connection writes for the spool: the database's identity and the spool's watermark in it."""

    database_id: str
    watermark: int


async def claim_spool(conn: asyncpg.Connection, spool_id: str, instance_id: str) -> SpoolClaim:
    """Take the spool's advisory lock for this session and read its watermark (0 for a spool never written).
    Raises :class:`SpoolInUse` when another session holds the lock."""
    if not await conn.fetchval("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", f"ingestor.spool:{spool_id}"):
        raise SpoolInUse(
            f"another daemon is writing from a spool with the same id ({spool_id}) to this database: was a spool "
            "directory copied? every daemon needs a spool of its own")
    database_id = str(await conn.fetchval("SELECT database_id FROM ingest_database"))
    await conn.execute("INSERT INTO ingest_watermark (spool_id, instance_id) VALUES ($1, $2) "
                       "ON CONFLICT (spool_id) DO UPDATE SET instance_id = EXCLUDED.instance_id "
                       "WHERE ingest_watermark.instance_id <> EXCLUDED.instance_id", spool_id, instance_id)
    watermark = int(await conn.fetchval("SELECT last_seq FROM ingest_watermark WHERE spool_id = $1", spool_id))
    return SpoolClaim(database_id, watermark)


async def advance_watermark(conn: asyncpg.Connection, spool_id: str, last_seq: int, rows: int) -> None:
    """Move the spool's watermark to ``last_seq`` inside the caller's transaction.  Raises
    :class:`WatermarkMoved` when it is already there or past it."""
    status = await conn.execute(
        "UPDATE ingest_watermark SET last_seq = $2, rows_written = rows_written + $3, updated_at = now() "
        "WHERE spool_id = $1 AND last_seq < $2", spool_id, last_seq, rows)
    if status != "UPDATE 1":
        raise WatermarkMoved(f"the watermark of spool {spool_id} is already at or past {last_seq}; another daemon "
                             "is writing from a copy of this spool")
