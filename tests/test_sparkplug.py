"""Sparkplug B through the MQTT connector, against the real Mosquitto and the edge node simulator.

Every test uses a Sparkplug group of its own on the shared broker (127.0.0.1:1883): an edge node's death is
the broker delivering its will when its own connection closes, which disturbs no one else.  The decoder is
fuzzed without a broker, as the JSON path is in tests/test_mqtt_payloads.py.
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import asyncpg
import paho.mqtt.client as mqtt
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import ValidationError

from connectors.mqtt import sparkplug_b_pb2
from connectors.mqtt.config import MqttConfig, SparkplugConfig
from connectors.mqtt.payloads import REASONS, Malformed
from connectors.mqtt.sparkplug import SparkplugHost, SparkplugRoute
from ingestor.config import IngestorConfig
from ingestor.contract import Quality, Reading
from ingestor.daemon.runtime import Daemon
from ingestor.daemon.supervisor import ConnectorState
from simulators.machine import PARAMETERS, UNITS, default_machines
from simulators.sparkplug import SparkplugEdgeNode

from .helpers import async_wait_until
from .node_peers import PEERS, ensure_installed
from .test_mqtt import Sink, async_wait, publish, supervised, unique

Payload: Any = vars(sparkplug_b_pb2)["Payload"]
REPO = Path(__file__).resolve().parent.parent
METRICS = len(PARAMETERS)


def sparkplug_config(group: str, **fields: Any) -> MqttConfig:
    settings_: dict[str, Any] = {
        "type": "mqtt", "name": "test-sparkplug", "client_id": unique("test-spb"), "keepalive": "5s",
        "connect_timeout": "3s", "session_expiry": "1m", "reconnect": {"initial": "200ms", "max": "1s"},
        "subscriptions": [{"topic": f"spBv1.0/{group}/#", "qos": 1, "payload": {"format": "sparkplug_b"}}],
    }
    settings_.update(fields)
    return MqttConfig.model_validate(settings_)


def edge_node(group: str, machines: int = 2, **fields: Any) -> SparkplugEdgeNode:
    return SparkplugEdgeNode(group=group, rate=0, machines=default_machines(machines),
                             client_id=unique("test-edge"), **fields)


def last(sink: Sink, equipment: str, parameter: str) -> float | None:
    found = of(sink, equipment, parameter)
    return found[-1].value if found else None


def of(sink: Sink, equipment: str, parameter: str, quality: Quality = Quality.GOOD) -> list[Reading]:
    return [r for r in sink.readings if r.equipment == equipment and r.parameter == parameter
            and r.quality == quality]


async def test_birth_then_data_by_alias_with_units() -> None:
    group = unique("G")
    sink = Sink()
    async with supervised(sparkplug_config(group), sink) as (connector, _):
        edge = edge_node(group).start()
        try:
            await async_wait(lambda: len(sink.readings) >= 2 * METRICS, 10, "the births' values")
            assert {(r.equipment, r.parameter) for r in sink.readings} == {
                (m, p) for m in ("PRESS-01", "PRESS-02") for p in PARAMETERS}
            temperature = of(sink, "PRESS-01", "temperature")[0]
            assert temperature.unit == UNITS["temperature"] == "degC"
            edge.publish_data({"PRESS-02": {"temperature": 71.25, "parts_total": 4_000_000_000.0}})
            await async_wait(lambda: last(sink, "PRESS-02", "temperature") == 71.25, 10, "DDATA by alias")
            assert last(sink, "PRESS-02", "parts_total") == 4_000_000_000.0
            assert of(sink, "PRESS-02", "temperature")[-1].unit == "degC"
            assert connector.rejected == {}
            assert connector.sparkplug is not None and sum(connector.sparkplug.rebirths.values()) == 0
        finally:
            edge.stop()


async def test_death_marks_every_metric_bad_and_a_stale_death_is_ignored() -> None:
    group = unique("G")
    sink = Sink()
    async with supervised(sparkplug_config(group), sink) as (connector, _):
        edge = edge_node(group).start()
        try:
            await async_wait(lambda: len(sink.readings) >= 2 * METRICS, 10, "the births' values")
            edge.publish_data({"PRESS-01": {"temperature": 55.5}})
            await async_wait(lambda: last(sink, "PRESS-01", "temperature") == 55.5, 10, "the value")
            edge.die()  # the broker publishes the NDEATH will
            await async_wait(lambda: sum(r.quality == Quality.BAD for r in sink.readings) == 2 * METRICS, 10,
                             "every metric of both devices marked bad")
            dark = of(sink, "PRESS-01", "temperature", Quality.BAD)
            assert len(dark) == 1 and dark[0].value == 55.5 and dark[0].unit == "degC"
            assert dark[0].timestamp_us >= of(sink, "PRESS-01", "temperature")[-1].timestamp_us
            edge.come_back()  # bdSeq 1
            await async_wait(lambda: len(sink.readings) >= 4 * METRICS + 1, 10, "the second births")
            stale = Payload(timestamp=1)
            metric = stale.metrics.add(name="bdSeq", datatype=4)
            metric.long_value = 0  # the first session's death, delivered late
            publish([(edge.topic("NDEATH"), stale.SerializeToString())])
            host = connector.sparkplug
            assert host is not None
            await async_wait(lambda: host.stale_deaths == 1, 10, "the stale NDEATH")
            assert sum(r.quality == Quality.BAD for r in sink.readings) == 2 * METRICS
        finally:
            edge.stop()


async def test_a_missed_sequence_number_asks_for_exactly_one_rebirth_and_values_resume() -> None:
    group = unique("G")
    sink = Sink()
    async with supervised(sparkplug_config(group), sink) as (connector, _):
        edge = edge_node(group).start()
        try:
            await async_wait(lambda: len(sink.readings) >= 2 * METRICS, 10, "the births' values")
            edge.skip_sequence()
            edge.publish_data({"PRESS-01": {"current": 11.0}})
            edge.publish_data({"PRESS-01": {"current": 12.0}})
            await async_wait(lambda: edge.rebirths_answered == 1, 10, "the rebirth request")
            await async_wait(lambda: len(sink.readings) >= 4 * METRICS + 2, 10, "the rebirth's births")
            edge.publish_data({"PRESS-02": {"current": 13.0}})
            await async_wait(lambda: last(sink, "PRESS-02", "current") == 13.0, 10, "values after it")
            assert [r.value for r in of(sink, "PRESS-01", "current")][1:3] == [11.0, 12.0]
            assert edge.rebirths_answered == 1
            assert connector.sparkplug is not None and connector.sparkplug.rebirths == {"sequence_gap": 1}
        finally:
            edge.stop()


async def test_seq_wraps_at_255_without_a_rebirth() -> None:
    group = unique("G")
    sink = Sink()
    async with supervised(sparkplug_config(group), sink) as (connector, _):
        edge = edge_node(group, machines=1).start()
        try:
            for value in range(300):  # seq 1..255, 0, 1, ...
                edge.publish_data({"PRESS-01": {"vibration": float(value)}})
            await async_wait(lambda: last(sink, "PRESS-01", "vibration") == 299.0, 15, "300 DDATA")
            assert edge.rebirths_answered == 0
            assert [r.value for r in of(sink, "PRESS-01", "vibration")][1:] == [float(v) for v in range(300)]
            assert connector.rejected == {}
        finally:
            edge.stop()


async def test_data_before_birth_asks_for_a_rebirth() -> None:
    group = unique("G")
    edge = edge_node(group).start()  # births before the connector subscribes: it never sees them
    sink = Sink()
    try:
        async with supervised(sparkplug_config(group), sink) as (connector, _):
            edge.publish_data({"PRESS-01": {"temperature": 40.0}})
            await async_wait(lambda: edge.rebirths_answered == 1, 10, "the rebirth request")
            await async_wait(lambda: len(sink.readings) >= 2 * METRICS, 10, "the births' values")
            edge.publish_data({"PRESS-01": {"temperature": 41.0}})
            await async_wait(lambda: last(sink, "PRESS-01", "temperature") == 41.0, 10, "data after it")
            # The DDATA, and the start's DBIRTHs too when they reached the broker after the subscription (their
            # NBIRTH did not): each is data before a birth, and all of them together ask for one rebirth.
            assert 1 <= connector.rejected["before_birth"] <= 3, connector.rejected
            assert connector.sparkplug is not None and connector.sparkplug.rebirths == {"before_birth": 1}
    finally:
        edge.stop()


async def test_a_node_restarting_with_new_aliases_maps_its_metrics_anew() -> None:
    group = unique("G")
    sink = Sink()
    async with supervised(sparkplug_config(group), sink) as (connector, _):
        edge = edge_node(group).start()
        try:
            await async_wait(lambda: len(sink.readings) >= 2 * METRICS, 10, "the births' values")
            edge.die()
            await async_wait(lambda: sum(r.quality == Quality.BAD for r in sink.readings) == 2 * METRICS, 10,
                             "the death")
            # new aliases that overlap the old ones differently: PRESS-01 now has alias 1 + 3 ... = old ones + 3
            edge.come_back(alias_base=4)
            await async_wait(lambda: len(sink.readings) >= 5 * METRICS, 10, "the new births")
            edge.publish_data({"PRESS-01": {"state": 3.0, "temperature": 88.0},
                               "PRESS-02": {"parts_good": 7.0}})
            await async_wait(lambda: last(sink, "PRESS-02", "parts_good") == 7.0, 10, "new-alias data")
            assert last(sink, "PRESS-01", "state") == 3.0
            assert last(sink, "PRESS-01", "temperature") == 88.0
            assert edge.rebirths_answered == 0 and connector.rejected == {}
        finally:
            edge.stop()


async def test_malformed_protobuf_is_rejected_with_its_reason_and_the_connector_goes_on() -> None:
    group = unique("G")
    sink = Sink()
    async with supervised(sparkplug_config(group), sink) as (connector, supervisor):
        edge = edge_node(group, machines=1).start()
        try:
            await async_wait(lambda: len(sink.readings) >= METRICS, 10, "the births' values")
            publish([(f"spBv1.0/{group}/DDATA/{edge.node}/PRESS-01", b"\x0a\xff\xff\xff"),
                     (f"spBv1.0/{group}/NDATA/{edge.node}/extra/level", b""),
                     (f"spBv1.0/{group}/NBIRTH/{edge.node}", b"\x08")])
            await async_wait(lambda: sum(connector.rejected.values()) == 3, 10, "three rejections")
            assert connector.rejected == {"bad_protobuf": 2, "bad_topic": 1}
            edge.birth()
            edge.publish_data({"PRESS-01": {"reason": 2.0}})
            await async_wait(lambda: last(sink, "PRESS-01", "reason") == 2.0, 10, "data after the garbage")
            assert supervisor.state == ConnectorState.CONNECTED
        finally:
            edge.stop()


async def test_primary_host_state_birth_and_death_are_retained() -> None:
    group, host_id = unique("G"), unique("host")
    topic = f"spBv1.0/STATE/{host_id}"
    seen: list[dict[str, Any]] = []

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        if message.payload:  # not the empty message that clears it at the end
            seen.append(json.loads(message.payload))

    watcher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=unique("test-state"))
    watcher.on_message = on_message
    watcher.connect("127.0.0.1", 1883)
    watcher.subscribe(topic, qos=1)
    watcher.loop_start()
    try:
        config = sparkplug_config(group, sparkplug={"host_id": host_id})
        async with supervised(config, Sink()) as (connector, _):
            await async_wait(lambda: seen and seen[-1]["online"] is True, 10, "the STATE birth")
            assert connector.sparkplug is not None
            await async_wait(lambda: connector.sparkplug.hosts.get(host_id) is True, 10, "our own STATE seen")
        await async_wait(lambda: seen[-1]["online"] is False, 10, "the STATE death")
        assert seen[-1]["timestamp"] == seen[-2]["timestamp"]  # Sparkplug 3.0: the death repeats the birth's
    finally:
        publish([(topic, b"")], retain=True)  # clear the retained STATE
        watcher.loop_stop()
        watcher.disconnect()


def test_configuration_refuses_what_sparkplug_cannot_do() -> None:
    with pytest.raises(ValidationError, match=r"spBv1\.0/GROUP/#"):
        sparkplug_config("G", subscriptions=[{"topic": "plant/{equipment}/#", "payload": {"format": "sparkplug_b"}}])
    with pytest.raises(ValidationError, match="shared_group"):
        sparkplug_config("G", shared_group="ingestors")
    with pytest.raises(ValidationError, match="offers"):
        sparkplug_config("G", subscriptions=[{"topic": "spBv1.0/G/#", "payload": {"format": "sparkplug_b"},
                                              "equipment": "{line}"}])
    assert sparkplug_config("G", subscriptions=[{"topic": "spBv1.0/{group}/#", "payload": {"format": "sparkplug_b"},
                                                 "equipment": "{group}-{device}"}])


# --- the decoder, fuzzed ---------------------------------------------------------------------------------------

ROUTE = SparkplugRoute("{device}", "{metric}", None)
TOPICS = st.sampled_from(["spBv1.0/G/NBIRTH/E", "spBv1.0/G/NDATA/E", "spBv1.0/G/NDEATH/E", "spBv1.0/G/DBIRTH/E/D",
                          "spBv1.0/G/DDATA/E/D", "spBv1.0/G/DDEATH/E/D", "spBv1.0/STATE/h", "spBv1.0/G/NCMD/E",
                          "spBv1.0/G/XDATA/E", "spBv1.0/G/DDATA/E"])
VALUES = st.one_of(
    st.tuples(st.just("int_value"), st.integers(0, 2**32 - 1)), st.tuples(st.just("long_value"), st.integers(0, 2**64 - 1)),
    st.tuples(st.just("float_value"), st.floats(width=32)), st.tuples(st.just("double_value"), st.floats()),
    st.tuples(st.just("boolean_value"), st.booleans()), st.tuples(st.just("string_value"), st.text(max_size=5)))
METRIC = st.tuples(st.one_of(st.none(), st.sampled_from(["a", "b", "bdSeq", "Node Control/Rebirth", ""])),
                   st.one_of(st.none(), st.integers(0, 5)), st.integers(0, 40), VALUES, st.booleans(),
                   st.one_of(st.none(), st.integers(0, 2**64 - 1)))


def _payload(seq: int | None, stamp: int | None, metrics: list[Any]) -> bytes:
    payload = Payload()
    if seq is not None:
        payload.seq = seq
    if stamp is not None:
        payload.timestamp = stamp
    for name, alias, datatype, (field, value), is_null, mstamp in metrics:
        metric = payload.metrics.add(datatype=datatype, is_null=is_null)
        if name is not None:
            metric.name = name
        if alias is not None:
            metric.alias = alias
        if mstamp is not None:
            metric.timestamp = mstamp
        setattr(metric, field, value)
    return bytes(payload.SerializeToString())


def _check(host: SparkplugHost, topic: str, body: bytes) -> None:
    try:
        readings = host.readings(topic, body, ROUTE, 1_700_000_000_000_000)
    except Malformed as exc:
        assert exc.reason in REASONS
        return
    for reading in readings:
        assert math.isfinite(reading.value)
        assert 0 <= reading.timestamp_us < 7_258_118_400_000_000
        assert reading.parameter and reading.equipment in ("D", "E")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(TOPICS, st.binary(max_size=60)), max_size=8))
def test_fuzz_random_bytes_never_crash_the_decoder(messages: list[tuple[str, bytes]]) -> None:
    host = SparkplugHost("fuzz", SparkplugConfig(), lambda topic, body: None)
    for topic, body in messages:
        _check(host, topic, body)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(TOPICS, st.one_of(st.none(), st.integers(0, 300)),
                          st.one_of(st.none(), st.integers(0, 2**64 - 1)), st.lists(METRIC, max_size=4)),
                max_size=8))
def test_fuzz_well_formed_payloads_in_any_order(messages: list[Any]) -> None:
    requests: list[str] = []
    host = SparkplugHost("fuzz", SparkplugConfig(rebirth_interval=1000), lambda topic, body: requests.append(topic))
    for topic, seq, stamp, metrics in messages:
        _check(host, topic, _payload(seq, stamp, metrics))
    assert len(requests) <= 1  # rate-limited: one node, one request per interval


# --- an independent edge node: Eclipse Tahu's sparkplug-client (npm), tests/peers/sparkplug_edge.js -------------

async def test_an_eclipse_tahu_edge_node_births_publishes_by_alias_answers_rebirth_and_dies() -> None:
    ensure_installed()
    group = unique("G")
    sink = Sink()
    async with supervised(sparkplug_config(group), sink) as (connector, _):
        process = await asyncio.create_subprocess_exec(
            "node", str(PEERS / "sparkplug_edge.js"), "1883", group, "TAHU-1", cwd=PEERS,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        assert process.stdin is not None and process.stdout is not None
        try:
            await async_wait(lambda: len(sink.readings) >= 2, 30, "the Tahu node's births")
            assert {(r.equipment, r.parameter, r.unit) for r in sink.readings} == {
                ("DEV-1", "temperature", "degC"), ("DEV-1", "count", None)}
            process.stdin.write(b"data 33.5 -4\n")
            await process.stdin.drain()
            await async_wait(lambda: last(sink, "DEV-1", "temperature") == 33.5, 10, "DDATA by alias")
            assert last(sink, "DEV-1", "count") == -4.0  # Int32 as two's complement in the uint32 int_value
            host = connector.sparkplug
            assert host is not None
            node = host.nodes[(group, "TAHU-1")]
            node.seq = (node.seq or 0) + 5  # as if messages were lost: the next DDATA is a gap
            process.stdin.write(b"data 34.0 5\n")
            await process.stdin.drain()
            await async_wait(lambda: host.rebirths == {"sequence_gap": 1}, 10, "a rebirth request")
            await async_wait(lambda: len(of(sink, "DEV-1", "temperature")) >= 4, 10, "the Tahu node's rebirth")
            process.kill()  # no DISCONNECT: the broker publishes the Tahu node's NDEATH will
            await process.wait()
            await async_wait(lambda: len([r for r in sink.readings if r.quality == Quality.BAD]) == 2, 15,
                             "both metrics marked bad")
            assert connector.rejected == {}
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


def test_test_mode_does_not_speak_for_the_daemons_primary_host() -> None:
    config = sparkplug_config("G", sparkplug={"host_id": "daemon-host"})
    assert config.for_test_mode().sparkplug.host_id is None
    assert config.sparkplug.host_id == "daemon-host"


async def test_the_daemon_stores_a_sparkplug_edge_node_and_its_death_as_bad_quality(
        fresh_database: Any, tmp_path: Path) -> None:
    """The example configuration, run by the real daemon into PostgreSQL: births and data by alias become rows
    with the metric's engineering unit, and the broker's NDEATH will becomes a bad-quality row per metric."""
    group = unique("G")
    data = yaml.safe_load((REPO / "config" / "mqtt-sparkplug.yaml").read_text())
    data["database"] = {"url": fresh_database.dsn, "refresh": {
        "view_oee_daily": 0, "view_reliability_summary": 0, "sensor_5min_avg": 0}}
    data["pipeline"].update(spool_dir=str(tmp_path / "spool"), batch_age="50ms")
    data["http"] = {"enabled": False}
    connector = data["connectors"][0]
    connector.update(client_id=unique("test-spb-daemon"), session_expiry="1m")
    connector["sparkplug"]["host_id"] = unique("test-host")
    connector["subscriptions"][0]["topic"] = f"spBv1.0/{group}/#"
    daemon = Daemon(IngestorConfig.model_validate(data), url=fresh_database.dsn)
    serving = asyncio.create_task(daemon.serve())
    edge = None
    try:
        await async_wait_until(lambda: daemon.schema_ready.is_set(), 60, "the schema")
        await async_wait_until(lambda: daemon.supervisors[0].state is ConnectorState.CONNECTED, 30,
                               "the daemon's Sparkplug connector to connect")
        edge = edge_node(group).start()
        stored = """SELECT e.value, u.unit_code, e.quality FROM fact_sensor_event e
                    JOIN dim_equipment q USING (equipment_id) LEFT JOIN dim_unit u USING (unit_id)
                    WHERE q.equipment_code = $1 AND e.parameter = $2 ORDER BY e.event_ts, e.event_id"""

        async def rows(equipment: str, parameter: str) -> list[asyncpg.Record]:
            conn = await asyncpg.connect(fresh_database.dsn)
            try:
                return list(await conn.fetch(stored, equipment, parameter))
            finally:
                await conn.close()

        await async_wait_until(lambda: rows("PRESS-01", "temperature"), 30, "the birth's values in the table")
        assert (await rows("PRESS-01", "temperature"))[0]["unit_code"] == "degC"
        edge.publish_data({"PRESS-02": {"temperature": 71.25}})

        async def published() -> bool:
            return any(r["value"] == 71.25 and r["quality"] == 0 for r in await rows("PRESS-02", "temperature"))
        await async_wait_until(published, 30, "DDATA by alias in the table")
        edge.die()

        async def dark() -> bool:
            for machine in ("PRESS-01", "PRESS-02"):
                for parameter in PARAMETERS:
                    found = await rows(machine, parameter)
                    if not found or found[-1]["quality"] != 2:
                        return False
            return True
        await async_wait_until(dark, 30, "every metric of the dead edge node stored as bad quality")
        assert daemon.supervisors[0].state is ConnectorState.CONNECTED
    finally:
        if edge is not None:
            edge.die()
        daemon.stop()
        assert await asyncio.wait_for(serving, 60) == 0
