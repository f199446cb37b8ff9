"""The ``ingestor`` command: run the daemon, check a configuration, manage the schema.

Exit codes: 0 success, 1 runtime failure (database unreachable, …), 2 invalid configuration or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from ingestor import __version__
from ingestor.config import ConfigError, IngestorConfig, load_config
from ingestor.database import DATABASE_URL_ENV, DatabaseUnavailable, connect, redact

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ingestor", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"ingestor {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the daemon")
    run.add_argument("-c", "--config", required=True, type=Path, help="YAML configuration file")

    check = commands.add_parser("check-config", help="validate a configuration file and summarise it")
    check.add_argument("config", type=Path)

    bench = commands.add_parser("bench", help="measure how fast the database takes readings, and the pipeline")
    bench.add_argument("--dsn", help=f"server to measure (default: ${DATABASE_URL_ENV}); a scratch database is "
                                     "created on it and dropped afterwards")
    bench.add_argument("--rows", type=int, default=1_000_000, help="readings per measurement (default 1,000,000)")
    bench.add_argument("--json", action="store_true", help="print one JSON object")

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

    discover = commands.add_parser("discover", help="browse a server and print a tag-map skeleton")
    protocols = discover.add_subparsers(dest="protocol", required=True, metavar="PROTOCOL")
    from connectors.opcua.discover import add_parser as add_opcua_discover

    add_opcua_discover(protocols)
    from ingestor.derive.cli import add_parser as add_derive

    add_derive(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        return check_config(args.config)
    if args.command == "run":
        config = _load_or_report(args.config)
        if config is None:
            return EXIT_CONFIG
        from ingestor.runtime import run_daemon

        return run_daemon(config)
    if args.command == "schema":
        return _schema(args)
    if args.command == "bench":
        import os

        from ingestor.bench import bench

        dsn = args.dsn or os.environ.get(DATABASE_URL_ENV)
        if not dsn:
            print(f"ingestor bench: give --dsn or set {DATABASE_URL_ENV}", file=sys.stderr)
            return EXIT_CONFIG
        return bench(dsn, args.rows, args.json)
    if args.command == "discover":
        return int(args.discover(args))
    if args.command == "derive":
        return int(args.derive(args))
    return EXIT_CONFIG


def _load_or_report(path: Path) -> IngestorConfig | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        count = len(exc.problems)
        print(f"{path}: {count} error{'s' if count != 1 else ''}; nothing was started", file=sys.stderr)
        return None


def check_config(path: Path) -> int:
    config = _load_or_report(path)
    if config is None:
        return EXIT_CONFIG
    print("\n".join(summary(config, path)))
    return EXIT_OK


def summary(config: IngestorConfig, path: Path) -> list[str]:
    """A short human-readable description of a valid configuration."""
    plant = config.plant
    areas = [a for s in plant.sites for a in s.areas]
    centers = [w for a in areas for w in a.work_centers]
    equipment = [e for _, _, _, e in plant.equipment()]
    shifts = sum(len(s.calendar()) for s in plant.sites)

    def n(count: int, word: str) -> str:
        return f"{count} {word}" + ("" if count == 1 or word.endswith("equipment") else "s")

    lines = [
        f"{path}: OK",
        f"  instance:   {config.instance_id}",
        f"  database:   {redact(config.database.effective_url())} (timescaledb: {config.database.timescaledb})",
        "  plant:      " + ", ".join([
            n(len(plant.sites), "site"), n(len(areas), "area"), n(len(centers), "work center"),
            n(len(equipment), "equipment"), n(len(plant.products), "product"),
            n(len(plant.downtime_reasons), "downtime reason"), n(shifts, "shift"), n(len(plant.units), "unit")]),
    ]
    kinds = Counter(c.type for c in config.connectors)
    tags = sum(len(list(c.tag_refs())) for c in config.connectors)
    by_type = ", ".join(f"{kind}: {count}" for kind, count in sorted(kinds.items()))
    lines.append(f"  connectors: {len(config.connectors)}" + (f" ({by_type}), {n(tags, 'tag')}" if kinds else ""))
    for connector in config.connectors:
        state = "" if connector.enabled else ", disabled"
        lines.append(f"    - {connector.name} ({connector.type}): {n(len(list(connector.tag_refs())), 'tag')}{state}")
    for site, area, center, item in plant.equipment():
        roles = item.roles
        role_names = [k for k, v in (roles.model_dump(exclude_none=True).items() if roles else []) if v]
        lines.append(f"    equipment {item.code}: {site.code}/{area.code}/{center.code}"
                     + (f", roles: {', '.join(role_names)}" if role_names else ""))
    lines.append(f"  pipeline:   batches of {config.pipeline.batch_rows} rows or {config.pipeline.batch_age:g} s, "
                 f"queue {config.pipeline.queue_size} readings")
    lines.append(f"  http:       {config.http.listen if config.http.enabled else 'off'}")
    return lines


def _schema(args: argparse.Namespace) -> int:
    import os

    config = None
    if args.config is not None:
        config = _load_or_report(args.config)
        if config is None:
            return EXIT_CONFIG
    url = args.dsn or os.environ.get(DATABASE_URL_ENV) or (config.database.url if config else None)
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
    from ingestor.schema import SchemaError, apply_schema, schema_status

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
