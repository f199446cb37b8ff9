"""MQTT without a broker: configuration checks, topic templates, payload parsing, and a parser fuzz run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from connectors.mqtt.config import MqttConfig, PayloadConfig, filter_of, filters_overlap
from connectors.mqtt.payloads import REASONS, Malformed, PayloadParser, to_timestamp_us
from connectors.mqtt.topics import TopicRouter
from ingestor.config import ConfigError, load_config
from ingestor.contract import Reading

from .conftest import REPO

RECEIVED = 1_700_000_000_000_000


def config(**fields: object) -> MqttConfig:
    return MqttConfig.model_validate({"type": "mqtt", "name": "m", **fields})


def errors_of(**fields: object) -> str:
    with pytest.raises(ValidationError) as info:
        config(**fields)
    return str(info.value)


# --- configuration ------------------------------------------------------------------------------------------

def test_templates_become_filters_and_overlaps_are_found() -> None:
    assert filter_of("plant/{site}/{equipment}/{parameter}") == "plant/+/+/+"
    assert filter_of("a/+/{x}/#") == "a/+/+/#"
    assert filters_overlap("plant/+/+/+", "plant/S1/M1/temp")
    assert filters_overlap("a/#", "a")
    assert filters_overlap("a/+/c", "a/b/+")
    assert not filters_overlap("plant/+/+/+", "plant/+/+")
    assert not filters_overlap("a/b/c", "a/b/d")


@pytest.mark.parametrize(("fields", "message"), [
    ({"subscriptions": [{"topic": "plant/{site}/{equipment}"}]}, "no parameter"),
    ({"subscriptions": [{"topic": "plant/{site}/{parameter}"}]}, "no equipment"),
    ({"subscriptions": [{"topic": "plant/{equipment}/{parameter}", "equipment": "P-{line}"}]},
     "does not capture"),
    ({"subscriptions": [{"topic": "plant/x{equipment}/{parameter}"}]}, "whole topic level"),
    ({"subscriptions": [{"topic": "plant/#/{equipment}/{parameter}"}]}, "last level"),
    ({"subscriptions": [{"topic": "plant/{equipment}/{equipment}"}]}, "appears twice"),
    ({"subscriptions": [{"topic": "$share/g/{equipment}/{parameter}"}]}, "shared_group"),
    ({"subscriptions": [{"topic": "a/{equipment}/{parameter}"}, {"topic": "a/M1/{parameter}", "equipment": "M1"}]},
     "overlaps"),
    ({"subscriptions": [{"topic": "a/{equipment}/{parameter}"}],
      "tags": [{"topic": "a/M1/t", "equipment": "M1", "parameter": "t"}]}, "twice"),
    ({"tags": [{"topic": "a/+/t", "equipment": "M1", "parameter": "t"}]}, "exact topic"),
    ({}, "give subscriptions"),
    ({"tags": [{"topic": "a", "equipment": "M1", "parameter": "t"}], "password": "secret"}, "Extra inputs"),
    ({"tags": [{"topic": "a", "equipment": "M1", "parameter": "t"}], "password_env": "not a name"}, "pattern"),
    ({"tags": [{"topic": "a", "equipment": "M1", "parameter": "t"}], "protocol": "4"}, "protocol"),
    ({"tags": [{"topic": "a", "equipment": "M1", "parameter": "t"}], "tls": {"ca_file": "/nonexistent/ca.pem"}},
     "not a readable file"),
    ({"tags": [{"topic": "a", "equipment": "M1", "parameter": "t"}], "shared_group": "a/b"}, "pattern"),
    ({"tags": [{"topic": "a", "equipment": "M1", "parameter": "t", "payload": {"value": "a..b"}}]}, "path"),
])
def test_invalid_configurations_are_refused_with_a_clear_message(fields: dict[str, object], message: str) -> None:
    assert message in errors_of(**fields)


def test_protocol_accepts_how_operators_write_it() -> None:
    tags = [{"topic": "a", "equipment": "M1", "parameter": "t"}]
    assert config(tags=tags, protocol=5).protocol == "5"
    assert config(tags=tags, protocol="3.1.1").protocol == "3.1.1"
    assert config(tags=tags, protocol="v5").protocol == "5"


def test_the_example_configuration_loads_and_its_tags_are_cross_checked(tmp_path: Path) -> None:
    loaded = load_config(REPO / "config" / "mqtt-simulator.yaml", environ={})
    mqtt = [c for c in loaded.connectors if c.type == "mqtt"]
    assert mqtt and isinstance(mqtt[0], MqttConfig)
    assert loaded.http.listen.endswith(":9111")
    # explicit tags are checked against the plant like any connector's tags
    text = (REPO / "config" / "mqtt-simulator.yaml").read_text()
    broken = tmp_path / "broken.yaml"
    broken.write_text(text.replace("tags: []", "tags: [{topic: x/y, equipment: PRES-01, parameter: t}]"))
    with pytest.raises(ConfigError) as info:
        load_config(broken, environ={})
    assert "unknown equipment 'PRES-01' (did you mean 'PRESS-01'?)" in str(info.value)


# --- topics -------------------------------------------------------------------------------------------------

def test_topics_map_to_equipment_and_parameter() -> None:
    router = TopicRouter(config(
        subscriptions=[
            {"topic": "plant/{site}/{equipment}/{parameter}"},
            {"topic": "line/{n}/{parameter}", "equipment": "PRESS-{n}", "unit": "degC"},
            {"topic": "gw/+/data/#", "equipment": "GW-1", "payload": {"parameter": "tag"}},
        ],
        tags=[{"topic": "legacy/press1/temp", "equipment": "PRESS-01", "parameter": "temperature", "unit": "degC"}],
    ))
    first = router.route("plant/S1/PRESS-01/temperature")
    assert first is not None and (first.equipment, first.parameter, first.unit) == ("PRESS-01", "temperature", None)
    second = router.route("line/07/current")
    assert second is not None and (second.equipment, second.parameter, second.unit) == ("PRESS-07", "current", "degC")
    third = router.route("gw/x/data/a/b")
    assert third is not None and (third.equipment, third.parameter) == ("GW-1", None)
    exact = router.route("legacy/press1/temp")
    assert exact is not None and (exact.equipment, exact.parameter) == ("PRESS-01", "temperature")
    assert router.route("plant/S1/PRESS-01") is None
    assert router.route("plant/S1//temperature") is None   # an empty level names nothing
    assert router.route("other/topic") is None
    assert router.route("other/topic") is None             # cached "unknown"


# --- payloads -----------------------------------------------------------------------------------------------

def parse(body: bytes | str, topic_equipment: str | None = "M1", topic_parameter: str | None = "temp",
          topic_unit: str | None = None, **payload: object) -> list[Reading]:
    """Parse as a message whose topic named ``topic_*``; keyword arguments are the payload settings."""
    raw = body.encode() if isinstance(body, str) else body
    return PayloadParser(PayloadConfig.model_validate(payload)).parse(
        raw, topic_equipment, topic_parameter, topic_unit, RECEIVED)


def reason(body: bytes | str, **kwargs: object) -> str:
    with pytest.raises(Malformed) as info:
        parse(body, **kwargs)  # type: ignore[arg-type]
    return info.value.reason


def test_bare_numbers() -> None:
    assert parse("21.5") == [Reading("M1", "temp", 21.5, RECEIVED)]
    assert parse(" -3\n", topic_unit="degC") == [Reading("M1", "temp", -3.0, RECEIVED, "degC")]
    assert parse("true") == [Reading("M1", "temp", 1.0, RECEIVED)]
    assert parse('"7.25"')[0].value == 7.25
    assert reason("nan") == "not_a_number"
    assert reason("inf", format="number") == "not_a_number"
    assert reason("RUNNING") == "not_a_number"
    assert reason('{"value": 1}', format="number") == "not_a_number"


def test_json_objects_with_field_paths() -> None:
    body = json.dumps({"data": {"v": "12.5", "at": 1_700_000_000_123, "u": "bar", "tag": "pressure"}})
    got = parse(body, format="json", value="data.v", timestamp="data.at", unit="data.u", parameter="data.tag")
    assert got == [Reading("M1", "pressure", 12.5, 1_700_000_000_123_000, "bar")]
    assert parse('{"value": 3, "timestamp": "2024-05-01T10:00:00.5+02:00"}')[0].timestamp_us == \
        1_714_550_400_500_000
    assert parse('{"value": 3}')[0].timestamp_us == RECEIVED       # no timestamp: the receive time
    assert parse('{"value": 3, "unit": "degC"}', topic_unit="K")[0].unit == "degC"   # the payload's unit wins
    assert parse('{"readings": [{"value": 1}]}', items="readings", value="value")[0].value == 1.0
    assert parse('{"v": {"0": 5}}', value="v.0")[0].value == 5.0
    assert parse('{"v": [4, 5]}', value="v.1")[0].value == 5.0


def test_arrays_of_readings_share_the_enclosing_timestamp() -> None:
    body = json.dumps({"timestamp": 1_700_000_000, "machine": "PRESS-02", "readings": [
        {"parameter": "temperature", "value": 55.1, "unit": "degC"},
        {"parameter": "state", "value": 1, "timestamp": 1_700_000_001.5},
    ]})
    got = parse(body, topic_equipment=None, topic_parameter=None, items="readings", equipment="machine",
                parameter="parameter")
    assert got == [Reading("PRESS-02", "temperature", 55.1, 1_700_000_000_000_000, "degC"),
                   Reading("PRESS-02", "state", 1.0, 1_700_000_001_500_000)]
    assert [r.value for r in parse("[1, 2.5, false]")] == [1.0, 2.5, 0.0]
    assert reason("[]") == "empty"
    assert reason('[1, "x"]') == "not_a_number"   # one bad item rejects the message


@pytest.mark.parametrize(("body", "kwargs", "expected"), [
    ('{"value": 1', {}, "bad_json"),
    (b"\xff\xfe\x00garbage{", {"format": "json"}, "bad_encoding"),
    ('{"val": 1}', {}, "missing_field"),
    ('{"value": null}', {}, "not_a_number"),
    ('{"value": [1]}', {}, "not_a_number"),
    ('{"value": 1e400}', {}, "not_a_number"),
    ('{"value": 1, "timestamp": "yesterday"}', {}, "bad_timestamp"),
    ('{"value": 1, "timestamp": true}', {}, "bad_timestamp"),
    ('{"value": 1, "timestamp": -5}', {}, "bad_timestamp"),
    ('{"value": 1, "parameter": ""}', {"parameter": "parameter"}, "bad_parameter"),
    ('{"value": 1, "parameter": {"a": 1}}', {"parameter": "parameter"}, "bad_parameter"),
    ('{"value": 1}', {"topic_parameter": None}, "missing_field"),
    ("", {}, "empty"),
    ('{"readings": {}}', {"items": "readings"}, "missing_field"),
    ("[" * 100_000 + "]" * 100_000, {}, "bad_json"),
])
def test_malformed_payloads_have_a_reason(body: str | bytes, kwargs: dict[str, object], expected: str) -> None:
    assert reason(body, **kwargs) == expected


def test_unknown_equipment_and_units_are_refused_when_the_plant_is_known() -> None:
    parser = PayloadParser(PayloadConfig(), known_equipment={"M1"}, known_units={"degC"})
    assert parser.parse(b"1", "M1", "t", "degC", RECEIVED)
    with pytest.raises(Malformed) as info:
        parser.parse(b"1", "M9", "t", None, RECEIVED)
    assert info.value.reason == "unknown_equipment"
    with pytest.raises(Malformed) as info:
        parser.parse(b'{"value": 1, "unit": "furlong"}', "M1", "t", None, RECEIVED)
    assert info.value.reason == "unknown_unit"


@pytest.mark.parametrize(("raw", "fmt", "expected"), [
    (1_700_000_000, "auto", 1_700_000_000_000_000),
    (1_700_000_000.25, "auto", 1_700_000_000_250_000),
    (1_700_000_000_123, "auto", 1_700_000_000_123_000),
    (1_700_000_000_123_456, "auto", 1_700_000_000_123_456),
    (1_700_000_000_123_456_789, "auto", 1_700_000_000_123_457),
    ("1700000000", "auto", 1_700_000_000_000_000),
    ("2023-11-14T22:13:20Z", "auto", 1_700_000_000_000_000),
    ("2023-11-14T22:13:20", "iso8601", 1_700_000_000_000_000),   # naive: UTC
    (1_700_000_000_000, "epoch_ms", 1_700_000_000_000_000),
    (1_700_000_000, "epoch_s", 1_700_000_000_000_000),
])
def test_timestamps(raw: object, fmt: str, expected: int) -> None:
    assert to_timestamp_us(raw, fmt) == expected


@pytest.mark.parametrize("raw", [
    253_402_300_799,          # 9999-12-31 in seconds: a size-based guess read it as ms, 1978-01-11
    253_402_300_799_000,      # the same in ms: not 2000..2200 in any unit
    12_345,                   # a counter, not a time
    -1_700_000_000,
    8e11,                     # between the seconds and the milliseconds ranges
])
def test_an_epoch_number_in_no_plausible_unit_is_refused_not_guessed(raw: float) -> None:
    with pytest.raises(Malformed) as info:
        to_timestamp_us(raw, "auto")
    assert info.value.reason == "bad_timestamp"


def test_a_named_unit_is_taken_as_given() -> None:
    with pytest.raises(Malformed):   # year 9999 is refused even in the right unit: outside 1970..2200
        to_timestamp_us(253_402_300_799, "epoch_s")
    assert to_timestamp_us(946_684_799, "epoch_s") == 946_684_799_000_000   # 1999: fine when the unit is named
    assert to_timestamp_us(1_700_000_000_000_000_000, "epoch_ns") == 1_700_000_000_000_000


def test_timestamp_formats_are_enforced_when_configured() -> None:
    with pytest.raises(Malformed):
        to_timestamp_us(1_700_000_000, "iso8601")
    with pytest.raises(Malformed):
        to_timestamp_us("2023-11-14T22:13:20Z", "epoch_ms")


# --- fuzz: whatever arrives, the parser returns readings or a known reason, never anything else ----------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(
        st.sampled_from(["value", "timestamp", "unit", "parameter", "readings", "x"]) | st.text(max_size=5),
        children, max_size=5),
    max_leaves=20)
payloads = (st.binary(max_size=200)
            | st.text(max_size=100).map(str.encode)
            | json_values.map(lambda v: json.dumps(v).encode())
            | st.floats(allow_nan=True, allow_infinity=True).map(lambda f: repr(f).encode()))


@settings(max_examples=2000, deadline=None)
@given(body=payloads, fmt=st.sampled_from(["auto", "json", "number"]), items=st.sampled_from([None, "readings"]))
def test_fuzz_parser_never_fails_unexpectedly(body: bytes, fmt: str, items: str | None) -> None:
    parser = PayloadParser(PayloadConfig.model_validate({"format": fmt, "items": items, "parameter": "parameter"}),
                           known_equipment={"M1"})
    try:
        readings = parser.parse(body, "M1", "p", None, RECEIVED)
    except Malformed as exc:
        assert exc.reason in REASONS
        return
    assert readings
    for reading in readings:
        assert math.isfinite(reading.value)
        assert reading.equipment == "M1"
        assert 0 <= reading.timestamp_us < 7_258_118_400_000_000
        assert 0 < len(reading.parameter) <= 100
