"""``ingestor read``: test mode, as ``telegraf --test`` is: read the configured tags and print them, store nothing.

It loads and validates the configuration exactly as ``run`` and ``check-config`` do (an invalid one is refused
with every problem and exit code 2), builds the selected connectors through the registry as the daemon does,
connects, and prints each reading as a row of a table on stdout.  No database is contacted, no schema applied,
no spool opened: the connectors put their readings into a sink that collects them and acknowledges them at once
(an MQTT message is acknowledged as soon as it is printed).  Each connector runs with
:meth:`~ingestor.contract.ConnectorConfig.for_test_mode` of its configuration, so a daemon running with the
same file keeps what is its own (an MQTT client id and persistent session, a shared group's messages).
Connectors get no state directory, so an OPC UA connector's memory of stored timestamps is not touched either.

``--once`` reads until every selected tag produced a reading (or ``--for`` passed, 10 s by default);
``--for D`` prints for D.  The exit code is 1 when a tag produced no reading, and stderr names each such tag
with the reason: what the connector reported about it (a node id the server does not know, a Modbus exception),
or else that nothing arrived within the time (an MQTT topic nobody published on), with the tag's configuration.
The expected tags are those a connector's configuration names (``tag_refs``); readings of templated MQTT
subscriptions are printed but cannot be expected.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fnmatch
import logging
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from ingestor.cli.common import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, load_or_report
from ingestor.config.registry import create_connector
from ingestor.contract import BuildContext, Connector, ConnectorConfig, Duration, Reading
from ingestor.contract.config_base import format_loc
from ingestor.contract.timeouts import wait_for
from ingestor.service.logs import configure_logging

DEFAULT_TIMEOUT = 10.0
COLUMNS = ("equipment", "parameter", "value", "unit", "quality", "source time", "connector")


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "read", help="test mode: read the configured tags and print them, write nothing",
        description="Connect the configured connectors, print their readings as a table and store nothing. "
                    "Exit 1 when a selected tag produced no reading, 2 when the configuration is invalid.")
    parser.add_argument("-c", "--config", required=True, type=Path, help="YAML configuration file")
    parser.add_argument("--connector", action="append", metavar="NAME",
                        help="read only this connector (repeatable; default: every enabled connector)")
    parser.add_argument("--tag", action="append", metavar="PATTERN",
                        help="only tags whose equipment.parameter (or equipment or parameter) matches this glob, "
                             "e.g. 'PRESS-01.*' (repeatable)")
    parser.add_argument("--once", action="store_true",
                        help="stop once every selected tag produced a reading (at most --for, default 10s)")
    parser.add_argument("--for", dest="duration", type=_duration, metavar="DURATION",
                        help="print readings for this long, e.g. 10s; with --once, the time limit (default 10s)")
    parser.set_defaults(command_main=_main)


def _duration(text: str) -> float:
    from pydantic import TypeAdapter, ValidationError

    try:
        return float(TypeAdapter(Duration).validate_python(text))
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(exc.errors()[0]["msg"]) from None


def tag_matches(patterns: Sequence[str] | None, equipment: str, parameter: str) -> bool:
    """Whether a tag is selected by ``--tag``: any glob matching ``equipment.parameter``, the equipment or the
    parameter (case-sensitive, as codes are)."""
    if not patterns:
        return True
    names = (f"{equipment}.{parameter}", equipment, parameter)
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns for name in names)


@dataclass
class ExpectedTag:
    connector: str
    equipment: str
    parameter: str
    where: str
    """Where the tag sits in the configuration, with its settings (``connectors[0].tags[1] {topic: …}``)."""
    seen: bool = False


@dataclass
class PrintingSink:
    """A :class:`~ingestor.contract.ReadingSink` that prints and acknowledges: nothing is stored, so each
    reading is "durable" the moment it was printed."""

    connector: str
    table: ReadingTable

    async def put(self, readings: Sequence[Reading], on_durable: Callable[[], None] | None = None) -> None:
        self.table.add(self.connector, readings)
        if on_durable is not None:
            on_durable()


@dataclass
class ReadingTable:
    """Prints the selected readings as fixed-width rows, and notes which expected tags have been seen."""

    out: TextIO
    patterns: Sequence[str] | None
    expected: dict[tuple[str, str, str], ExpectedTag]
    printed: int = 0
    complete: asyncio.Event = field(default_factory=asyncio.Event)
    widths: tuple[int, ...] = (14, 18, 14, 6, 9, 29, 16)

    def header(self) -> None:
        self._row(COLUMNS)

    def _row(self, cells: Iterable[str]) -> None:
        print("  ".join(c.ljust(w) for c, w in zip(cells, self.widths, strict=True)).rstrip(), file=self.out,
              flush=True)

    def add(self, connector: str, readings: Sequence[Reading]) -> None:
        for r in readings:
            if not tag_matches(self.patterns, r.equipment, r.parameter):
                continue
            tag = self.expected.get((connector, r.equipment, r.parameter))
            if tag is not None:
                tag.seen = True
            when = datetime.fromtimestamp(r.timestamp_us / 1e6, UTC).isoformat(timespec="milliseconds")
            self._row((r.equipment, r.parameter, f"{r.value:g}", r.unit or "", r.quality.name.lower(), when,
                       connector))
            self.printed += 1
        if self.expected and all(t.seen for t in self.expected.values()):
            self.complete.set()


def _status(connector: Connector) -> dict[str, Any]:
    """What a connector reports about itself (``status()``, optional in the contract); {} when nothing."""
    detail = getattr(connector, "status", None)
    if not callable(detail):
        return {}
    try:
        report = detail()
    except Exception:  # a diagnostic must not hide the readings
        return {}
    return report if isinstance(report, dict) else {}


def _mentions(report: Any, label: str) -> list[str]:
    """Every entry of a status report naming the tag ``equipment.parameter``: a string of a list, or a key of a
    mapping with its value (a Modbus device's ``failing_tags``, an OPC UA connector's ``unavailable_tags``)."""
    found: list[str] = []
    if isinstance(report, dict):
        for key, value in report.items():
            if isinstance(key, str) and (key == label or key.startswith(f"{label} ") or key.startswith(f"{label}:")):
                found.append(f"{key}: {_brief(value)}")
            else:
                found.extend(_mentions(value, label))
    elif isinstance(report, list | tuple):
        for item in report:
            found.extend(_mentions(item, label))
    elif isinstance(report, str) and (report.startswith(f"{label} ") or report.startswith(f"{label}:")):
        found.append(report)
    return found


def _brief(value: Any) -> str:
    """A status entry for a person: ``reason illegal_data_address, failed_reads 15`` (times since left out)."""
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items() if k != "since" and v is not None)
    return str(value)


def _where(config: ConnectorConfig, index: int, loc: tuple[str | int, ...]) -> str:
    node: Any = config.model_dump(mode="json", exclude_defaults=True)
    for part in loc:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            node = None
            break
    settings = ""
    if isinstance(node, dict):
        settings = " {" + ", ".join(f"{k}: {v}" for k, v in node.items()
                                    if k not in ("equipment", "parameter", "unit")) + "}"
    return format_loc(("connectors", index, *loc)) + settings


async def read_tags(configs: Sequence[tuple[int, ConnectorConfig]], patterns: Sequence[str] | None, *, once: bool,
                    duration: float, out: TextIO, err: TextIO) -> int:
    """Connect, print readings until done, report the tags that gave none; the exit code."""
    expected: dict[tuple[str, str, str], ExpectedTag] = {}
    for index, config in configs:
        for ref in config.tag_refs():
            if tag_matches(patterns, ref.equipment, ref.parameter):
                expected[(config.name, ref.equipment, ref.parameter)] = ExpectedTag(
                    config.name, ref.equipment, ref.parameter, _where(config, index, ref.loc))
    table = ReadingTable(out, patterns, expected)
    table.header()
    # for_test_mode: never the daemon's MQTT client id, persistent session or shared group (see the contract)
    connectors = [create_connector(config.for_test_mode(), BuildContext()) for _, config in configs]
    failures: dict[str, str] = {}  # connector name → why it stopped

    async def run(connector: Connector) -> None:
        try:
            await connector.connect()
            await connector.run(PrintingSink(connector.name, table))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failures[connector.name] = f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc)

    tasks = [asyncio.create_task(run(c), name=f"read-{c.name}") for c in connectors]
    started = time.monotonic()
    try:
        waits: set[asyncio.Task[Any]] = {asyncio.create_task(asyncio.sleep(duration))}
        if once:
            waits.add(asyncio.create_task(table.complete.wait()))
        all_stopped = asyncio.create_task(asyncio.wait(tasks))
        waits.add(all_stopped)
        _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        reports = {c.name: _status(c) for c in connectors}
        for connector in connectors:
            with contextlib.suppress(Exception):
                await wait_for(connector.close(), 5)
    elapsed = time.monotonic() - started
    missing = [t for t in expected.values() if not t.seen]
    for tag in missing:
        label = f"{tag.equipment}.{tag.parameter}"
        reasons = _mentions(reports.get(tag.connector, {}), label)
        if tag.connector in failures:
            reasons.append(f"the connector failed: {failures[tag.connector]}")
        if not reasons:
            reasons.append(f"no reading within {elapsed:.1f} s")
        print(f"FAILED {label} (connector {tag.connector}, {tag.where}): {'; '.join(reasons)}", file=err)
    for name, why in failures.items():
        if not any(t.connector == name for t in missing):
            print(f"FAILED connector {name}: {why}", file=err)
    print(f"{table.printed} readings from {len(expected) - len(missing)} of {len(expected)} tags in {elapsed:.1f} s"
          + (f"; {len(missing)} tags gave none" if missing else ""), file=err)
    return EXIT_FAILURE if missing or failures else EXIT_OK


def _main(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return EXIT_CONFIG
    names = {c.name for c in config.connectors}
    unknown = [n for n in args.connector or () if n not in names]
    if unknown:
        print(f"{args.config}: no connector named {', '.join(map(repr, unknown))}; "
              f"configured: {', '.join(sorted(names)) or 'none'}", file=sys.stderr)
        return EXIT_CONFIG
    selected = [(i, c) for i, c in enumerate(config.connectors)
                if (c.name in args.connector if args.connector else c.enabled)]
    if not selected:
        print(f"{args.config}: no enabled connector to read", file=sys.stderr)
        return EXIT_CONFIG
    # connector logs go to stderr, warnings and worse only, so the table on stdout stays readable
    configure_logging(config.logging.model_copy(update={"level": "warning"}))
    logging.getLogger().setLevel(logging.WARNING)
    duration = args.duration if args.duration is not None else DEFAULT_TIMEOUT
    return asyncio.run(read_tags(selected, args.tag, once=args.once, duration=duration,
                                 out=sys.stdout, err=sys.stderr))
