"""``ingestor derive --from T1 --to T2 [-c CONFIG]``: derive a window's facts again from ``fact_sensor_event``.

Use it after importing readings by other means, after changing roles, the shift calendar or
``derivation.max_segment`` (re-derive from the change on), or to (re)build history.  Running it twice gives the
same facts; the second run writes nothing.  It applies the schema (when ``database.apply_schema``) and syncs
the plant's dimensions like the daemon does, so it works on a database the daemon has not seen yet.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path

from ingestor.cli.common import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, database_url, load_or_report
from ingestor.config import IngestorConfig
from ingestor.database.config import DATABASE_URL_ENV
from ingestor.database.connection import DatabaseUnavailable, connect, redact
from ingestor.database.prepare import prepare_database
from ingestor.database.schema import SchemaError, refresh_view
from ingestor.derive.engine import Deriver
from ingestor.derive.segments import from_us, to_us

DEFAULT_CONFIG = Path("/etc/ingestor/config.yaml")


def parse_instant(text: str) -> datetime:
    """An ISO 8601 date or date-time; without a UTC offset it is taken as UTC."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time such as 2026-03-29T06:00+02:00, 2026-03-29T04:00Z or 2026-03-29"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``derive`` on the ``ingestor`` command's subparsers."""
    derive = commands.add_parser(
        "derive", help="derive production and downtime facts of a time window again from the readings",
        description="Derive the production and downtime facts of a time window again from fact_sensor_event.")
    derive.add_argument("--from", dest="start", required=True, type=parse_instant, metavar="T1",
                        help="start (ISO 8601; UTC unless it has an offset), widened to its segment's start")
    derive.add_argument("--to", dest="end", required=True, type=parse_instant, metavar="T2",
                        help="end (ISO 8601), widened to its segment's end; never past the last segment that "
                             "ended derivation.settle ago")
    derive.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG,
                        help=f"YAML configuration with the plant and its roles (default {DEFAULT_CONFIG})")
    derive.add_argument("--dsn", help=f"database URL (default: ${DATABASE_URL_ENV}, then the configuration)")
    derive.add_argument("--equipment", action="append", metavar="CODE",
                        help="only this equipment (repeatable; default: every equipment with roles)")
    derive.set_defaults(command_main=run)


def run(args: argparse.Namespace) -> int:
    if args.end <= args.start:
        print("ingestor derive: --to must be after --from", file=sys.stderr)
        return EXIT_CONFIG
    if not args.config.exists():
        print(f"ingestor derive: no configuration at {args.config} (give -c FILE)", file=sys.stderr)
        return EXIT_CONFIG
    config = load_or_report(args.config)
    if config is None:
        return EXIT_CONFIG
    url = database_url(args.dsn, config)
    assert url is not None
    try:
        return asyncio.run(_derive(config, url, args))
    except DatabaseUnavailable as exc:
        print(f"ingestor derive: {exc}", file=sys.stderr)
        return EXIT_FAILURE


async def _derive(config: IngestorConfig, url: str, args: argparse.Namespace) -> int:
    conn = await connect(url, config.database.connect_timeout)
    try:
        await prepare_database(conn, config.database, config.plant)
        deriver = Deriver(config.plant, config.derivation, config.instance_id)
        plans = await deriver.prepare(conn)
        known = {p.code for p in plans}
        unknown = sorted(set(args.equipment or ()) - known)
        if unknown:
            print(f"ingestor derive: no equipment with roles named {', '.join(unknown)} "
                  f"(known: {', '.join(sorted(known)) or 'none'})", file=sys.stderr)
            return EXIT_CONFIG
        report, first, last = await deriver.derive_range(conn, to_us(args.start), to_us(args.end),
                                                         equipment=args.equipment)
        if report.changed:
            await refresh_view(conn, "view_oee_daily")
        print(f"database:  {redact(url)}")
        if report.windows:
            print(f"derived:   {from_us(first).isoformat()} to {from_us(last).isoformat()}, "
                  f"{len(args.equipment or known)} equipment, {report.windows} window(s)")
        else:
            print("derived:   nothing (no complete segment with readings in the range)")
        for table in ("fact_production", "fact_downtime"):
            print(f"{table + ':':16} {report.writes.inserted[table]} inserted, {report.writes.updated[table]} "
                  f"updated, {report.writes.deleted[table]} deleted")
        if report.stops_without_reason:
            print(f"warning:   {report.stops_without_reason} stop(s) had no reason and got no downtime row "
                  "(set default_unplanned_reason / default_planned_reason)")
        return EXIT_OK
    except (SchemaError, KeyError) as exc:
        print(f"ingestor derive: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        await conn.close()
