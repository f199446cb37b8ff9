"""The Modbus connector's conformance harness: our Modbus simulator (two machines, unit ids 1 and 2) on a free
loopback port, and a connector configuration that reads counters, state and process values from both."""

from __future__ import annotations

from connectors.modbus import ModbusConfig
from ingestor.contract import ConnectorConfig
from simulators.machine import default_machines
from simulators.modbus import ModbusSimulator

from .helpers import free_port


def machine_tags(equipment: str) -> list[dict[str, object]]:
    """Tags for one machine unit of the simulator's register map."""
    return [
        {"equipment": equipment, "parameter": "parts_total", "register": "holding", "address": 0,
         "data_type": "uint32", "byte_order": "CDAB"},
        {"equipment": equipment, "parameter": "state", "register": "holding", "address": 4, "data_type": "uint16"},
        {"equipment": equipment, "parameter": "temperature", "register": "input", "address": 0,
         "data_type": "float32", "group": "fast"},
        {"equipment": equipment, "parameter": "current", "register": "input", "address": 4, "data_type": "float64",
         "byte_order": "CDAB", "group": "fast"},
        {"equipment": equipment, "parameter": "running", "register": "discrete_input", "address": 0},
    ]


class ModbusHarness:
    name = "modbus"
    expected = {(m, p) for m in ("PRESS-01", "PRESS-02")
                for p in ("parts_total", "state", "temperature", "current", "running")}

    def __init__(self) -> None:
        self.port = free_port()
        self.simulator = ModbusSimulator(default_machines(2), port=self.port)

    async def start(self) -> None:
        await self.simulator.start()

    async def stop(self) -> None:
        await self.simulator.stop()

    def connector_config(self) -> ConnectorConfig:
        return ModbusConfig.model_validate({
            "type": "modbus", "name": "conformance-modbus", "host": "127.0.0.1", "port": self.port,
            "timeout": "500ms", "interval": "200ms", "poll_groups": {"fast": "100ms"},
            "reconnect": {"initial": "200ms", "max": "1s"},
            "devices": [{"unit_id": 1, "name": "press-01", "tags": machine_tags("PRESS-01")},
                        {"unit_id": 2, "name": "press-02", "tags": machine_tags("PRESS-02")}],
        })

    async def close(self) -> None:
        await self.simulator.stop()


SERIAL_8N2 = {"baudrate": 19200, "bytesize": 8, "parity": "N", "stopbits": 2}
"""The serial settings RTU tests use on a pseudo-terminal: 11 bits a character like the default 8E1, but
without a parity bit, which Linux pseudo-terminals refuse to set (EINVAL from tcsetattr)."""


def link_settings(simulator: ModbusSimulator) -> dict[str, object]:
    """The connector settings that reach ``simulator`` over its transport (tcp, rtu, rtu-over-tcp)."""
    if simulator.transport == "rtu":
        return {"transport": "rtu", "serial": {"port": simulator.serial_port, **SERIAL_8N2}}
    return {"transport": simulator.transport, "host": "127.0.0.1", "port": simulator.port}
