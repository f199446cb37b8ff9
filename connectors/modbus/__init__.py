"""Modbus TCP: configuration (:mod:`.config`), register decoding (:mod:`.decoding`), read coalescing
(:mod:`.planning`) and the connector itself (:mod:`.connector`).  docs/connectors/modbus.md is the
operator's guide."""

from connectors.modbus.config import ModbusConfig, ModbusDeviceConfig, ModbusTagConfig

__all__ = ["ModbusConfig", "ModbusDeviceConfig", "ModbusTagConfig"]
