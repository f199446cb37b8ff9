"""Modbus RTU against the real Modbus simulator: on a serial line (one end of a pseudo-terminal pair; the
connector opens the other with pyserial through pymodbus) and as RTU frames over TCP (a transparent gateway).

Several units on one line taking turns with one request at a time on the bus, a dead unit that must not starve
the others, CRC errors injected on the wire, a gateway's exception for a unit behind it, and the configuration
checks of the serial transports.  Decoding parity with Modbus TCP (every type in every order) is in
test_modbus_decoding.py, parametrized over the three transports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from connectors.modbus import ModbusConfig
from connectors.modbus.connector import ModbusConnector
from ingestor.config import load_config
from ingestor.contract import ConnectionLost
from ingestor.daemon.supervisor import ConnectorState
from simulators.machine import default_machines
from simulators.modbus import ModbusSimulator

from .conftest import REPO, Database
from .harness_modbus import SERIAL_8N2, link_settings
from .helpers import build_connector, free_port, http_get, wait_until
from .test_conformance import wait_for
from .test_modbus import PLANT, Running, _count_rows, machine_tags, metric, problems


def rtu_config(simulator: ModbusSimulator, devices: list[dict[str, Any]], **link: Any) -> ModbusConfig:
    return ModbusConfig.model_validate({
        "type": "modbus", "name": link.pop("name", f"rtu-{simulator.transport}-{free_port()}"),
        **link_settings(simulator), "timeout": "500ms", "interval": "100ms",
        "reconnect": {"initial": "200ms", "max": "1s"}, "devices": devices, **link})


def press(unit: int, **device: Any) -> dict[str, Any]:
    return {"unit_id": unit, "name": f"press-0{unit}", "tags": machine_tags(f"PRESS-0{unit}"), **device}


# --- configuration -------------------------------------------------------------------------------------------

def test_rtu_and_rtu_over_tcp_load_without_opening_anything(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(PLANT + """
  - type: modbus
    name: meters
    transport: rtu
    serial: {port: /dev/ttyNOSUCHPORT, baudrate: 9600, parity: E, stopbits: 1, inter_frame_gap: 5ms}
    unit_backoff: {after: 2, initial: 10s, max: 2m}
    devices:
      - {unit_id: 3, timeout: 300ms, tags: [{equipment: M1, parameter: t, register: input, address: 0, data_type: int16}]}
  - type: modbus
    name: gateway
    transport: rtu-over-tcp
    host: 10.0.0.9
    port: 4001
    devices:
      - {unit_id: 247, tags: [{equipment: M1, parameter: u, register: coil, address: 0}]}
""")
    config = load_config(path, environ={})      # a port that does not exist: check-config never opens it
    meters, gateway = config.connectors
    assert isinstance(meters, ModbusConfig) and isinstance(gateway, ModbusConfig)
    assert meters.serial is not None and meters.serial.frame_gap == 0.005
    assert meters.serial.bits_per_character == 11 and meters.devices[0].timeout == 0.3
    assert gateway.endpoint == "10.0.0.9:4001" and meters.endpoint == "/dev/ttyNOSUCHPORT"


def test_serial_mistakes_are_refused_at_load(tmp_path: Path) -> None:
    found = problems(tmp_path, """
  - type: modbus
    name: no-serial
    transport: rtu
    devices: [{unit_id: 1, tags: [{equipment: M1, parameter: a, register: coil, address: 0}]}]
  - type: modbus
    name: bad-serial
    transport: rtu
    serial: {port: /dev/ttyUSB0, parity: X, stopbits: 3}
    devices: [{unit_id: 0, tags: [{equipment: M1, parameter: b, register: coil, address: 0}]}]
  - type: modbus
    name: gateway
    transport: rtu-over-tcp
    serial: {port: /dev/ttyUSB0}
    devices: [{unit_id: 1, tags: [{equipment: M1, parameter: c, register: coil, address: 0}]}]
  - type: modbus
    name: backoff
    host: 10.0.0.9
    unit_backoff: {initial: 1m, max: 10s}
    devices: [{unit_id: 1, tags: [{equipment: M1, parameter: d, register: coil, address: 0}]}]
""")
    assert any(p.startswith("connectors[0]: transport rtu needs serial") for p in found), found
    assert any(p.startswith("connectors[1].serial.parity:") for p in found), found
    assert any(p.startswith("connectors[1].serial.stopbits:") for p in found), found
    assert any("connectors[2]: transport rtu-over-tcp needs host" in p for p in found), found
    assert any(p.startswith("connectors[3].unit_backoff: max must be at least initial") for p in found), found


def test_a_broadcast_unit_id_is_refused_on_a_serial_line(tmp_path: Path) -> None:
    found = problems(tmp_path, """
  - type: modbus
    name: line
    transport: rtu
    serial: {port: /dev/ttyUSB0}
    devices: [{unit_id: 0, tags: [{equipment: M1, parameter: a, register: coil, address: 0}]}]
""")
    assert found == ["connectors[0]: devices[0]: unit_id 0: an RTU unit id is 1-247 (0 is the broadcast address "
                     "nobody answers, 248-255 are reserved)"], found


def test_the_rtu_example_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    config = load_config("config/modbus-rtu.yaml", environ={})
    transports = {c.transport for c in config.connectors if isinstance(c, ModbusConfig)}
    assert transports == {"rtu", "rtu-over-tcp"}


# --- on a serial line ----------------------------------------------------------------------------------------

async def test_several_units_on_one_line_take_turns_with_one_request_on_the_bus_at_a_time() -> None:
    """Three units, two poll groups each, on one paced 19200-baud line: every unit's values arrive and match
    the model, and the simulator never saw a request begin while an answer was on the wire (a collision) or
    less than 3.5 characters after one (the inter-frame gap)."""
    simulator = ModbusSimulator(default_machines(3), transport="rtu", pace=True)
    devices = [press(unit) for unit in (1, 2, 3)]
    for device in devices:
        device["tags"][5]["group"] = "fast"   # temperature on its own interval: more polls competing for the bus
    config = rtu_config(simulator, devices, interval="300ms", poll_groups={"fast": "150ms"})
    async with simulator, Running(config) as run:
        await wait_for(lambda: all(len(run.values("current", f"PRESS-0{u}")) >= 3 for u in (1, 2, 3)), 20,
                       "three polls of every unit")
        machines = {unit: simulator.machine_units[unit].values() for unit in (1, 2, 3)}
        stats = simulator.line_stats
    for unit in (1, 2, 3):
        assert run.values("state", f"PRESS-0{unit}")[-1] == machines[unit]["state"]
        assert run.values("parts_total", f"PRESS-0{unit}")[-1] == pytest.approx(machines[unit]["parts_total"], abs=2)
        assert simulator.request_count(unit=unit) >= 9
    assert stats.frames >= 27
    assert (stats.collisions, stats.short_gaps, stats.crc_errors_received, stats.garbage_bytes) == (0, 0, 0, 0)


@pytest.mark.parametrize("fault", ["dead", "slow"])
async def test_a_dead_or_slow_unit_is_skipped_for_a_back_off_while_the_others_keep_their_interval(fault: str) -> None:
    """A unit that never answers, or answers only after 350 ms (later than its own 200 ms timeout: its late
    answers then arrive while the next unit is being asked, and must be ignored, not taken for that answer)."""
    simulator = ModbusSimulator(default_machines(3), transport="rtu", silent_units=[3] if fault == "dead" else [],
                                slow_units={3: 0.35} if fault == "slow" else {})
    config = rtu_config(simulator, [press(1), press(2), press(3, timeout="200ms")], name=f"rtu-{fault}-unit",
                        unit_backoff={"after": 2, "initial": "1s", "max": "2s"})
    async with simulator, Running(config) as run:
        await wait_for(lambda: run.status("press-03")["backing_off_for"] is not None, 15, "unit 3 backing off")
        assert metric("ingestor_modbus_device_backing_off", connector=config.name, device="press-03") == 1
        asked = simulator.request_count(unit=3)
        mark = len(run.sink.readings)
        await wait_for(lambda: all(len(run.values("current", f"PRESS-0{u}", since=mark)) >= 15 for u in (1, 2)), 20,
                       "fifteen more polls of the live units")
        skipped = run.status("press-03")["skipped_polls"]
        probes = simulator.request_count(unit=3) - asked
        # while it backs off (1 s, then 2 s) the dead unit gets a probe now and then, not a request per poll
        assert skipped >= 5 and probes <= 3, (skipped, probes)
        assert run.supervisor.state == ConnectorState.CONNECTED
        assert run.status("press-01")["up"] and not run.status("press-03")["up"]
        simulator.silent_units.discard(3)             # it comes back: the next probe finds it
        simulator.slow_units.pop(3, None)
        await wait_for(lambda: len(run.values("current", "PRESS-03")) >= 2, 10, "unit 3 read again")
        assert run.status("press-03")["backing_off_for"] is None
        assert metric("ingestor_modbus_device_backing_off", connector=config.name, device="press-03") == 0
    assert metric("ingestor_modbus_polls_skipped_total", connector=config.name, device="press-03") >= 5
    assert metric("ingestor_connector_connects_total", connector=config.name) == 1
    for unit in (1, 2):   # no late answer of unit 3 was ever taken for theirs
        assert set(run.values("state", f"PRESS-0{unit}")) <= {1.0, 2.0, 3.0}
        assert not run.status(f"press-0{unit}")["errors"], run.status(f"press-0{unit}")["errors"]


async def test_a_lone_unit_that_stops_answering_is_not_backed_off_since_nobody_else_needs_the_bus() -> None:
    simulator = ModbusSimulator(default_machines(1), transport="rtu", silent_units=[1])
    config = rtu_config(simulator, [press(1)], timeout="100ms", unit_backoff={"after": 1, "initial": "1m"})
    async with simulator, Running(config) as run:
        await wait_for(lambda: simulator.request_count(unit=1) >= 4, 10, "four unanswered polls")
        status = run.status("press-01")
        assert status["backing_off_for"] is None and status["skipped_polls"] == 0
        # the first unanswered read ends the poll: its other read (3 of the 8 tags) is not asked but counted
        polls = status["errors"]["timeout"] // 8
        assert polls >= 3 and simulator.request_count(unit=1) <= polls + 1, (polls, simulator.requests)
        # a serial line is not closed for silence (there is nothing to reconnect)
        assert run.supervisor.state == ConnectorState.CONNECTED


async def test_crc_errors_on_the_wire_are_counted_and_survived() -> None:
    simulator = ModbusSimulator(default_machines(1), transport="rtu", crc_error_every=5)
    config = rtu_config(simulator, [press(1)], name="rtu-crc")
    async with simulator, Running(config) as run:
        await wait_for(lambda: simulator.line_stats.crc_errors_sent >= 3, 15, "three corrupted answers")
        mark = len(run.sink.readings)
        await wait_for(lambda: len(run.values("current", since=mark)) >= 3, 10, "readings after them")
        status = run.status("press-01")
        assert run.supervisor.state == ConnectorState.CONNECTED
    assert status["errors"].get("crc_error", 0) >= 3      # tags of the reads whose answer was corrupted
    # failed at once, not after a timeout, and never decoded: every value that arrived is the model's
    assert "timeout" not in status["errors"], status["errors"]
    assert metric("ingestor_modbus_errors_total", connector="rtu-crc", device="press-01", reason="crc_error") >= 3
    assert metric("ingestor_connector_connects_total", connector="rtu-crc") == 1
    assert set(run.values("state")) <= {1.0, 2.0, 3.0}


async def test_a_serial_port_that_does_not_exist_is_a_lost_link_for_the_supervisor(tmp_path: Path) -> None:
    config = ModbusConfig.model_validate({
        "type": "modbus", "name": "no-port", "transport": "rtu",
        "serial": {"port": str(tmp_path / "ttyGONE"), **SERIAL_8N2}, "devices": [press(1)]})
    connector = build_connector(config)
    assert isinstance(connector, ModbusConnector)
    with pytest.raises(ConnectionLost, match="ttyGONE"):
        await connector.connect()
    await connector.close()


# --- RTU over TCP --------------------------------------------------------------------------------------------

async def test_rtu_over_tcp_reads_units_behind_a_gateway_and_its_exceptions_stay_with_their_unit() -> None:
    simulator = ModbusSimulator(default_machines(2), port=free_port(), transport="rtu-over-tcp", crc_error_every=7)
    config = rtu_config(simulator, [press(1), press(2), {"unit_id": 9, "name": "absent", "tags": [
        {"equipment": "M9", "parameter": "x", "register": "holding", "address": 0, "data_type": "uint16"}]}])
    async with simulator, Running(config) as run:
        await wait_for(lambda: all(len(run.values("current", f"PRESS-0{u}")) >= 5 for u in (1, 2)), 15,
                       "five polls of both units")
        await wait_for(lambda: run.status("press-01")["errors"].get("crc_error", 0)
                       + run.status("press-02")["errors"].get("crc_error", 0) >= 1, 10, "a CRC error")
        machine = simulator.machine_units[2].values()
        absent = run.status("absent")
        assert run.supervisor.state == ConnectorState.CONNECTED
    assert run.values("state", "PRESS-02")[-1] == machine["state"]
    assert run.values("temperature", "PRESS-02")[-1] == pytest.approx(machine["temperature"], abs=0.5)
    # (the gateway's exception answers get corrupted too, now and then)
    assert "gateway_no_response" in absent["errors"] and not absent["up"]
    assert set(absent["errors"]) <= {"gateway_no_response", "crc_error"}, absent["errors"]


# --- the example configuration, end to end -------------------------------------------------------------------

def test_the_rtu_example_ingests_both_simulators_end_to_end(database: Database, tmp_path: Path) -> None:
    """``python -m simulators.modbus --transport rtu …`` and ``--transport rtu-over-tcp …`` as the example's
    header says, and ``ingestor run -c config/modbus-rtu.yaml``; only the serial link, the ports and the spool
    are moved so that tests and a running demo do not collide."""
    link, gateway_port, http_port = tmp_path / "line", free_port(), free_port()
    text = (REPO / "config" / "modbus-rtu.yaml").read_text()
    spool = "spool_dir: /var/lib/ingestor/modbus-rtu-demo-01/spool"
    for expected in ("port: /tmp/ingestor-modbus-rtu ", "port: 5021", "listen: 127.0.0.1:9111", spool):
        assert expected in text
    config = tmp_path / "modbus-rtu.yaml"
    config.write_text(text.replace("port: /tmp/ingestor-modbus-rtu ", f"port: {link} ")
                      .replace("port: 5021", f"port: {gateway_port}")
                      .replace("listen: 127.0.0.1:9111", f"listen: 127.0.0.1:{http_port}")
                      .replace(spool, f"spool_dir: {tmp_path / 'spool'}"))
    logs = {name: tmp_path / f"{name}.log" for name in ("line", "gateway", "daemon")}
    commands = {
        "line": [sys.executable, "-m", "simulators.modbus", "--transport", "rtu", "--serial-link", str(link)],
        "gateway": [sys.executable, "-m", "simulators.modbus", "--transport", "rtu-over-tcp",
                    "--port", str(gateway_port)],
        "daemon": [sys.executable, "-m", "ingestor", "run", "-c", str(config)]}
    env = {**os.environ, "INGESTOR_DATABASE_URL": database.dsn}
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name in ("line", "gateway", "daemon"):
            with logs[name].open("w") as out:
                processes[name] = subprocess.Popen(commands[name], cwd=REPO, env=env, stdout=out,
                                                   stderr=subprocess.STDOUT)

        def every_tag_written() -> bool:
            assert processes["daemon"].poll() is None, logs["daemon"].read_text()[-3000:]
            return _count_rows(database.dsn) == 25

        wait_until(every_tag_written, 30, "every tag of the RTU example in fact_sensor_event")
        status, body = http_get(f"http://127.0.0.1:{http_port}/readyz")
        assert status == 200
        assert '"press-line-rs485": {"state": "connected"' in body and '"press-3-gateway": {"state": "connected"' in body
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
    assert processes["daemon"].returncode == 0, logs["daemon"].read_text()[-3000:]
    line_log = logs["line"].read_text()
    assert "unit 1 fc 3:" in line_log and "0 collisions, 0 short gaps" in line_log, line_log[-2000:]
