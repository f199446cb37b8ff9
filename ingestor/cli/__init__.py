"""The ``ingestor`` command: run the daemon, check a configuration, manage the schema, derive, measure.

One module per command (``check``, ``read``, ``schema``, ``derive``, ``bench``, ``discover``, ``import`` in
``records``, ``api``); each adds its parser and
the function that runs it.  Exit codes: 0 success, 1 runtime failure (database unreachable, …), 2 invalid
configuration or usage.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from ingestor import __version__
from ingestor.cli import api, bench, check, derive, discover, read, records, schema
from ingestor.cli.common import EXIT_CONFIG, load_or_report


def _run(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return EXIT_CONFIG
    from ingestor.daemon.runtime import run_daemon

    return run_daemon(config, args.config)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ingestor", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"ingestor {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="run the daemon")
    run.add_argument("-c", "--config", required=True, type=Path, help="YAML configuration file")
    run.set_defaults(command_main=_run)
    for command in (check, read, bench, schema, discover, derive, records, api):
        command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return int(args.command_main(args))
