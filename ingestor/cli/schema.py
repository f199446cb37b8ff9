"""``ingestor schema apply|status``: create or upgrade the analytics schema, or show where a database stands."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from ingestor.cli.common import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, database_url, load_or_report
from ingestor.database.config import DATABASE_URL_ENV
from ingestor.database.connection import DatabaseUnavailable, connect, redact
from ingestor.database.schema import SchemaError, apply_schema, schema_status


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    schema = commands.add_parser("schema", help="apply the analytics schema or show its status")
    schema_commands = schema.add_subparsers(dest="schema_command", required=True, metavar="ACTION")
    for name, text in (("apply", "create or upgrade the schema (idempotent)"),
                       ("status", "show the database tier, schema version and what was skipped")):
        action = schema_commands.add_parser(name, help=text)
        action.add_argument("-c", "--config", type=Path, help="take the database from this configuration")
        action.add_argument("--dsn", help=f"database URL (default: ${DATABASE_URL_ENV}, then the configuration)")
        if name == "apply":
            action.add_argument("--timescaledb", choices=("auto", "require", "off"), default=None,
                                help="use TimescaleDB when available (auto), insist on it, or never use it")
    schema.set_defaults(command_main=run)


def run(args: argparse.Namespace) -> int:
    config = None
    if args.config is not None:
        config = load_or_report(args.config)
        if config is None:
            return EXIT_CONFIG
    url = database_url(args.dsn, config)
    if not url:
        print(f"ingestor schema: give --dsn, set {DATABASE_URL_ENV} or pass -c CONFIG", file=sys.stderr)
        return EXIT_CONFIG
    mode = getattr(args, "timescaledb", None) or (config.database.timescaledb if config else "auto")
    try:
        return asyncio.run(_schema_action(args.schema_command, url, mode))
    except DatabaseUnavailable as exc:
        print(f"ingestor schema: {exc}", file=sys.stderr)
        return EXIT_FAILURE


async def _schema_action(action: str, url: str, mode: str) -> int:
    conn = await connect(url)
    try:
        if action == "apply":
            report = await apply_schema(conn, timescaledb=mode)
            print(f"database:  {redact(url)}")
            print(f"applied:   {', '.join(report.applied) if report.applied else 'nothing (already up to date)'}")
        status = await schema_status(conn)
        if action == "status":
            print(f"database:  {redact(url)}")
        print("\n".join(status.lines()))
        return EXIT_OK
    except SchemaError as exc:
        print(f"ingestor schema: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        await conn.close()
