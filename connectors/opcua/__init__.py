"""OPC UA: subscriptions and polled reads from OPC UA servers (asyncua), and browsing for a tag map.

``config`` holds the configuration model (no asyncua import), ``connector`` the connector, ``security`` the
certificate handling, ``browse`` and ``discover`` the ``ingestor discover opcua`` command.  ``CONNECTOR`` is
what the ``ingestor.connectors`` entry point ``opcua`` names; asyncua is imported only when a connector is
built or a discovery runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from connectors.opcua.config import OpcUaConfig
from connectors.opcua.discover import DISCOVER
from ingestor.contract import BuildContext, ConnectorType

if TYPE_CHECKING:
    from connectors.opcua.connector import OpcUaConnector


def build(config: OpcUaConfig, context: BuildContext) -> OpcUaConnector:
    from connectors.opcua.connector import OpcUaConnector

    return OpcUaConnector(config, client_factory=context.clients.get("opcua_client"), state_dir=context.state_dir)


CONNECTOR = ConnectorType(config=OpcUaConfig, build=build, discover=DISCOVER)

__all__ = ["CONNECTOR", "OpcUaConfig"]
