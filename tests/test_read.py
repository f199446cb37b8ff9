"""`ingestor read` (test mode) end to end: the real command as a subprocess against our OPC UA and Modbus simulators
and the real Mosquitto, each with one tag that cannot work, and no database anywhere (the configured URL points
at a port nothing listens on, and the spool directory must not be created)."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from simulators.machine import default_machines
from simulators.modbus import ModbusSimulator
from simulators.opcua import OpcUaSimulator, SimulatorOptions

from .conftest import REPO
from .helpers import async_wait_until, free_port

PLANT = """
instance_id: test-read
database:
  url: postgresql://postgres@127.0.0.1:1/nothing-listens-here
plant:
  sites:
    - code: S1
      name: Site 1
      timezone: Europe/Berlin
      areas:
        - code: A1
          name: Area 1
          work_centers:
            - code: W1
              name: Work center 1
              equipment:
                - {{code: PRESS-01, name: Press 1}}
                - {{code: PRESS-02, name: Press 2}}
pipeline:
  spool_dir: {spool}
http:
  enabled: false
connectors:
"""


async def _read(tmp_path: Path, connectors: str, *args: str) -> tuple[int, str, str]:
    config = tmp_path / "config.yaml"
    config.write_text(PLANT.format(spool=tmp_path / "spool") + connectors)
    env = {k: v for k, v in os.environ.items() if k != "INGESTOR_DATABASE_URL"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ingestor", "read", "-c", str(config), *args, cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert not (tmp_path / "spool").exists(), "test mode must not open a spool"
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def _rows(out: str) -> list[list[str]]:
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["equipment", "parameter", "value"], out
    return [line.split() for line in lines[1:]]


async def test_opcua_prints_readings_and_names_the_bad_node_id(tmp_path: Path) -> None:
    simulator = OpcUaSimulator(SimulatorOptions(port=free_port(), machines=2, interval=0.2))
    await simulator.start()
    try:
        code, out, err = await _read(tmp_path, f"""
  - type: opcua
    name: press-opcua
    endpoint: {simulator.endpoint}
    timeout: 2s
    groups:
      - name: fast
        publishing_interval: 200ms
        tags:
          - {{node: "ns=2;s=PRESS-01.temperature", equipment: PRESS-01, parameter: temperature, unit: degC}}
          - {{node: "ns=2;s=PRESS-02.parts_total", equipment: PRESS-02, parameter: parts_total}}
          - {{node: "ns=2;s=PRESS-01.no_such_node", equipment: PRESS-01, parameter: pressure}}
""", "--once", "--for", "8s")
    finally:
        await simulator.stop()
    rows = _rows(out)
    seen = {(r[0], r[1]) for r in rows}
    assert {("PRESS-01", "temperature"), ("PRESS-02", "parts_total")} <= seen, out + err
    assert all(r[-1] == "press-opcua" for r in rows)
    temperature = next(r for r in rows if r[1] == "temperature")
    assert temperature[3] == "degC" and temperature[4] == "good", temperature
    assert code == 1, err
    failed = [line for line in err.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1, err
    assert "PRESS-01.pressure" in failed[0] and "BadNodeIdUnknown" in failed[0], failed


async def test_opcua_tag_filter_selects_tags_and_all_good_exits_0(tmp_path: Path) -> None:
    simulator = OpcUaSimulator(SimulatorOptions(port=free_port(), machines=2, interval=0.2))
    await simulator.start()
    try:
        code, out, err = await _read(tmp_path, f"""
  - type: opcua
    name: press-opcua
    endpoint: {simulator.endpoint}
    groups:
      - name: fast
        publishing_interval: 200ms
        tags:
          - {{node: "ns=2;s=PRESS-01.temperature", equipment: PRESS-01, parameter: temperature}}
          - {{node: "ns=2;s=PRESS-02.temperature", equipment: PRESS-02, parameter: temperature}}
          - {{node: "ns=2;s=PRESS-01.no_such_node", equipment: PRESS-01, parameter: pressure}}
""", "--once", "--tag", "*.temperature")
    finally:
        await simulator.stop()
    assert code == 0, err
    assert {(r[0], r[1]) for r in _rows(out)} == {("PRESS-01", "temperature"), ("PRESS-02", "temperature")}
    assert "FAILED" not in err


async def test_modbus_prints_readings_and_names_the_refused_register(tmp_path: Path) -> None:
    simulator = ModbusSimulator(default_machines(1), port=free_port())
    await simulator.start()
    try:
        code, out, err = await _read(tmp_path, f"""
  - type: modbus
    name: press-modbus
    host: 127.0.0.1
    port: {simulator.port}
    timeout: 500ms
    interval: 200ms
    devices:
      - unit_id: 1
        name: press-01
        tags:
          - {{equipment: PRESS-01, parameter: parts_total, register: holding, address: 0, data_type: uint32,
              byte_order: CDAB}}
          - {{equipment: PRESS-01, parameter: temperature, register: input, address: 0, data_type: float32}}
          - {{equipment: PRESS-01, parameter: pressure, register: holding, address: 900, data_type: uint16}}
""", "--for", "1500ms")
    finally:
        await simulator.stop()
    rows = _rows(out)
    seen = {(r[0], r[1]) for r in rows}
    assert seen == {("PRESS-01", "parts_total"), ("PRESS-01", "temperature")}, out + err
    assert len(rows) >= 4, "--for keeps reading: several polls of each tag"
    assert code == 1, err
    failed = [line for line in err.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1, err
    assert "PRESS-01.pressure" in failed[0] and "illegal_data_address" in failed[0], failed


async def test_mqtt_prints_a_published_value_and_names_the_silent_topic(tmp_path: Path) -> None:
    base = f"test-read/{uuid.uuid4().hex}"
    daemon_id = f"test-read-daemon-{uuid.uuid4().hex[:8]}"  # the daemon's persistent session, not test mode's
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-read-{uuid.uuid4().hex[:8]}")
    publisher.connect("127.0.0.1", 1883)
    publisher.loop_start()
    try:
        publisher.publish(f"{base}/temperature", "42.5", qos=1, retain=True).wait_for_publish(5)
        code, out, err = await _read(tmp_path, f"""
  - type: mqtt
    name: press-mqtt
    host: 127.0.0.1
    port: 1883
    client_id: {daemon_id}
    clean_start: false
    shared_group: daemons
    tags:
      - {{topic: {base}/temperature, equipment: PRESS-01, parameter: temperature, unit: degC}}
      - {{topic: {base}/silent, equipment: PRESS-02, parameter: temperature, unit: degC}}
""", "--once", "--for", "3s")
    finally:
        publisher.publish(f"{base}/temperature", b"", qos=1, retain=True).wait_for_publish(5)  # clear it
        publisher.loop_stop()
        publisher.disconnect()
    rows = _rows(out)
    assert [r[:4] for r in rows] == [["PRESS-01", "temperature", "42.5", "degC"]], out + err
    assert code == 1, err
    failed = [line for line in err.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1, err
    assert "PRESS-02.temperature" in failed[0] and f"{base}/silent" in failed[0], failed
    assert "no reading within" in failed[0], failed
    # test mode left no session under the daemon's client id (it would have taken the daemon's queued messages)
    daemon = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=daemon_id, protocol=mqtt.MQTTv5)
    present: list[bool] = []
    daemon.on_connect = lambda client, userdata, flags, reason, properties: present.append(flags.session_present)
    daemon.connect("127.0.0.1", 1883, clean_start=False)
    daemon.loop_start()
    try:
        await async_wait_until(lambda: _resolved(present), 10, "CONNACK")
    finally:
        daemon.loop_stop()
        daemon.disconnect()
    assert present == [False]


async def _resolved(values: list[bool]) -> bool:
    return bool(values)


async def test_an_invalid_configuration_exits_2_with_the_problems(tmp_path: Path) -> None:
    code, out, err = await _read(tmp_path, """
  - type: modbus
    name: broken
    host: 127.0.0.1
    devices:
      - tags:
          - {equipment: PRESS-09, parameter: x, register: holding, address: 0, data_type: uint16}
""")
    assert code == 2
    assert "PRESS-09" in err and "nothing was started" in err
    assert out == ""
