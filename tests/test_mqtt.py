"""The MQTT connector against real Mosquitto brokers.

Tests that do not stop a broker use the shared one on 127.0.0.1:1883, each under a topic prefix and client ids
of its own (and forget their persistent sessions afterwards).  Tests that restart a broker, or need TLS and
passwords, start a private Mosquitto (tests/harness_mqtt.py).  The daemon tests run the real ``Daemon``
against the per-module databases (plain PostgreSQL and TimescaleDB).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import REGISTRY

from connectors.mqtt.config import MqttConfig
from connectors.mqtt.connector import MqttConnector
from ingestor.config import load_config
from ingestor.contract import ConnectionLost, Reading
from ingestor.daemon.runtime import Daemon
from ingestor.daemon.supervisor import ConnectorState, ConnectorSupervisor
from simulators.machine import default_machines
from simulators.mqtt import MqttSimulator
from tests.helpers import build_connector

from .conftest import REPO, Database
from .harness_mqtt import PrivateBroker
from .helpers import free_port, http_get, wait_until

SHARED_PORT = 1883


# --- helpers ------------------------------------------------------------------------------------------------

def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def publish(items: Sequence[tuple[str, bytes | str]], qos: int = 1, port: int = SHARED_PORT,
            protocol: int = mqtt.MQTTv5, retain: bool = False) -> None:
    """Publish every (topic, payload) and wait until the broker acknowledged them all."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=unique("test-pub"), protocol=protocol)
    client.max_inflight_messages_set(1000 if qos < 2 else 20)   # mosquitto's receive maximum for QoS 2 is 20
    done = [0]
    client.on_publish = lambda *args: done.__setitem__(0, done[0] + 1)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        wait_until(client.is_connected, 10, "the test publisher to connect")
        for topic, payload in items:
            client.publish(topic, payload, qos=qos, retain=retain)
        wait_until(lambda: done[0] >= len(items), 60, f"the broker to take {len(items)} messages")
    finally:
        client.disconnect()
        client.loop_stop()


def forget_session(client_id: str, port: int = SHARED_PORT) -> None:
    """Remove a persistent session from the broker (connect with a clean start, then leave)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    try:
        client.connect("127.0.0.1", port, clean_start=True)
        client.loop_start()
        wait_until(client.is_connected, 5, "session cleanup")
        client.disconnect()
        client.loop_stop()
    except (OSError, AssertionError):
        pass


class Sink:
    """Keeps readings; acknowledges at once, or holds the acknowledgments (``hold=True``)."""

    def __init__(self, hold: bool = False) -> None:
        self.readings: list[Reading] = []
        self.hold = hold
        self.held: list[Callable[[], None]] = []
        self.puts: list[int] = []          # the size of every put, counted as it starts (also while gated)
        self.gate: asyncio.Event | None = None

    async def put(self, readings: Sequence[Reading], on_durable: Callable[[], None] | None = None) -> None:
        self.puts.append(len(readings))
        if self.gate is not None:
            await self.gate.wait()
        self.readings.extend(readings)
        if on_durable is not None:
            if self.hold:
                self.held.append(on_durable)
            else:
                on_durable()

    def values(self) -> list[float]:
        return [r.value for r in self.readings]


def mqtt_config(prefix: str, **fields: Any) -> MqttConfig:
    settings_: dict[str, Any] = {
        "type": "mqtt", "name": "test-mqtt", "client_id": unique("test-sub"), "keepalive": "5s",
        "connect_timeout": "3s", "session_expiry": "5m", "reconnect": {"initial": "200ms", "max": "1s", "healthy_after": "1s"},
        "subscriptions": [{"topic": prefix + "/{equipment}/{parameter}", "qos": 1}],
    }
    settings_.update(fields)
    return MqttConfig.model_validate(settings_)


@asynccontextmanager
async def supervised(config: MqttConfig, sink: Any, forget: bool = True, **factories: Any
                     ) -> AsyncIterator[tuple[MqttConnector, ConnectorSupervisor]]:
    connector = build_connector(config, **factories)
    assert isinstance(connector, MqttConnector)
    supervisor = ConnectorSupervisor(connector, sink, config.reconnect)
    task = asyncio.create_task(supervisor.run())
    try:
        await async_wait(lambda: supervisor.state == ConnectorState.CONNECTED, 15, "the connector to connect")
        yield connector, supervisor
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if forget:
            await asyncio.to_thread(forget_session, connector.client_id, config.port)


async def async_wait(condition: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


# --- topic templates, JSON paths, exact tags ------------------------------------------------------------------

async def test_templates_json_paths_arrays_and_exact_tags() -> None:
    prefix = unique("t/templates")
    config = mqtt_config(prefix, subscriptions=[
        {"topic": prefix + "/plant/{site}/{equipment}/{parameter}", "qos": 1, "unit": "degC"},
        {"topic": prefix + "/gw/{line}/{equipment}", "qos": 1, "payload": {
            "format": "json", "items": "data.points", "parameter": "name", "value": "v", "timestamp": "ts",
            "timestamp_format": "epoch_ms", "unit": "u"}},
    ], tags=[{"topic": prefix + "/legacy/press1/temp", "equipment": "PRESS-01", "parameter": "temperature",
              "unit": "degC", "qos": 0, "payload": {"format": "json", "value": "reading.val"}}])
    sink = Sink()
    async with supervised(config, sink):
        await asyncio.to_thread(publish, [
            (prefix + "/plant/S1/PRESS-01/temperature", "61.5"),
            (prefix + "/plant/S1/PRESS-02/current", json.dumps(
                {"value": 93.2, "unit": "A", "timestamp": "2024-03-01T12:00:00Z"})),
            (prefix + "/gw/L1/PRESS-03", json.dumps({"ts": 1_709_294_400_000, "data": {"points": [
                {"name": "state", "v": 3}, {"name": "vibration", "v": "2.5", "u": "mm/s", "ts": 1_709_294_401_000}]}})),
            (prefix + "/legacy/press1/temp", json.dumps({"reading": {"val": 58}})),
        ])
        await async_wait(lambda: len(sink.readings) >= 5, 10, "five readings")
    by_key = {(r.equipment, r.parameter): r for r in sink.readings if r.value != 58.0}
    assert by_key[("PRESS-01", "temperature")].value == 61.5
    assert by_key[("PRESS-01", "temperature")].unit == "degC"            # the subscription's unit
    current = by_key[("PRESS-02", "current")]
    assert (current.value, current.unit, current.timestamp_us) == (93.2, "A", 1_709_294_400_000_000)
    state, vibration = by_key[("PRESS-03", "state")], by_key[("PRESS-03", "vibration")]
    assert (state.value, state.timestamp_us, state.unit) == (3.0, 1_709_294_400_000_000, None)
    assert (vibration.value, vibration.timestamp_us, vibration.unit) == (2.5, 1_709_294_401_000_000, "mm/s")
    assert by_key[("PRESS-01", "temperature")].timestamp_us > 1_709_294_401_000_000   # receive time
    legacy = [r for r in sink.readings if r.value == 58.0]
    assert legacy and legacy[0].equipment == "PRESS-01" and legacy[0].unit == "degC"


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
@pytest.mark.parametrize("qos", [0, 1, 2])
async def test_every_qos_on_both_protocol_versions(protocol: str, qos: int) -> None:
    prefix = unique("t/qos")
    config = mqtt_config(prefix, protocol=protocol,
                         subscriptions=[{"topic": prefix + "/{equipment}/{parameter}", "qos": qos}])
    sink = Sink()
    async with supervised(config, sink):
        await asyncio.to_thread(publish, [(f"{prefix}/M1/p", str(i)) for i in range(50)], qos,
                                protocol=mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311)
        await async_wait(lambda: len(sink.readings) >= 50, 10, "50 readings")
        await asyncio.sleep(0.2)
    assert sorted(sink.values()) == [float(i) for i in range(50)]


# --- acknowledgment after durability ---------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_messages_not_yet_durable_are_redelivered_to_the_next_session(protocol: str) -> None:
    # fewer than 20 messages: a 3.1.1 session gets at most mosquitto's max_inflight_messages (20) unacknowledged
    prefix = unique("t/ack")
    client_id = unique("test-ack")
    config = mqtt_config(prefix, client_id=client_id, protocol=protocol, drain_timeout=0.2)
    holding = Sink(hold=True)
    async with supervised(config, holding, forget=False) as _:
        await asyncio.to_thread(publish, [(f"{prefix}/M1/p", str(i)) for i in range(5)])
        await async_wait(lambda: len(holding.readings) >= 5, 10, "5 readings")
        await asyncio.to_thread(publish, [(f"{prefix}/M1/p", str(i)) for i in range(5, 15)])
        await async_wait(lambda: len(holding.readings) >= 15, 10, "15 readings")
        # make the first put durable: exactly its messages are acknowledged, in order; the rest come again
        first_put = holding.held[0]
        first_put()
        acknowledged = holding.puts[0]
    # the same client id comes back: everything not acknowledged arrives again (persistent session)
    again = Sink()
    connector2 = build_connector(config)
    assert isinstance(connector2, MqttConnector)
    supervisor = ConnectorSupervisor(connector2, again, config.reconnect)
    task = asyncio.create_task(supervisor.run())
    try:
        await async_wait(lambda: len(again.readings) >= 15 - acknowledged, 10, "the redelivery")
        await asyncio.sleep(0.5)
        assert connector2.session_present
        assert sorted(again.values()) == [float(i) for i in range(acknowledged, 15)]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    # and once acknowledged, nothing comes a third time
    third = Sink()
    async with supervised(config, third):
        await asyncio.sleep(1.0)
    assert third.readings == []
    assert 0 < acknowledged < 15


async def test_backpressure_holds_messages_at_the_broker_and_keeps_the_link_alive() -> None:
    prefix = unique("t/backpressure")
    config = mqtt_config(prefix, receive_maximum=20, keepalive="1s")
    sink = Sink()
    sink.gate = asyncio.Event()           # the pipeline is "full": put waits
    async with supervised(config, sink) as (connector, supervisor):
        pongs: list[float] = []            # the broker's answers to paho's keepalive pings
        connector._client.on_log = lambda client, userdata, level, text: (
            pongs.append(time.monotonic()) if text == "Received PINGRESP" else None)
        await asyncio.to_thread(publish, [(f"{prefix}/M1/p", str(i)) for i in range(300)])
        await async_wait(lambda: connector.accepted >= 20, 20, "the broker's window of 20 messages in flight")
        window_full = len(pongs)
        await async_wait(lambda: len(pongs) >= window_full + 3, 20,
                         "three keepalive round trips with the pipeline blocked")
        assert supervisor.state == ConnectorState.CONNECTED
        assert supervisor.failures == 0
        # the broker holds the rest: no more than its window of unacknowledged messages reached us
        assert connector.accepted == 20 and len(sink.readings) == 0
        sink.gate.set()
        await async_wait(lambda: len(sink.readings) >= 300, 20, "all 300 readings after the pipeline drains")
    assert sorted(sink.values()) == [float(i) for i in range(300)]


async def test_a_full_inbox_pauses_reading_instead_of_dropping_qos0() -> None:
    prefix = unique("t/pause")
    config = mqtt_config(prefix, max_buffered=10, keepalive="10s",
                         subscriptions=[{"topic": prefix + "/{equipment}/{parameter}", "qos": 0}])
    sink = Sink()
    sink.gate = asyncio.Event()
    pauses = REGISTRY.get_sample_value("ingestor_mqtt_read_pauses_total", {"connector": config.name}) or 0.0
    async with supervised(config, sink) as (connector, supervisor):
        await asyncio.to_thread(publish, [(f"{prefix}/M1/p", str(i)) for i in range(300)], 0)

        def paused() -> bool:
            now = REGISTRY.get_sample_value("ingestor_mqtt_read_pauses_total", {"connector": config.name})
            return (now or 0.0) > pauses
        await async_wait(paused, 20, "reading to pause on a full inbox (ingestor_mqtt_read_pauses_total)")
        # what waits in the connector: accepted, and not yet handed to the pipeline
        assert connector.accepted - sum(sink.puts) <= 10 + 1
        assert connector.accepted < 300        # the rest waits in the socket and the broker, not in memory
        sink.gate.set()
        await async_wait(lambda: len(sink.readings) >= 300, 20, "all 300 QoS 0 readings after the pause")
        assert supervisor.failures == 0
    assert sorted(sink.values()) == [float(i) for i in range(300)]


async def test_a_backlog_bigger_than_the_inbox_is_taken_when_the_session_resumes() -> None:
    prefix = unique("t/backlog")
    config = mqtt_config(prefix, max_buffered=20)
    async with supervised(config, Sink(), forget=False):
        pass                                     # the session and its subscription now exist
    await asyncio.to_thread(publish, [(f"{prefix}/M1/p", str(i)) for i in range(500)])
    sink = Sink()
    async with supervised(config, sink) as (connector, supervisor):
        await async_wait(lambda: len(sink.readings) >= 500, 20, "the 500 queued messages")
        assert connector.session_present and supervisor.failures == 0
    assert sorted(sink.values()) == [float(i) for i in range(500)]


# --- malformed messages: a fuzz run through the broker --------------------------------------------------------

random_payloads = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=80).map(str.encode),
    st.from_regex(r"-?\d{1,6}(\.\d{1,3})?", fullmatch=True).map(str.encode),
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                 lambda c: st.lists(c, max_size=4) | st.dictionaries(
                     st.sampled_from(["value", "timestamp", "unit", "x"]), c, max_size=4),
                 max_leaves=12).map(lambda v: json.dumps(v).encode()),
    st.integers(1100, 4000).map(lambda n: b"7" * n),                      # oversized (max_payload 1 KiB)
)
random_topics = st.one_of(
    st.sampled_from(["M1/temperature", "M1/current/x", "M2/state"]),   # known equipment
    st.sampled_from(["M9/temperature", "X/y/z"]),                      # equipment not in the plant
    st.sampled_from(["M1//x", "/p"]),                                  # an empty level: no template matches
)


def test_fuzz_thousands_of_random_payloads_every_one_counted(tmp_path: Path) -> None:
    cases: list[tuple[str, bytes]] = []

    @settings(max_examples=3000, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example,
                                     HealthCheck.data_too_large])
    @given(topic=random_topics, payload=random_payloads)
    def collect(topic: str, payload: bytes) -> None:
        cases.append((topic, payload))

    collect()
    assert len(cases) >= 2000
    dead_letters = tmp_path / "dead.jsonl"
    asyncio.run(_fuzz(cases, dead_letters))


async def _fuzz(cases: list[tuple[str, bytes]], dead_letters: Path) -> None:
    prefix = unique("t/fuzz")
    config = mqtt_config(prefix, max_payload=1024, dead_letter={"path": str(dead_letters)},
                         subscriptions=[{"topic": prefix + "/{equipment}/{parameter}/#", "qos": 1}])
    sink = Sink()
    async with supervised(config, sink, forget=False, known_equipment={"M1", "M2"}) as (connector, supervisor):
        await asyncio.to_thread(publish, [(f"{prefix}/{topic}", payload) for topic, payload in cases])
        sent = len(cases)
        await async_wait(lambda: connector.accepted + sum(connector.rejected.values()) >= sent, 60,
                         "every message to be counted")
        await asyncio.sleep(0.5)
        assert supervisor.state == ConnectorState.CONNECTED and supervisor.failures == 0
        counted = connector.accepted + sum(connector.rejected.values())
        assert counted == sent, (counted, sent, connector.rejected)
        assert connector.accepted > 0
        assert set(connector.rejected) >= {"oversized", "unknown_equipment", "unknown_topic", "not_a_number"}
        assert len(sink.readings) >= connector.accepted
    # every message was acknowledged, rejected ones too: the same session, resumed, gets a marker published
    # after the fuzz and nothing before it (a broker resends what was not acknowledged before anything new)
    await asyncio.to_thread(publish, [(f"{prefix}/M1/marker", "42")])
    again = Sink()
    async with supervised(config, again, known_equipment={"M1", "M2"}) as (resumed, _):
        await async_wait(lambda: resumed.accepted + sum(resumed.rejected.values()) >= 1, 20, "the marker")
        assert resumed.session_present
        assert (resumed.accepted, dict(resumed.rejected)) == (1, {}) and again.values() == [42.0]
    print(f"fuzz: {sent} messages, {connector.accepted} accepted, rejected {dict(connector.rejected)}")
    text = await asyncio.to_thread(dead_letters.read_text)
    lines = [json.loads(line) for line in text.split("\n") if line]
    assert len(lines) == sum(connector.rejected.values())
    assert {line["reason"] for line in lines} == set(connector.rejected)
    for line in lines:
        assert line["topic"].startswith(prefix) and line["time"].endswith("Z")
        assert ("payload" in line) != ("payload_base64" in line)
        if "payload_base64" in line:
            base64.b64decode(line["payload_base64"])


async def test_unknown_topics_under_a_wildcard_are_counted_and_dead_lettered(tmp_path: Path) -> None:
    prefix = unique("t/unknown")
    config = mqtt_config(prefix, dead_letter={"path": str(tmp_path / "dl.jsonl")},
                         subscriptions=[{"topic": prefix + "/{equipment}/{parameter}/#", "qos": 1}],
                         tags=[])
    sink = Sink()
    async with supervised(config, sink) as (connector, _):
        await asyncio.to_thread(publish, [(f"{prefix}/M1/p/x", "1"), (f"{prefix}/M1/p", b"\xff\x00binary"),
                                          (f"{prefix}/M1//x", "2")])
        await async_wait(lambda: connector.accepted + sum(connector.rejected.values()) >= 3, 10, "3 messages")
    assert connector.accepted == 1   # M1/p/x: "#" matches the rest
    assert connector.rejected == {"not_a_number": 1, "unknown_topic": 1}   # binary; an empty level
    lines = [json.loads(line) for line in (tmp_path / "dl.jsonl").read_text().split("\n") if line]
    assert {line["reason"] for line in lines} == {"not_a_number", "unknown_topic"}
    binary = next(line for line in lines if line["reason"] == "not_a_number")
    assert base64.b64decode(binary["payload_base64"]) == b"\xff\x00binary"
    assert next(line for line in lines if line["reason"] == "unknown_topic")["payload"] == "2"


# --- shared subscriptions -------------------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_two_daemons_on_one_shared_subscription_split_the_messages(protocol: str) -> None:
    prefix = unique("t/shared")
    group = unique("ingestors")
    first, second = Sink(), Sink()
    config_a = mqtt_config(prefix, name="a", protocol=protocol, shared_group=group)
    config_b = mqtt_config(prefix, name="b", protocol=protocol, shared_group=group)
    async with supervised(config_a, first), supervised(config_b, second):
        await asyncio.to_thread(publish, [(f"{prefix}/M1/p", str(i)) for i in range(400)])
        await async_wait(lambda: len(first.readings) + len(second.readings) >= 400, 15, "400 readings")
        await asyncio.sleep(0.5)
    a, b = first.values(), second.values()
    assert len(a) + len(b) == 400                     # none twice
    assert sorted(a + b) == [float(i) for i in range(400)]   # their union is every message
    assert a and b                                    # both took a share
    print(f"shared subscription ({protocol}): {len(a)} / {len(b)}")


# --- broker restart (private broker) --------------------------------------------------------------------------

async def test_broker_restart_mid_stream_loses_nothing() -> None:
    broker = PrivateBroker()
    await asyncio.to_thread(broker.start)
    prefix = unique("t/restart")
    simulator = MqttSimulator(port=broker.port, rate=400, count=2000, machines=default_machines(2), prefix=prefix,
                              qos=1, client_id=unique("test-sim"), timestamp="epoch_us")
    sink = Sink()
    try:
        config = mqtt_config(prefix, port=broker.port)
        async with supervised(config, sink, forget=False) as (connector, supervisor):
            simulator.start()
            await async_wait(lambda: len(sink.readings) >= 500, 20, "the first 500 readings")
            await asyncio.to_thread(broker.stop)            # SIGTERM: mosquitto saves sessions and queues
            await asyncio.sleep(1.0)
            await asyncio.to_thread(broker.start)
            await asyncio.to_thread(simulator.wait, 60)
            distinct = lambda: len({(r.equipment, r.parameter, r.timestamp_us) for r in sink.readings})  # noqa: E731
            try:
                await async_wait(lambda: distinct() >= 2000, 30, "every message after the restart")
            except AssertionError:
                print("published", simulator.published, "acked", simulator.acknowledged, "distinct", distinct(),
                      "readings", len(sink.readings), connector.accepted, dict(connector.rejected))
                stamps = sorted(r.timestamp_us for r in sink.readings)
                gaps = [(a, b) for a, b in itertools.pairwise(stamps) if b - a > 100_000]
                print("gaps", gaps[:10])
                raise
            # the new link counts as recovered once it has stayed up for healthy_after
            await async_wait(lambda: supervisor.failures == 0, 10, "the link to count as recovered")
            assert supervisor.state == ConnectorState.CONNECTED
            duplicates = len(sink.readings) - distinct()
            print(f"broker restart: {len(sink.readings)} readings, {duplicates} duplicates (at-least-once)")
            assert distinct() == 2000
    finally:
        await asyncio.to_thread(simulator.stop, 0.5)
        await asyncio.to_thread(broker.close)


# --- TLS, user name and password from the environment ---------------------------------------------------------

def _make_certificates(directory: Path) -> None:
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)
    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
        "-keyout", "ca.key", "-out", "ca.pem")
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key", "-out",
        "server.csr")
    (directory / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
        "-extfile", "san.ext", "-out", "server.pem")
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=ingestor", "-keyout", "client.key", "-out",
        "client.csr")
    run("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
        "-out", "client.pem")


@pytest.mark.skipif(not shutil.which("openssl") or not shutil.which("mosquitto_passwd"),
                    reason="needs openssl and mosquitto_passwd")
async def test_tls_with_client_certificate_and_password_from_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    broker = PrivateBroker()
    files = broker.directory           # mosquitto reads these as its own user: keep them in its directory
    await asyncio.to_thread(_make_certificates, files)
    passwords = files / "passwd"
    await asyncio.to_thread(subprocess.run, ["mosquitto_passwd", "-b", "-c", str(passwords), "plant", "s3cret"],
                            check=True, capture_output=True)
    await asyncio.to_thread(lambda: [path.chmod(0o644) for path in files.iterdir()])
    broker.extra = (f"cafile {files}/ca.pem\ncertfile {files}/server.pem\nkeyfile {files}/server.key\n"
                    f"require_certificate true\npassword_file {passwords}\nallow_anonymous false\n")
    await asyncio.to_thread(broker.start)
    prefix = unique("t/tls")
    tls = {"ca_file": str(files / "ca.pem"), "cert_file": str(files / "client.pem"),
           "key_file": str(files / "client.key")}
    try:
        monkeypatch.setenv("TEST_MQTT_USER", "plant")
        monkeypatch.setenv("TEST_MQTT_PASSWORD", "wrong")
        config = mqtt_config(prefix, host="localhost", port=broker.port, tls=tls, username_env="TEST_MQTT_USER",
                             password_env="TEST_MQTT_PASSWORD")
        refused = build_connector(config)
        with pytest.raises(ConnectionLost, match="refused the connection"):
            await refused.connect()
        await refused.close()

        monkeypatch.setenv("TEST_MQTT_PASSWORD", "s3cret")
        sink = Sink()
        async with supervised(config, sink, forget=False):   # the private broker goes away with its sessions
            publisher = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
            publisher.tls_set(ca_certs=tls["ca_file"], certfile=tls["cert_file"], keyfile=tls["key_file"])
            publisher.username_pw_set("plant", "s3cret")
            publisher.connect("localhost", broker.port)
            publisher.loop_start()
            publisher.publish(f"{prefix}/M1/temperature", "42.5", qos=1).wait_for_publish(10)
            publisher.disconnect()
            publisher.loop_stop()
            await async_wait(lambda: sink.readings, 10, "a reading over TLS")
        assert sink.values() == [42.5]

        monkeypatch.delenv("TEST_MQTT_PASSWORD")
        with pytest.raises(ConnectionLost, match="TEST_MQTT_PASSWORD is not set"):
            await build_connector(config).connect()
    finally:
        await asyncio.to_thread(broker.close)


# --- the real daemon: offline delivery, exactly once ---------------------------------------------------------

DAEMON_CONFIG = """
instance_id: test-mqtt
database: {{url: "{dsn}"}}
plant:
  sites:
    - code: S1
      name: Site 1
      areas:
        - code: A1
          name: Area 1
          work_centers:
            - code: W1
              name: Line 1
              equipment:
                - {{code: PRESS-01, name: Press 1}}
                - {{code: PRESS-02, name: Press 2}}
connectors:
  - type: mqtt
    name: plant-mqtt
    client_id: {client_id}
    session_expiry: 5m
    keepalive: 5s
    subscriptions:
      - topic: {prefix}/{{equipment}}/{{parameter}}
        qos: 1
pipeline: {{batch_rows: 500, batch_age: 100ms, spool_dir: "{spool}"}}
http: {{enabled: false}}
"""


async def _rows(dsn: str) -> tuple[int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) AS n, count(DISTINCT (equipment_id, parameter, event_ts)) AS d FROM fact_sensor_event")
        return int(row["n"]), int(row["d"])
    except asyncpg.UndefinedTableError:
        return 0, 0
    finally:
        await conn.close()


async def test_qos1_messages_published_while_the_daemon_is_down_arrive_exactly_once(
        database: Database, tmp_path: Path) -> None:
    prefix = unique("t/offline")
    client_id = unique("test-daemon")
    path = tmp_path / "config.yaml"
    path.write_text(DAEMON_CONFIG.format(dsn=database.dsn, client_id=client_id, prefix=prefix,
                                         spool=tmp_path / "spool"))
    conn = await asyncpg.connect(database.dsn)
    try:
        await conn.execute("DROP TABLE IF EXISTS fact_sensor_event")   # the module's database is shared
    finally:
        await conn.close()
    total = 1500
    simulator = MqttSimulator(rate=300, count=total, machines=default_machines(2), prefix=prefix, qos=1,
                              client_id=unique("test-sim"), timestamp="epoch_us")
    try:
        first = Daemon(load_config(path, environ={}), url=database.dsn)
        serving = asyncio.create_task(first.serve())
        await async_wait(lambda: first.schema_ready.is_set(), 30, "the first daemon's database")
        simulator.start()
        await async_wait(lambda: simulator.published >= 400, 20, "400 messages published")
        first.stop()
        assert await serving == 0
        down_at = simulator.published
        await async_wait(lambda: simulator.published >= down_at + 400, 20, "400 more published while down")
        second = Daemon(load_config(path, environ={}), url=database.dsn)
        serving = asyncio.create_task(second.serve())
        assert await asyncio.to_thread(simulator.wait, 60)

        async def all_rows() -> bool:
            return (await _rows(database.dsn))[0] >= total
        deadline = time.monotonic() + 60
        while not await all_rows():
            assert time.monotonic() < deadline, f"rows: {await _rows(database.dsn)} of {total}"
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)        # any duplicate would arrive now
        second.stop()
        assert await serving == 0
        rows, distinct = await _rows(database.dsn)
        assert (rows, distinct) == (total, total), "every message exactly once"
    finally:
        await asyncio.to_thread(simulator.stop, 0.5)
        await asyncio.to_thread(forget_session, client_id)


# --- the example configuration, as an operator runs it ------------------------------------------------------

def test_ingestor_run_with_the_example_configuration_writes_rows(fresh_database: Database, tmp_path: Path) -> None:
    """``python -m simulators.mqtt`` with no arguments + ``ingestor run -c config/mqtt-simulator.yaml``
    (only the HTTP port and client id are changed, so parallel runs do not collide)."""
    port = free_port()
    client_id = unique("ingestor-mqtt-demo")
    text = (REPO / "config" / "mqtt-simulator.yaml").read_text()
    text = text.replace("listen: 127.0.0.1:9111", f"listen: 127.0.0.1:{port}")
    text = text.replace("client_id: ingestor-mqtt-demo", f"client_id: {client_id}")
    text = text.replace("spool_dir: /var/lib/ingestor/spool", f"spool_dir: {tmp_path / 'spool'}")
    config = tmp_path / "mqtt-simulator.yaml"
    config.write_text(text)
    env = {**os.environ, "INGESTOR_DATABASE_URL": fresh_database.dsn}
    log = (tmp_path / "daemon.log").open("w")
    daemon = subprocess.Popen([sys.executable, "-m", "ingestor", "run", "-c", str(config)], cwd=REPO, env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    simulator = subprocess.Popen([sys.executable, "-m", "simulators.mqtt"], cwd=REPO, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200, 30, "/readyz")

        def rows() -> int:
            return asyncio.run(_rows(fresh_database.dsn))[0]
        wait_until(lambda: rows() >= 24, 20, "rows from the simulator")
        metrics = http_get(f"http://127.0.0.1:{port}/metrics")[1]
        assert 'ingestor_mqtt_messages_accepted_total{connector="plant-mqtt"}' in metrics
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=20) == 0
    finally:
        for process in (simulator, daemon):
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=10)
        log.close()
        forget_session(client_id)


def test_simulator_replays_a_trace_at_a_speed_factor(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text("timestamp,node,value\n2024-01-01T00:00:00Z,PRESS-01.temperature,50\n"
                     "2024-01-01T00:00:10Z,PRESS-01.temperature,51\n2024-01-01T00:00:20Z,PRESS-07.state,3\n")
    prefix = unique("t/trace")
    received: list[tuple[str, bytes]] = []
    listener = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    listener.on_message = lambda c, u, m: received.append((m.topic, m.payload))
    listener.connect("127.0.0.1", SHARED_PORT)
    listener.subscribe(prefix + "/#", qos=1)
    listener.loop_start()
    try:
        time.sleep(0.3)
        started = time.monotonic()
        simulator = MqttSimulator(prefix=prefix, trace=str(trace), speed=20, payload_format="number").start()
        assert simulator.wait(10)
        elapsed = time.monotonic() - started
        simulator.stop(1)
        wait_until(lambda: len(received) >= 3, 5, "three replayed messages")
    finally:
        listener.disconnect()
        listener.loop_stop()
    assert received == [(f"{prefix}/PRESS-01/temperature", b"50.0"), (f"{prefix}/PRESS-01/temperature", b"51.0"),
                        (f"{prefix}/PRESS-07/state", b"3")]
    assert 0.9 <= elapsed < 5            # 20 s of trace at 20x speed

