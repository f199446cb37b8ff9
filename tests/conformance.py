"""The conformance suite's plug-in point: one harness per connector.

A harness starts the connector's real peer (our simulator as an OPC UA or Modbus server, a private Mosquitto
with our publisher, …) on free loopback ports, builds a connector configuration that reads from it, and can
stop and start the peer again on the same port (a device power cycle).  tests/test_conformance.py runs the
same checks on every harness listed in ``HARNESSES``: start/stop, readings arrive, reconnect after the peer
restarts.  To add a connector: write ``tests/harness_<type>.py`` with a class implementing :class:`Harness`
and add it to ``HARNESSES`` below.
"""

from __future__ import annotations

import importlib
from typing import Protocol

from ingestor.contract import ConnectorConfig


class Harness(Protocol):
    """A connector with its real peer, controllable by the suite."""

    name: str
    expected: set[tuple[str, str]]
    """(equipment, parameter) pairs that must all arrive once the peer runs."""

    async def start(self) -> None:
        """Start the peer (first time: choose free loopback ports; later: the same ports again)."""
        ...

    async def stop(self) -> None:
        """Stop the peer abruptly, as a power cut or a network drop would."""
        ...

    def connector_config(self) -> ConnectorConfig:
        """A validated configuration of the connector pointing at the peer, with a short reconnect backoff."""
        ...

    async def close(self) -> None:
        """Release everything (the peer, temporary files)."""
        ...


HARNESSES: list[str] = [
    "tests.harness_opcua:OpcUaHarness",
    "tests.harness_modbus:ModbusHarness",
    "tests.harness_mqtt:MqttHarness",
]
"""Import paths ``module:Class`` of every harness; each connector adds its line."""


def load(path: str) -> type[Harness]:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]
