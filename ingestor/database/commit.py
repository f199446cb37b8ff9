"""Committing spool batches: rows already in binary COPY format, their dead letters and the spool's watermark,
in one transaction.

``commit_batches`` writes the rows with ``COPY … FROM STDIN (FORMAT binary)``, records the dead letters and
advances the watermark (:mod:`ingestor.database.watermark`) all in one transaction: after a crash at any
instant, either the rows and the new watermark are both in the database or neither is, which is what makes
replaying the spool exactly-once.  When the database refuses some rows (a value it cannot store, a
constraint), the batch is split in savepoints to find them; they go to ``ingest_dead_letter`` with the reason
and the rest lands.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import asyncpg

from ingestor.contract import from_timestamp_us, get_logger
from ingestor.database.copy_format import COLUMNS, HEADER, TRAILER, decode_row, split_rows
from ingestor.database.watermark import advance_watermark

log = get_logger(__name__)

DATA_ERRORS: tuple[type[BaseException], ...] = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)
"""The database refuses the data: find the rows at fault, keep them aside, write the rest."""


@dataclass(frozen=True)
class DeadLetter:
    """A reading that is kept aside instead of written, with why."""

    spool_seq: int
    reason: str
    equipment_code: str | None = None
    equipment_id: int | None = None
    parameter: str | None = None
    unit_code: str | None = None
    unit_id: int | None = None
    quality: int | None = None
    timestamp_us: int | None = None
    value: float | None = None
    detail: str | None = None


@dataclass(frozen=True)
class Committed:
    """What one commit wrote: rows into fact_sensor_event, and every reading kept aside (those the caller
    gave, and those the database refused)."""

    written: int
    dead_letters: list[DeadLetter]


async def commit_batches(conn: asyncpg.Connection, *, spool_id: str, instance_id: str, rows: Sequence[bytes],
                         row_count: int, dead: Sequence[DeadLetter], last_seq: int) -> Committed:
    """Write ``rows`` (encoded parts holding ``row_count`` rows in all) and the dead letters, and move the
    spool's watermark to ``last_seq``, in one transaction."""
    async with conn.transaction():
        written, refused = await _copy_isolating(conn, rows, whole_rows=row_count)
        letters = list(dead) + [_refused_letter(row, reason, last_seq) for row, reason in refused]
        if letters:
            await _insert_dead_letters(conn, instance_id, spool_id, letters)
        await advance_watermark(conn, spool_id, last_seq, written)
    return Committed(written, letters)


async def _copy(conn: asyncpg.Connection, rows: Sequence[bytes]) -> None:
    async def source() -> AsyncIterator[bytes]:
        yield HEADER
        for part in rows:
            yield part
        yield TRAILER

    await conn.copy_to_table("fact_sensor_event", source=source(), columns=COLUMNS, format="binary")


async def _copy_isolating(conn: asyncpg.Connection, rows: Sequence[bytes], *, whole_rows: int = 0
                          ) -> tuple[int, list[tuple[bytes, str]]]:
    """COPY the rows in a savepoint; when the database refuses the data, split until the refused rows are
    found.  ``rows`` may be parts holding many rows each (``whole_rows`` of them in all): they are split
    into single rows first."""
    if not rows:
        return 0, []
    try:
        async with conn.transaction():
            await _copy(conn, rows)
        return (whole_rows or len(rows)), []
    except DATA_ERRORS as exc:
        if whole_rows:
            singles = [row for part in rows for row in split_rows(part)]
            log.warning("the database refused rows of a batch; isolating them", rows=len(singles),
                        error=str(exc))
            return await _copy_isolating(conn, singles)
        if len(rows) == 1:
            return 0, [(rows[0], f"{type(exc).__name__}: {exc}")]
    half = len(rows) // 2
    written_a, refused_a = await _copy_isolating(conn, rows[:half])
    written_b, refused_b = await _copy_isolating(conn, rows[half:])
    return written_a + written_b, refused_a + refused_b


def _refused_letter(row: bytes, detail: str, spool_seq: int) -> DeadLetter:
    fields = decode_row(row)
    return DeadLetter(spool_seq=spool_seq, reason="database_refused", equipment_id=fields["equipment_id"],
                      parameter=fields["parameter"], unit_id=fields["unit_id"], quality=fields["quality"],
                      timestamp_us=fields["timestamp_us"], value=fields["value"], detail=detail)


async def _insert_dead_letters(conn: asyncpg.Connection, instance_id: str, spool_id: str,
                               letters: Sequence[DeadLetter]) -> None:
    """Record dead letters.  Whatever is in them, this must not fail for the data's sake, or the batch
    could never commit: values are bounded to their columns, and a letter that still does not fit is
    stored as its reason and a text rendering of it."""
    try:
        async with conn.transaction():
            await conn.executemany(
                "INSERT INTO ingest_dead_letter (instance_id, spool_id, spool_seq, reason, detail, equipment_code, "
                "equipment_id, parameter, unit_code, unit_id, quality, timestamp_us, event_ts, value) "
                "VALUES ($1, $14, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                [(instance_id, d.spool_seq, d.reason[:50], d.detail, _text(d.equipment_code, 100),
                  _int(d.equipment_id, 2**31), _text(d.parameter, 200), _text(d.unit_code, 50),
                  _int(d.unit_id, 2**31), _int(d.quality, 2**15), _int(d.timestamp_us, 2**63),
                  _stamp(d.timestamp_us), _float(d.value), spool_id) for d in letters])
    except DATA_ERRORS as exc:
        log.warning("dead letters stored as text", error=str(exc))
        await conn.executemany(
            "INSERT INTO ingest_dead_letter (instance_id, spool_id, spool_seq, reason, detail) "
            "VALUES ($1, $2, $3, $4, $5)",
            [(instance_id, spool_id, d.spool_seq, d.reason[:50], repr(d)) for d in letters])


def _text(value: str | None, limit: int) -> str | None:
    return None if value is None else str(value)[:limit]


def _int(value: int | None, bound: int) -> int | None:
    return value if isinstance(value, int) and -bound <= value < bound else None


def _float(value: float | None) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _stamp(timestamp_us: int | None) -> object:
    if timestamp_us is None:
        return None
    try:
        return from_timestamp_us(timestamp_us)
    except (OverflowError, ValueError, OSError):
        return None

