"""``ingestor discover TYPE …``: the discovery commands connector types offer (OPC UA browsing, for instance).

Each installed connector type with a :class:`~ingestor.contract.DiscoverCommand` adds one sub-command.
"""

from __future__ import annotations

import argparse

from ingestor.config.registry import installed
from ingestor.plant import DEFAULT_UNITS


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    discover = commands.add_parser("discover", help="browse a server and print a tag-map skeleton")
    protocols = discover.add_subparsers(dest="protocol", required=True, metavar="PROTOCOL")
    for name, kind in sorted(installed().types.items()):
        if kind.discover is None:
            continue
        command = kind.discover
        parser = protocols.add_parser(name, help=command.help, description=command.description)
        command.add_arguments(parser)
        parser.set_defaults(command_main=lambda args, run=command.run: run(args, _known_units()))


def _known_units() -> frozenset[str]:
    """The units a configuration has without a ``units:`` list of its own."""
    return frozenset(unit.code for unit in DEFAULT_UNITS)
