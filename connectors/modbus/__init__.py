"""Modbus TCP: configuration (:mod:`.config`), register decoding (:mod:`.decoding`), read coalescing
(:mod:`.planning`) and the connector itself (:mod:`.connector`).  docs/connectors/modbus.md is the
operator's guide.  ``CONNECTOR`` is what the ``ingestor.connectors`` entry point ``modbus`` names."""

from __future__ import annotations

from typing import TYPE_CHECKING

from connectors.modbus.config import ModbusConfig, ModbusDeviceConfig, ModbusTagConfig
from ingestor.contract import BuildContext, ConnectorType

if TYPE_CHECKING:
    from connectors.modbus.connector import ModbusConnector


def build(config: ModbusConfig, context: BuildContext) -> ModbusConnector:
    from connectors.modbus.connector import ModbusConnector

    return ModbusConnector(config, client_factory=context.clients.get("modbus_client"))


CONNECTOR = ConnectorType(config=ModbusConfig, build=build)

__all__ = ["CONNECTOR", "ModbusConfig", "ModbusDeviceConfig", "ModbusTagConfig"]
