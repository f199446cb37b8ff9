"""FastClient (connectors/mqtt/client.py) against the shared Mosquitto: the buffered read and the short PUBLISH
path deliver exactly what paho would, for packets split across reads, packets with MQTT 5 properties (paho's
own path), QoS 0/1/2, retained flags and thousands of back-to-back small messages."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from connectors.mqtt.client import READ_SIZE, FastClient

from .helpers import wait_until

PORT = 1883


@pytest.mark.parametrize("protocol", [mqtt.MQTTv5, mqtt.MQTTv311])
def test_fast_client_receives_what_was_published(protocol: int) -> None:
    prefix = f"test-fastclient/{uuid.uuid4().hex[:8]}"
    received: list[tuple[str, bytes, int, bool, Any]] = []
    lock = threading.Lock()

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        with lock:
            received.append((message.topic, bytes(message.payload), message.qos, bool(message.retain),
                             message.properties))

    subscribed = threading.Event()
    consumer = FastClient(CallbackAPIVersion.VERSION2, client_id=f"fc-sub-{uuid.uuid4().hex[:8]}", protocol=protocol)
    consumer.on_message = on_message
    consumer.on_subscribe = lambda *args: subscribed.set()
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"fc-pub-{uuid.uuid4().hex[:8]}",
                            protocol=mqtt.MQTTv5)
    consumer.connect("127.0.0.1", PORT)
    consumer.subscribe(prefix + "/#", 2)
    consumer.loop_start()
    publisher.connect("127.0.0.1", PORT)
    publisher.loop_start()
    try:
        wait_until(subscribed.is_set, 10, "SUBACK")
        expected: list[tuple[str, bytes, int, bool]] = []
        big = bytes(range(256)) * (3 * READ_SIZE // 256 + 7)       # one packet over several reads
        with_properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        with_properties.UserProperty = ("line", "7")
        messages: list[tuple[str, bytes, int, bool, Properties | None]] = [
            (f"{prefix}/big", big, 1, False, None),
            (f"{prefix}/props", b'{"value": 1}', 1, False, with_properties),
            (f"{prefix}/qos2", b"2.5", 2, False, None),
            (f"{prefix}/qos0", b"", 0, False, None),
            (f"{prefix}/ümlaut/ß", "ü".encode(), 1, False, None),
        ]
        messages += [(f"{prefix}/m/{n % 7}", f'{{"value": {n}}}'.encode(), n % 2, False, None) for n in range(3000)]
        for sent, (topic, payload, qos, retain, properties) in enumerate(messages):
            # Mosquitto drops what a subscriber has not taken past max_queued_messages (1000 by default): on a
            # loaded machine the consumer can fall that far behind a publisher in a tight loop, so keep it near.
            if sent % 100 == 0:
                wait_until(lambda: len(received) >= sent - 500, 30, "the consumer to keep up")  # noqa: B023
            info = publisher.publish(topic, payload, qos=qos, retain=retain, properties=properties)
            assert info.rc == mqtt.MQTT_ERR_SUCCESS
            expected.append((topic, payload, qos, retain))
        wait_until(lambda: len(received) >= len(expected), 30, "every message")
        got = sorted((topic, payload, qos, retain) for topic, payload, qos, retain, _ in received)
        assert got == sorted(expected)
        props = [p for topic, _, _, _, p in received if topic.endswith("/props")]
        if protocol == mqtt.MQTTv5:   # the packet with properties went through paho's path, properties intact
            assert props[0] is not None and ("line", "7") in props[0].UserProperty
    finally:
        publisher.disconnect()
        publisher.loop_stop()
        consumer.disconnect()
        consumer.loop_stop()
