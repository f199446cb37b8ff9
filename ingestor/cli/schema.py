"""``ingestor schema apply|status|roles``: create or upgrade the analytics schema, show where a database stands,
or the least-privilege roles (docs/schema.md "Roles")."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from ingestor.cli.common import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, database_url, load_or_report
from ingestor.database.config import DATABASE_URL_ENV
from ingestor.database.connection import DatabaseUnavailable, connect, redact
from ingestor.database.schema import SchemaError, apply_schema, schema_status
from ingestor.database.schema.roles import RoleNames, apply_roles, roles_sql


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
            action.add_argument("--roles", action="store_true",
                                help="then create the owner, writer and reader roles (when missing) and grant them")
            _role_arguments(action)
    roles = schema_commands.add_parser("roles", help="the least-privilege roles: print their SQL for a DBA")
    roles.add_argument("--print", action="store_true", required=True, dest="print_sql",
                       help="print the SQL that creates and grants the roles")
    roles.add_argument("--schema", default="public", help="the schema the ingestor's tables are in (public)")
    _role_arguments(roles)
    schema.set_defaults(command_main=run)


def _role_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = RoleNames()
    parser.add_argument("--owner-role", default=defaults.owner, help=f"owns the schema ({defaults.owner})")
    parser.add_argument("--writer-role", default=defaults.writer, help=f"the daemon's role ({defaults.writer})")
    parser.add_argument("--reader-role", default=defaults.reader,
                        help=f"the API's and dashboards' role ({defaults.reader})")


def _role_names(args: argparse.Namespace) -> RoleNames | None:
    try:
        return RoleNames(args.owner_role, args.writer_role, args.reader_role)
    except ValueError as exc:
        print(f"ingestor schema: {exc}", file=sys.stderr)
        return None


def run(args: argparse.Namespace) -> int:
    names: RoleNames | None = None
    if args.schema_command == "roles" or getattr(args, "roles", False):
        names = _role_names(args)
        if names is None:
            return EXIT_CONFIG
    if args.schema_command == "roles":
        assert names is not None
        sys.stdout.write(roles_sql(names, args.schema))
        return EXIT_OK
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
        return asyncio.run(_schema_action(args.schema_command, url, mode, names))
    except DatabaseUnavailable as exc:
        print(f"ingestor schema: {exc}", file=sys.stderr)
        return EXIT_FAILURE


async def _schema_action(action: str, url: str, mode: str, names: RoleNames | None) -> int:
    conn = await connect(url)
    try:
        if action == "apply":
            report = await apply_schema(conn, timescaledb=mode)
            print(f"database:  {redact(url)}")
            print(f"applied:   {', '.join(report.applied) if report.applied else 'nothing (already up to date)'}")
            if names is not None:
                await apply_roles(conn, names)
                print(f"roles:     owner {names.owner}, writer {names.writer}, reader {names.reader} "
                      "(grant them to login users: GRANT " + names.writer + " TO <login>)")
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
