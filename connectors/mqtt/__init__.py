"""MQTT connector: subscriptions with topic templates, payload parsing, acknowledgment after durability.

``config`` holds the YAML model, ``topics`` maps topics to equipment and parameters, ``payloads`` turns
message bodies into readings, ``connector`` drives paho-mqtt inside the asyncio event loop, and
``deadletter`` keeps rejected messages.  See docs/connectors/mqtt.md.
"""

from connectors.mqtt.config import MqttConfig

__all__ = ["MqttConfig"]
