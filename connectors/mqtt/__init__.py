"""MQTT connector: subscriptions with topic templates, payload parsing, acknowledgment after durability.

``config`` holds the YAML model, ``topics`` maps topics to equipment and parameters, ``payloads`` turns
message bodies into readings, ``connector`` drives paho-mqtt inside the asyncio event loop, and
``deadletter`` keeps rejected messages.  See docs/connectors/mqtt.md.  ``CONNECTOR`` is what the
``ingestor.connectors`` entry point ``mqtt`` names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from connectors.mqtt.config import MqttConfig
from ingestor.contract import BuildContext, ConnectorType

if TYPE_CHECKING:
    from connectors.mqtt.connector import MqttConnector


def build(config: MqttConfig, context: BuildContext) -> MqttConnector:
    from connectors.mqtt.connector import MqttConnector

    return MqttConnector(config, client_factory=context.clients.get("mqtt_client"),
                         known_equipment=context.known_equipment, known_units=context.known_units)


CONNECTOR = ConnectorType(config=MqttConfig, build=build)

__all__ = ["CONNECTOR", "MqttConfig"]
