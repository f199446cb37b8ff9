"""``ingestor import maintenance|scrap|equipment FILE`` and ``ingestor import undo BATCH``: plant records from
a CMMS export, a quality station or a legacy system into the facts and dimensions (docs/records.md).

Every row is checked before anything is written; every problem is printed as ``FILE:LINE: column: message``
and the exit code is 2 with nothing written, unless ``--skip-bad`` writes the good rows and puts the bad ones
in a rejects file.  Importing the same file again writes nothing; an edited file updates the rows it changed.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import sys
import uuid
from pathlib import Path

import asyncpg

from ingestor.cli.common import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, database_url, load_or_report
from ingestor.config import IngestorConfig
from ingestor.database.config import DATABASE_URL_ENV
from ingestor.database.connection import DatabaseUnavailable, connect, redact
from ingestor.database.prepare import prepare_database
from ingestor.database.schema import SchemaError
from ingestor.records import KINDS, ImportResult, Kind, RecordFile, SourceError, UndoRefused, import_rows, undo_batch
from ingestor.records.source import named_encoding

SHOWN_PROBLEMS = 1000


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``import`` on the ``ingestor`` command's subparsers."""
    parser = commands.add_parser(
        "import", help="import maintenance, scrap or legacy equipment records from a file, or undo an import",
        description="Import plant records (CSV or JSON lines) by natural key; every import is a batch that "
                    "`ingestor import undo BATCH` takes back.")
    kinds = parser.add_subparsers(dest="kind", required=True, metavar="KIND")
    for kind, text in (("maintenance", "maintenance work orders (a CMMS export)"),
                       ("scrap", "scrap records (quality station, MES)"),
                       ("equipment", "equipment from a legacy system")):
        sub = kinds.add_parser(kind, help=text, description=f"Import {text}.")
        sub.add_argument("file", type=Path, metavar="FILE", help="CSV (, ; tab |) or JSON lines (.jsonl)")
        sub.add_argument("--dry-run", action="store_true", help="check and count, write nothing")
        sub.add_argument("--skip-bad", action="store_true",
                         help="write the good rows, and the bad ones to a rejects file")
        sub.add_argument("--rejects", type=Path, metavar="PATH",
                         help="where --skip-bad puts the bad rows (default: FILE.rejects.csv beside FILE)")
        sub.add_argument("--encoding", help="the file's encoding (default: detected: UTF-8, BOM, Latin-1, …)")
        sub.add_argument("--delimiter", help="CSV delimiter (default: detected from the header: , ; tab |)")
        sub.add_argument("--date-order", choices=("dmy", "mdy"),
                         help="how to read slashed dates such as 03/04/2025 (refused without it)")
        _connection(sub)
        sub.set_defaults(command_main=run_import)
    undo = kinds.add_parser("undo", help="take an import batch back out",
                            description="Delete what a batch inserted and restore what it changed.")
    undo.add_argument("batch", metavar="BATCH", help="the batch id an import printed")
    _connection(undo)
    undo.set_defaults(command_main=run_undo)


def _connection(parser: argparse.ArgumentParser) -> None:
    target = parser.add_mutually_exclusive_group()
    target.add_argument("-c", "--config", type=Path,
                        help="YAML configuration: its database, and its plant synced into the dimensions first")
    target.add_argument("--dsn", help=f"database URL (default: ${DATABASE_URL_ENV}); uses the dimensions as "
                                      "they are")


def _target(args: argparse.Namespace) -> tuple[IngestorConfig | None, str | None, int]:
    config = None
    if args.config is not None:
        config = load_or_report(args.config)
        if config is None:
            return None, None, EXIT_CONFIG
    url = database_url(args.dsn, config)
    if url is None:
        print(f"ingestor import: give -c FILE or --dsn URL (or set ${DATABASE_URL_ENV})", file=sys.stderr)
        return None, None, EXIT_CONFIG
    return config, url, EXIT_OK


async def _open(config: IngestorConfig | None, url: str) -> asyncpg.Connection:
    conn = await connect(url, config.database.connect_timeout if config else 10.0)
    try:
        if config is not None:
            await prepare_database(conn, config.database, config.plant)
        elif await conn.fetchval("SELECT to_regclass('record_import_batch') IS NULL"):
            raise SchemaError("the database has no plant-record tables (migration 0007): run `ingestor schema "
                              "apply`, or import with -c FILE")
    except BaseException:
        await conn.close()
        raise
    return conn


def run_import(args: argparse.Namespace) -> int:
    config, url, code = _target(args)
    if url is None:
        return code
    try:
        source = RecordFile(args.file, encoding=named_encoding(args.encoding) if args.encoding else None,
                            delimiter=args.delimiter.replace("\\t", "\t") if args.delimiter else None)
    except SourceError as exc:
        print(f"ingestor import: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        result = asyncio.run(_import(config, url, args.kind, source, args))
    except SourceError as exc:
        print(f"ingestor import: {exc}; nothing was written", file=sys.stderr)
        return EXIT_CONFIG
    except DatabaseUnavailable as exc:
        print(f"ingestor import: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except SchemaError as exc:
        print(f"ingestor import: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return _report(result, source, args, url)


async def _import(config: IngestorConfig | None, url: str, kind: Kind, source: RecordFile,
                  args: argparse.Namespace) -> ImportResult:
    conn = await _open(config, url)
    try:
        return await import_rows(conn, kind, source.header, source.rows(), source=str(source.path),
                                 encoding=source.encoding.label, dry_run=args.dry_run, skip_bad=args.skip_bad,
                                 date_order=args.date_order)
    finally:
        await conn.close()


def _report(result: ImportResult, source: RecordFile, args: argparse.Namespace, url: str) -> int:
    name = str(source.path)
    for problem in result.problems[:SHOWN_PROBLEMS]:
        print(problem.render(name), file=sys.stderr)
    if len(result.problems) > SHOWN_PROBLEMS:
        print(f"{name}: … and {len(result.problems) - SHOWN_PROBLEMS} more problems", file=sys.stderr)
    layout = "JSON lines" if source.json_lines else \
        "delimiter " + {"\t": "tab"}.get(source.delimiter, repr(source.delimiter))
    print(f"file:      {name} ({source.encoding.label}, {layout})")
    if result.ignored_columns:
        print(f"ignored:   columns {', '.join(repr(c) for c in result.ignored_columns)}")
    if result.refused:
        count = len(result.problems)
        print(f"{name}: {count} problem{'s' if count != 1 else ''} in {result.rows_read} rows; nothing was written",
              file=sys.stderr)
        return EXIT_CONFIG
    print(f"database:  {redact(url)}")
    print(f"rows:      {result.rows_read} read, {len(result.rejected_lines)} rejected")
    verb = "would be" if result.dry_run else ""
    w = result.written
    print(f"written:   {w.inserted} {verb + ' ' if verb else ''}inserted, {w.updated} "
          f"{verb + ' ' if verb else ''}updated, {result.unchanged} unchanged")
    if result.rejected_lines:
        path = args.rejects or source.path.with_name(source.path.name + ".rejects.csv")
        _write_rejects(result, source, path)
        print(f"rejects:   {len(result.rejected_lines)} rows in {path}")
    if result.links is not None and w.inserted + w.updated:
        links = result.links
        print(f"downtime:  {len(links.corrective_linked)} corrective work orders matched to a stop of their "
              f"machine, {len(links.corrective_unlinked)} without one")
        if links.preventive_without_stop:
            print(f"warning:   preventive work without a stop of its machine: "
                  f"{', '.join(links.preventive_without_stop)}")
    if result.scrap_without_production:
        print(f"warning:   {result.scrap_without_production} scrap records fall in no production record "
              "(no shift derived for that machine and time): they count in no scrap rate")
    if result.dry_run:
        print("dry run:   nothing was written")
    elif result.batch is not None:
        print(f"batch:     {result.batch}   (undo: ingestor import undo {result.batch})")
    else:
        print("batch:     none, nothing changed")
    return EXIT_OK


def _write_rejects(result: ImportResult, source: RecordFile, path: Path) -> None:
    """The rejected rows as they were, in UTF-8 CSV with the file's header and an ``error`` column, so they
    can be fixed and imported again (unknown columns such as ``error`` are ignored)."""
    messages: dict[int, list[str]] = {}
    for problem in result.problems:
        messages.setdefault(problem.line, []).append(f"{problem.column}: {problem.message}")
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, delimiter=source.delimiter or ",")
        writer.writerow([*source.header, "error"])
        for line, fields in source.rows():
            if line in messages:
                writer.writerow([*fields, "; ".join(messages[line])])


def run_undo(args: argparse.Namespace) -> int:
    config, url, code = _target(args)
    if url is None:
        return code
    try:
        batch = uuid.UUID(args.batch)
    except ValueError:
        print(f"ingestor import undo: {args.batch!r} is not a batch id", file=sys.stderr)
        return EXIT_CONFIG
    try:
        return asyncio.run(_undo(config, url, batch))
    except (DatabaseUnavailable, SchemaError) as exc:
        print(f"ingestor import undo: {exc}", file=sys.stderr)
        return EXIT_FAILURE


async def _undo(config: IngestorConfig | None, url: str, batch: uuid.UUID) -> int:
    conn = await _open(config, url)
    try:
        async with conn.transaction():
            done = await undo_batch(conn, batch)
    except UndoRefused as exc:
        print(f"ingestor import undo: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except asyncpg.ForeignKeyViolationError as exc:
        print(f"ingestor import undo: facts now refer to records of batch {batch}, so it cannot be taken back "
              f"({exc.detail or exc})", file=sys.stderr)
        return EXIT_CONFIG
    finally:
        await conn.close()
    print(f"undone:    batch {batch} ({done.kind}): {done.deleted} deleted, {done.restored} restored, "
          f"{done.events} events emitted to take back its events")
    return EXIT_OK


__all__ = ["KINDS", "add_parser"]
