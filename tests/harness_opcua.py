"""Conformance harness for the OPC UA connector: our OPC UA simulator on a free loopback port.

The connector subscribes to two machines' counters, state and process values and polls one boolean and one
text state by browse path, so the suite exercises subscriptions and polled reads.  ``stop()`` stops the
server (its connections drop, as in a power cut); ``start()`` serves the same machines on the same port.
"""

from __future__ import annotations

from typing import Any

from connectors.opcua import OpcUaConfig
from simulators.opcua import OpcUaSimulator, SimulatorOptions

from .helpers import free_port

SUBSCRIBED = ("parts_total", "parts_good", "state", "temperature", "current")
MACHINES = ("PRESS-01", "PRESS-02")


class OpcUaHarness:
    name = "opcua"
    expected = {(m, p) for m in MACHINES for p in SUBSCRIBED} | {("PRESS-01", "running"), ("PRESS-01", "state_text")}

    def __init__(self) -> None:
        self.port = free_port()
        self.simulator = OpcUaSimulator(SimulatorOptions(port=self.port, machines=len(MACHINES), interval=0.2))

    async def start(self) -> None:
        await self.simulator.start()

    async def stop(self) -> None:
        await self.simulator.stop()

    def connector_config(self) -> OpcUaConfig:
        subscribed: list[dict[str, Any]] = [
            {"node": f"ns=2;s={m}.{p}", "equipment": m, "parameter": p} for m in MACHINES for p in SUBSCRIBED]
        return OpcUaConfig.model_validate({
            "type": "opcua", "name": "conformance-opcua", "endpoint": self.simulator.endpoint,
            "timeout": "2s", "watchdog_interval": "1s",
            "reconnect": {"initial": "200ms", "max": "1s"},
            "groups": [
                {"name": "fast", "publishing_interval": "200ms", "sampling_interval": 0, "queue_size": 10,
                 "tags": subscribed},
                {"name": "status", "mode": "poll", "interval": "500ms", "tags": [
                    {"path": "Plant/PRESS-01/running", "equipment": "PRESS-01", "parameter": "running"},
                    {"path": "2:Plant/2:PRESS-01/2:state_name", "equipment": "PRESS-01", "parameter": "state_text",
                     "values": {"RUNNING": 1, "PLANNED_STOP": 2, "UNPLANNED_STOP": 3}},
                ]},
            ],
        })

    async def close(self) -> None:
        await self.simulator.stop()
