"""Importing plant records: check every row, stage them, and write them by natural key in one transaction, or
write nothing and say every problem at once.

The same path serves a file (``ingestor import``) and the REST API (``POST /api/records/…``): both hand in a
header and rows of text fields, so both check exactly the same way.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import asyncpg

from ingestor.records.kinds import Header, Kind, Problem, RowParser, Staged
from ingestor.records.store import (
    CHUNK_TABLE,
    STAGE,
    MaintenanceLinks,
    Written,
    close_batch,
    create_stage,
    drop_lines,
    duplicates,
    emit_batch_events,
    load_plant,
    maintenance_links,
    merge,
    open_batch,
    open_scrap_pipeline,
    stage,
    stage_chunk,
)
from ingestor.records.values import DateOrder


@dataclass
class ImportResult:
    kind: Kind
    source: str
    rows_read: int = 0
    problems: list[Problem] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)
    batch: uuid.UUID | None = None
    """The batch written; None when nothing was written (problems, a dry run, or nothing changed)."""
    written: Written = field(default_factory=Written)
    unchanged: int = 0
    rejected_lines: list[int] = field(default_factory=list)
    dry_run: bool = False
    links: MaintenanceLinks | None = None
    scrap_without_production: int = 0
    keys: dict[int, str] = field(default_factory=dict)
    """line → natural key of each record written (only when asked for, the API's answer)"""
    events: int = 0
    """live events the import emitted (a work order's ``maintenance`` event per insert and change)"""

    @property
    def refused(self) -> bool:
        """True when problems stopped the import (nothing written)."""
        return bool(self.problems) and not self.rejected_lines


class _Rollback(Exception):
    pass


async def import_rows(conn: asyncpg.Connection, kind: Kind, names: list[str],
                      rows: Iterable[tuple[int, list[str]]], *, source: str, encoding: str | None = None,
                      dry_run: bool = False, skip_bad: bool = False, date_order: DateOrder | None = None,
                      want_keys: bool = False) -> ImportResult:
    """Check and write ``rows`` (``(line, fields)`` under the header ``names``) as records of ``kind``.

    Problems stop the import (nothing written) unless ``skip_bad``: then the good rows are written and the
    bad ones listed in ``rejected_lines``.  ``dry_run`` checks and counts what would change, then rolls back.
    """
    result = ImportResult(kind, source, dry_run=dry_run)
    header = Header(kind, names)
    result.ignored_columns = header.ignored
    if header.problems:
        result.problems = header.problems
        return result
    plant = await load_plant(conn)
    parser = RowParser(header, plant, date_order)
    problems: list[Problem] = []

    def parsed() -> Iterator[Staged]:
        for line, fields in rows:
            result.rows_read += 1
            record = parser.parse(line, fields, problems)
            if record is not None:
                if want_keys:
                    result.keys[line] = record[1]
                yield record

    if kind == "scrap" and not dry_run and not skip_bad:
        await _import_scrap_streaming(conn, result, header, parsed(), problems, encoding)
        return result
    try:
        async with conn.transaction():
            await create_stage(conn, kind)
            await stage(conn, kind, parsed())
            repeated: list[int] = []
            for key, lines in await duplicates(conn):
                for line in lines[1:]:
                    problems.append(_duplicate(header, key, line, lines[0]))
                    repeated.append(line)
            problems.sort(key=lambda p: p.line)
            result.problems = problems
            if problems and not skip_bad:
                raise _Rollback
            if repeated:
                await drop_lines(conn, repeated)
            result.rejected_lines = sorted({p.line for p in problems})
            for line in result.rejected_lines:
                result.keys.pop(line, None)
            batch = await open_batch(conn, kind, source, encoding)
            result.written = await merge(conn, kind, batch, dry_run=dry_run)
            result.unchanged = result.rows_read - len(result.rejected_lines) - result.written.inserted \
                - result.written.updated
            if kind == "maintenance":
                result.links = await maintenance_links(conn, batch)
            elif kind == "scrap":
                result.scrap_without_production = result.written.without_production
            kept = await close_batch(conn, batch, rows_read=result.rows_read, written=result.written,
                                     unchanged=result.unchanged, rejected=len(result.rejected_lines))
            if dry_run:
                raise _Rollback
            if kept:
                result.events = await emit_batch_events(conn, kind, batch)
            result.batch = batch if kept else None
    except _Rollback:
        pass
    return result


def _duplicate(header: Header, key: str, line: int, first: int) -> Problem:
    if header.kind == "scrap" and "scrap_id" not in header.index:
        column = "+".join(header.label(c) for c in ("equipment", "time", "reason"))
        return Problem(line, column, f"the same equipment, time and reason as line {first}")
    column = {"maintenance": "work_order", "scrap": "scrap_id", "equipment": "legacy_id"}[header.kind]
    if header.kind == "equipment" and "code" in header.index:
        column = "code"
    return Problem(line, header.label(column), f"{key!r} appears again (first on line {first})")


CHUNK = 50_000
"""records per chunk of a streamed scrap import (some 25 MB of parsed rows at a time)"""


async def _import_scrap_streaming(conn: asyncpg.Connection, result: ImportResult, header: Header,
                                  records: Iterator[Staged], problems: list[Problem], encoding: str | None) -> None:
    """A scrap file written while it is read: the server stages, compares and writes one chunk while Python
    parses the next (store.ScrapPipeline).  Any problem rolls the whole import back, as on the other path; a
    problem found while reading stops the writing (the rest is only staged, for the duplicate check)."""
    pending: asyncio.Future[str] | None = None
    try:
        async with conn.transaction():
            await create_stage(conn, "scrap")
            batch = await open_batch(conn, "scrap", result.source, encoding)
            pipeline = await open_scrap_pipeline(conn, batch)
            await pipeline.start()
            script = pipeline.script()
            for chunk in _chunks(records, CHUNK):  # parsing the chunk while the server works on the last
                if pending is not None:
                    await pending
                await stage_chunk(conn, chunk)
                if problems:  # nothing of this import is kept: only stage, for the duplicate check
                    pending = asyncio.ensure_future(conn.execute(f"INSERT INTO {STAGE} SELECT * FROM {CHUNK_TABLE}; "
                                                                 f"TRUNCATE {CHUNK_TABLE}"))
                else:
                    pending = asyncio.ensure_future(conn.execute(script))
                await asyncio.sleep(0)  # let it send the script before parsing goes on
            if pending is not None:
                await pending
            for key, lines in await duplicates(conn):
                for line in lines[1:]:
                    problems.append(_duplicate(header, key, line, lines[0]))
            problems.sort(key=lambda p: p.line)
            result.problems = problems
            if problems:
                raise _Rollback
            result.written = await pipeline.written()
            result.unchanged = result.rows_read - result.written.inserted - result.written.updated
            result.scrap_without_production = result.written.without_production
            kept = await close_batch(conn, batch, rows_read=result.rows_read, written=result.written,
                                     unchanged=result.unchanged, rejected=0)
            result.batch = batch if kept else None
    except _Rollback:
        pass
    except BaseException:
        if pending is not None and not pending.done():
            pending.cancel()
        raise


def _chunks(records: Iterator[Staged], size: int) -> Iterator[list[Staged]]:
    chunk: list[Staged] = []
    for record in records:
        chunk.append(record)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
