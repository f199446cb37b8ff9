"""The Modbus connector against the real Modbus simulator: configuration checks, read coalescing and its
fallback, errors that stay with their tag or device, report by exception, restarts, and the example
configuration ingesting the simulator end to end.  The golden decoding table is in test_modbus_decoding.py."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import structlog
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

import connectors.modbus.connector as modbus_connector
from connectors.modbus import ModbusConfig
from connectors.modbus.connector import ModbusConnector
from connectors.modbus.planning import ReadRequest, TagSpan, plan_reads, split
from ingestor.config import ConfigError, load_config
from ingestor.daemon.supervisor import ConnectorState, ConnectorSupervisor
from simulators.machine import Machine, default_machines
from simulators.modbus import ModbusSimulator, encode
from simulators.trace import load_trace
from tests.helpers import build_connector

from .conftest import REPO, Database
from .helpers import free_port, http_get, wait_until
from .test_conformance import Collector, wait_for

SCRATCH = 200


# --- configuration -------------------------------------------------------------------------------------------

PLANT = """
plant:
  sites:
    - code: S1
      name: Site
      areas:
        - code: A1
          name: Area
          work_centers:
            - code: W1
              name: Line
              equipment:
                - {code: M1, name: Machine 1}
connectors:
"""


def problems(tmp_path: Path, connector: str) -> list[str]:
    path = tmp_path / "config.yaml"
    path.write_text(PLANT + connector)
    with pytest.raises(ConfigError) as error:
        load_config(path, environ={})
    return [f"{p.path}: {p.message}" for p in error.value.problems]


@pytest.mark.parametrize(("tag", "message"), [
    ("{equipment: M1, parameter: t, register: coil, address: 0, data_type: float32}",
     "a coil is a single bit: leave out data_type"),
    ("{equipment: M1, parameter: t, register: holding, address: 0}",
     "a holding register tag needs a data_type"),
    ("{equipment: M1, parameter: t, register: holding, address: 0, data_type: string}",
     "length (registers) is required for a string"),
    ("{equipment: M1, parameter: t, register: input, address: 0, data_type: bit}",
     "bit (0-15) is required for data_type bit"),
    ("{equipment: M1, parameter: t, register: input, address: 65535, data_type: float32}",
     "address 65535 + 2 registers runs past 65535"),
    ("{equipment: M1, parameter: t, register: input, address: 0, data_type: float32, byte_order: ADCB}",
     "byte_order: input should be 'ABCD', 'CDAB', 'BADC' or 'DCBA'"),
    ("{equipment: M1, parameter: t, register: input, address: 0, data_type: uint16, values: {A: 1}}",
     "values (a text → number map) only applies to string tags"),
    ("{equipment: M1, parameter: t, register: discrete_input, address: 0, scale: 2}",
     "scale and offset do not apply"),
    ("{equipment: M1, parameter: t, register: input, address: 0, data_type: uint16, group: fast}",
     "unknown poll group 'fast'"),
    ("{equipment: M2, parameter: t, register: input, address: 0, data_type: uint16}",
     "unknown equipment 'M2'"),
    ("{equipment: M1, parameter: t, register: input, address: 0, data_type: uint16, max_age: 10s}",
     "max_age is the heartbeat of report by exception and needs a deadband"),
])
def test_tag_mistakes_are_refused_at_load(tmp_path: Path, tag: str, message: str) -> None:
    found = problems(tmp_path, f"""
  - type: modbus
    name: line
    host: 127.0.0.1
    devices:
      - unit_id: 1
        tags:
          - {tag}
""")
    assert any(message in p for p in found), found


def test_device_and_link_mistakes_are_refused_at_load(tmp_path: Path) -> None:
    found = problems(tmp_path, """
  - type: modbus
    name: line
    devices:
      - {unit_id: 1, max_registers_per_request: 200, tags: [{equipment: M1, parameter: a, register: coil, address: 0}]}
  - type: modbus
    name: gateway
    host: 10.0.0.5
    devices:
      - {unit_id: 1, tags: [{equipment: M1, parameter: b, register: coil, address: 0}]}
      - {unit_id: 1, tags: [{equipment: M1, parameter: c, register: coil, address: 1}]}
""")
    assert any("max_registers_per_request: input should be less than or equal to 125" in p for p in found), found
    assert "connectors[1]: devices[1]: unit_id 1 is already used by devices[0]" in found, found


def test_the_example_configuration_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    config = load_config("config/modbus-simulator.yaml", environ={})
    modbus = config.connectors[0]
    assert isinstance(modbus, ModbusConfig)
    assert [d.unit_id for d in modbus.devices] == [1, 2, 3]
    assert config.http.listen == "127.0.0.1:9110"


# --- the planner ---------------------------------------------------------------------------------------------

def spans(*items: tuple[str, int, int]) -> list[TagSpan]:
    return [TagSpan(index, table, address, count) for index, (table, address, count) in enumerate(items)]


def test_adjacent_and_near_tags_of_one_table_merge_within_the_gap_and_size_limits() -> None:
    tags = spans(("holding", 0, 2), ("holding", 2, 2), ("holding", 4, 1), ("holding", 10, 2),
                 ("holding", 40, 1), ("input", 0, 2), ("coil", 0, 1), ("coil", 100, 1))
    plan = plan_reads(tags, max_registers=125, max_bits=2000, max_gap=5, max_gap_bits=256)
    assert [(r.table, r.address, r.count) for r in plan] == [
        ("coil", 0, 101), ("holding", 0, 12), ("holding", 40, 1), ("input", 0, 2)]
    capped = plan_reads(tags, max_registers=8, max_bits=2000, max_gap=50, max_gap_bits=0)
    assert [(r.table, r.address, r.count) for r in capped] == [
        ("coil", 0, 1), ("coil", 100, 1), ("holding", 0, 5), ("holding", 10, 2), ("holding", 40, 1), ("input", 0, 2)]


def test_overlapping_tags_share_a_read_and_a_split_keeps_every_tag() -> None:
    tags = spans(*[("holding", 3, 1)] * 3, ("holding", 4, 4), ("holding", 8, 2))
    (read,) = plan_reads(tags, max_registers=125, max_bits=2000, max_gap=0, max_gap_bits=0)
    assert (read.address, read.count) == (3, 7)
    halves = split(read)
    assert halves is not None
    assert sorted(s.tag for h in halves for s in h.tags) == [0, 1, 2, 3, 4]
    assert all(h.count < read.count for h in halves)
    assert split(ReadRequest("holding", 3, 1, (tags[0],))) is None


# --- against the simulator -----------------------------------------------------------------------------------

def machine_tags(equipment: str = "PRESS-01", **extra: Any) -> list[dict[str, Any]]:
    return [
        {"equipment": equipment, "parameter": "parts_total", "register": "holding", "address": 0,
         "data_type": "uint32", "byte_order": "CDAB", **extra},
        {"equipment": equipment, "parameter": "parts_good", "register": "holding", "address": 2,
         "data_type": "uint32", "byte_order": "CDAB", **extra},
        {"equipment": equipment, "parameter": "state", "register": "holding", "address": 4, "data_type": "uint16", **extra},
        {"equipment": equipment, "parameter": "reason", "register": "holding", "address": 5, "data_type": "uint16", **extra},
        {"equipment": equipment, "parameter": "product", "register": "holding", "address": 6, "data_type": "uint16", **extra},
        {"equipment": equipment, "parameter": "temperature", "register": "input", "address": 0,
         "data_type": "float32", **extra},
        {"equipment": equipment, "parameter": "vibration", "register": "input", "address": 2, "data_type": "float32",
         "byte_order": "BADC", **extra},
        {"equipment": equipment, "parameter": "current", "register": "input", "address": 4, "data_type": "float64",
         "byte_order": "CDAB", **extra},
    ]


def modbus_config(port: int, devices: list[dict[str, Any]], **link: Any) -> ModbusConfig:
    return ModbusConfig.model_validate({
        "type": "modbus", "name": link.pop("name", f"modbus-{port}"), "host": "127.0.0.1", "port": port,
        "timeout": "500ms", "interval": "100ms", "reconnect": {"initial": "200ms", "max": "1s"},
        "devices": devices, **link})


@pytest.fixture
async def simulator() -> AsyncIterator[ModbusSimulator]:
    simulator = ModbusSimulator(default_machines(2), port=free_port(), scratch_unit=SCRATCH, silent_units=[9])
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


class Running:
    """A connector under its supervisor, delivering into a collector."""

    def __init__(self, config: ModbusConfig) -> None:
        self.config = config
        self.connector = build_connector(config)
        assert isinstance(self.connector, ModbusConnector)
        self.sink = Collector()
        self.supervisor = ConnectorSupervisor(self.connector, self.sink, config.reconnect)
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Running:
        self.task = asyncio.create_task(self.supervisor.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

    def values(self, parameter: str, equipment: str = "PRESS-01", since: int = 0) -> list[float]:
        return [r.value for r in self.sink.readings[since:] if r.parameter == parameter and r.equipment == equipment]

    def status(self, device: str) -> dict[str, Any]:
        return self.connector.status()["devices"][device]  # type: ignore[no-any-return]


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_readings_match_the_machine_model_and_each_table_is_read_in_one_request_per_poll(
        simulator: ModbusSimulator) -> None:
    config = modbus_config(simulator.port, [{"unit_id": 1, "name": "press-01", "tags": machine_tags()}])
    async with Running(config) as run:
        await wait_for(lambda: len(run.values("current")) >= 5, 10, "five polls")
        simulator.reset_counts()
        await wait_for(lambda: simulator.request_count(3) >= 5 and simulator.request_count(4) >= 5, 10,
                       "five more polls")
        polls = run.status("press-01")["reads_per_poll"]
        machine = simulator.machine_units[1].values()
    assert polls == {"default": 2}
    log = list(simulator.request_log)
    assert {(unit, function, address, count) for unit, function, address, count in log} == {
        (1, 3, 0, 7), (1, 4, 0, 8)}, "holding 0-6 and input 0-7 should each be one merged read"
    assert abs(simulator.request_count(3) - simulator.request_count(4)) <= 1
    assert run.values("state")[-1] == machine["state"]
    assert run.values("parts_total")[-1] == pytest.approx(machine["parts_total"], abs=1)
    assert run.values("temperature")[-1] == pytest.approx(machine["temperature"], abs=0.5)
    assert run.values("vibration")[-1] == pytest.approx(machine["vibration"], abs=0.5)
    assert run.values("current")[-1] == pytest.approx(machine["current"], abs=5)


async def test_a_device_limiting_request_size_gets_smaller_reads_and_the_split_is_remembered() -> None:
    simulator = ModbusSimulator(default_machines(1), port=free_port(), max_registers=4)
    tags = [*machine_tags(),
            {"equipment": "PRESS-01", "parameter": "code", "register": "holding", "address": 8, "data_type": "string",
             "length": 4, "values": {"PRESS-01": 1}}]
    config = modbus_config(simulator.port, [{"unit_id": 1, "name": "press-01", "tags": tags}])
    async with simulator, Running(config) as run:
        await wait_for(lambda: {"parts_total", "product", "code", "current"} <= {r.parameter for r in run.sink.readings},
                       10, "every tag, read in smaller parts")
        refused = sum(simulator.refused.values())
        simulator.request_log.clear()
        first = len(run.values("current"))
        await wait_for(lambda: len(run.values("current")) >= first + 5, 10, "five more polls")
        assert sum(simulator.refused.values()) == refused, "the device was asked the refused read again"
        assert max(count for _, _, _, count in simulator.request_log) <= 4
        status = run.status("press-01")
    assert refused >= 2                     # the 12-register holding read and the 8-register input read
    assert status["split_reads"] >= 2 and not status["failing_tags"]
    assert run.values("code")[-1] == 1.0
    assert metric("ingestor_modbus_read_splits_total", connector=config.name, device="press-01") >= 2


async def test_a_merged_read_across_unmapped_addresses_falls_back_to_reads_around_the_hole(
        simulator: ModbusSimulator) -> None:
    memory = simulator.units[SCRATCH]
    memory.write("holding", 990, [11])
    memory.write("holding", 1100, [22])
    tags = [{"equipment": "M1", "parameter": "before_hole", "register": "holding", "address": 990, "data_type": "uint16"},
            {"equipment": "M1", "parameter": "after_hole", "register": "holding", "address": 1100, "data_type": "uint16"}]
    config = modbus_config(simulator.port, [{"unit_id": SCRATCH, "name": "scratch", "max_gap": 125, "tags": tags}])
    async with Running(config) as run:
        await wait_for(lambda: len(run.values("after_hole", "M1")) >= 3, 10, "both tags")
        status = run.status("scratch")
    assert run.values("before_hole", "M1")[-1] == 11 and run.values("after_hole", "M1")[-1] == 22
    assert status["split_reads"] == 1 and status["reads_per_poll"] == {"default": 2}
    assert status["errors"] == {}


async def test_a_bad_tag_is_counted_and_logged_once_while_the_others_keep_flowing(
        simulator: ModbusSimulator, monkeypatch: pytest.MonkeyPatch) -> None:
    logged: list[tuple[str, str, dict[str, Any]]] = []

    class Recorder:
        def __getattr__(self, level: str) -> Callable[..., None]:
            return lambda event, **fields: logged.append((level, event, fields))

    monkeypatch.setattr(modbus_connector, "log", Recorder())
    tags = [*machine_tags(),
            {"equipment": "PRESS-01", "parameter": "wrong_address", "register": "holding", "address": 50,
             "data_type": "uint16"}]
    config = modbus_config(simulator.port, [{"unit_id": 1, "name": "press-01", "tags": tags}], name="bad-tag")
    async with Running(config) as run:
        await wait_for(lambda: len(run.values("current")) >= 10, 10, "ten polls of the good tags")
        status = run.status("press-01")
        assert run.supervisor.state == ConnectorState.CONNECTED
    assert not run.values("wrong_address")
    assert {p for _, p in run.sink.seen()} == {t["parameter"] for t in machine_tags()}
    failing = status["failing_tags"]["PRESS-01.wrong_address (holding 50)"]
    assert failing["reason"] == "illegal_data_address" and failing["failed_reads"] >= 9
    assert metric("ingestor_modbus_errors_total", connector="bad-tag", device="press-01",
                  reason="illegal_data_address") >= 9
    warnings = [(event, fields) for level, event, fields in logged if level == "warning"]
    assert len(warnings) == 1, warnings
    assert warnings[0][1]["tag"] == "PRESS-01.wrong_address (holding 50)"


async def test_a_short_answer_splits_the_read_so_every_readable_tag_keeps_flowing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    logged: list[tuple[str, str, dict[str, Any]]] = []

    class Recorder:
        def __getattr__(self, level: str) -> Callable[..., None]:
            return lambda event, **fields: logged.append((level, event, fields))

    monkeypatch.setattr(modbus_connector, "log", Recorder())
    # a gateway that answers a read reaching past address 1003 with only the registers before it, no exception
    simulator = ModbusSimulator(default_machines(1), port=free_port(), scratch_unit=SCRATCH,
                                short_answers_from={SCRATCH: 503})
    tags = [{"equipment": "M1", "parameter": f"r{address}", "register": "holding", "address": address,
             "data_type": "uint16"} for address in (500, 501, 502, 503)]
    config = modbus_config(simulator.port, [{"unit_id": SCRATCH, "name": "scratch", "tags": tags}])
    async with simulator:
        simulator.units[SCRATCH].write("holding", 500, [10, 11, 12, 13])
        async with Running(config) as run:
            await wait_for(lambda: all(len(run.values(f"r{a}", "M1")) >= 3 for a in (500, 501, 502)), 10,
                           "the three tags the gateway answers for")
            status = run.status("scratch")
    assert [run.values(f"r{a}", "M1")[-1] for a in (500, 501, 502)] == [10, 11, 12]
    assert not run.values("r503", "M1")
    assert status["split_reads"] >= 1
    assert set(status["failing_tags"]) == {"M1.r503 (holding 503)"}
    # the one unreadable tag is logged once, not on every poll, and nothing claims the device came back
    failures = [(event, fields) for level, event, fields in logged if level in ("warning", "error")]
    assert len(failures) == 1 and failures[0][1]["tag"] == "M1.r503 (holding 503)", failures
    assert not [event for _, event, _ in logged if "answering again" in event]


async def test_a_silent_device_times_out_without_stopping_the_other_device_on_the_link(
        simulator: ModbusSimulator) -> None:
    config = modbus_config(simulator.port, [
        {"unit_id": 1, "name": "press-01", "tags": machine_tags()},
        {"unit_id": 9, "name": "silent", "tags": [
            {"equipment": "M9", "parameter": "x", "register": "holding", "address": 0, "data_type": "uint16"}]},
    ], name="silent-link", timeout="300ms")
    async with Running(config) as run:
        await wait_for(lambda: run.status("silent")["errors"].get("timeout", 0) >= 3, 15, "three timeouts")
        mark = len(run.sink.readings)
        await wait_for(lambda: len(run.values("current", since=mark)) >= 3, 10, "press-01 still flowing")
        assert run.supervisor.state == ConnectorState.CONNECTED
        silent, press = run.status("silent"), run.status("press-01")
        assert metric("ingestor_modbus_device_up", connector="silent-link", device="silent") == 0
        assert metric("ingestor_modbus_device_up", connector="silent-link", device="press-01") == 1
    assert not silent["up"] and silent["last_success"] is None
    assert press["up"] and press["last_success"] is not None
    assert metric("ingestor_modbus_errors_total", connector="silent-link", device="silent", reason="timeout") >= 3
    assert metric("ingestor_connector_connects_total", connector="silent-link") == 1


async def test_a_device_that_accepts_then_drops_is_retried_with_a_growing_backoff_and_still_failing() -> None:
    """A Modbus device at its connection limit accepts the TCP connection and closes it at once.  Each of
    those connects succeeds, but the link is not healthy: the back-off must keep growing (it used to restart
    at ``initial`` on every connect: 10 connects in 2 s), the failures must keep counting, and a long run of
    them must be reported as "still failing" at warning level, never as "recovered"."""
    accepted = 0

    async def at_its_limit(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        writer.close()

    peer = await asyncio.start_server(at_its_limit, "127.0.0.1", 0)
    port = peer.sockets[0].getsockname()[1]
    config = modbus_config(port, [{"unit_id": 1, "name": "press-01", "tags": machine_tags()}], name="at-limit",
                           reconnect={"initial": "100ms", "max": "800ms", "jitter": 0, "healthy_after": "5s"})
    supervisor = ConnectorSupervisor(build_connector(config), Collector(), config.reconnect, still_every=1.0)
    structlog.reset_defaults()
    with capture_logs() as logs:
        task = asyncio.create_task(supervisor.run())
        try:
            await wait_for(lambda: supervisor.failures >= 6, 20, "six failed links")
            await wait_for(lambda: any(e["event"] == "connector still failing" for e in logs), 10,
                           "a still-failing warning")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            peer.close()
    failed = [e for e in logs if e["event"] in ("connector failed; reconnecting", "connector still failing")]
    assert [e["retry_in_s"] for e in failed[:6]] == [0.1, 0.2, 0.4, 0.8, 0.8, 0.8]
    assert {e["log_level"] for e in failed[1:]} <= {"debug", "warning"} and failed[0]["log_level"] == "error"
    assert [e["attempt"] for e in failed] == list(range(1, len(failed) + 1))
    still = next(e for e in failed if e["event"] == "connector still failing")
    assert still["log_level"] == "warning" and still["attempt"] >= 2 and "was closed" in still["error"]
    assert not [e for e in logs if e["event"] == "connector recovered"]
    assert accepted == len(failed) or accepted == len(failed) + 1


async def test_a_link_on_which_nothing_answers_is_closed_and_reconnected(simulator: ModbusSimulator) -> None:
    """A half-open connection (cable pulled, device hung) shows as requests that are never answered: after 4
    in a row pymodbus closes the link and the supervisor reconnects with backoff."""
    config = modbus_config(simulator.port, [{"unit_id": 9, "name": "silent", "tags": [
        {"equipment": "M9", "parameter": "x", "register": "holding", "address": 0, "data_type": "uint16"}]}],
        name="dead-link", timeout="200ms")
    async with Running(config) as run:
        await wait_for(lambda: metric("ingestor_connector_connects_total", connector="dead-link") >= 2, 15,
                       "a reconnect")
        assert "ConnectionLost" in (run.supervisor.last_error or "")


async def test_report_by_exception_skips_unchanged_values_but_sends_a_heartbeat(simulator: ModbusSimulator) -> None:
    memory = simulator.units[SCRATCH]
    memory.write("holding", 0, encode(20.0, "float32"))
    tags = [{"equipment": "M1", "parameter": "level", "register": "holding", "address": 0, "data_type": "float32",
             "deadband": 0.5, "max_age": "1s"},
            {"equipment": "M1", "parameter": "every_poll", "register": "holding", "address": 2, "data_type": "uint16"}]
    config = modbus_config(simulator.port, [{"unit_id": SCRATCH, "name": "scratch", "tags": tags}], name="rbe")
    async with Running(config) as run:
        await wait_for(lambda: len(run.values("every_poll", "M1")) >= 25, 15, "25 polls")
        level = run.values("level", "M1")
        assert 2 <= len(level) <= 5, f"{len(level)} readings in 25 polls: first + one heartbeat a second"
        memory.write("holding", 0, encode(20.3, "float32"))          # within the deadband: not sent
        mark = len(run.sink.readings)
        await wait_for(lambda: len(run.values("every_poll", "M1", since=mark)) >= 3, 5, "three polls")
        assert run.values("level", "M1", since=mark) in ([], [pytest.approx(20.3)])  # a heartbeat may fall here
        memory.write("holding", 0, encode(25.0, "float32"))          # outside it: sent at the next poll
        mark = len(run.sink.readings)
        await wait_for(lambda: 25.0 in run.values("level", "M1", since=mark), 2, "the change")
    assert metric("ingestor_modbus_readings_suppressed_total", connector="rbe", device="scratch") >= 15


async def test_restarting_the_device_mid_stream_marks_it_down_and_data_resumes(simulator: ModbusSimulator) -> None:
    config = modbus_config(simulator.port, [{"unit_id": 1, "name": "press-01", "tags": machine_tags()}],
                           name="restart")
    async with Running(config) as run:
        await wait_for(lambda: len(run.values("state")) >= 3, 10, "first readings")
        assert metric("ingestor_modbus_device_up", connector="restart", device="press-01") == 1
        await simulator.stop()
        await wait_for(lambda: run.supervisor.state != ConnectorState.CONNECTED, 10, "the drop noticed")
        assert metric("ingestor_modbus_device_up", connector="restart", device="press-01") == 0
        await asyncio.sleep(0.5)
        mark = len(run.sink.readings)
        await simulator.start()
        await wait_for(lambda: len(run.values("state", since=mark)) >= 3, 10, "readings after the restart")
        # every value is sent afresh after a reconnect
        assert {r.parameter for r in run.sink.readings[mark:]} >= {t["parameter"] for t in machine_tags()}
    assert metric("ingestor_connector_connects_total", connector="restart") >= 2


async def test_the_simulator_replays_a_trace_at_a_speed_factor(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text("timestamp,node,value\n"
                     "2025-06-02T06:00:00Z,PRESS-07.temperature,61.5\n"
                     "2025-06-02T06:00:00Z,PRESS-07.state,3\n"
                     "2025-06-02T06:00:00Z,PRESS-07.reason,2\n"
                     "2025-06-02T06:00:10Z,PRESS-07.temperature,48.25\n"
                     "2025-06-02T06:00:10Z,PRESS-07.state,1\n")
    simulator = ModbusSimulator([Machine("PRESS-07")], port=free_port(), trace=load_trace(trace), speed=20)
    tags = [{"equipment": "PRESS-07", "parameter": "temperature", "register": "input", "address": 0,
             "data_type": "float32"},
            {"equipment": "PRESS-07", "parameter": "state", "register": "holding", "address": 4, "data_type": "uint16"},
            {"equipment": "PRESS-07", "parameter": "reason", "register": "holding", "address": 5, "data_type": "uint16"}]
    config = modbus_config(simulator.port, [{"unit_id": 1, "tags": tags}])
    async with simulator, Running(config) as run:
        await wait_for(lambda: 48.25 in run.values("temperature", "PRESS-07"), 5, "the trace's last temperature")
    temperatures = run.values("temperature", "PRESS-07")
    assert 61.5 in temperatures and temperatures[-1] == 48.25   # 10 s of trace in 0.5 s
    assert 3.0 in run.values("state", "PRESS-07") and 2.0 in run.values("reason", "PRESS-07")


# --- the example configuration, end to end -------------------------------------------------------------------

def _count_rows(dsn: str) -> int:
    async def count() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(await conn.fetchval(
                "SELECT count(DISTINCT (equipment_id, parameter)) FROM fact_sensor_event"))
        finally:
            await conn.close()
    try:
        return asyncio.run(count())
    except (asyncpg.UndefinedTableError, OSError):
        return 0


def test_the_example_configuration_ingests_the_simulator_within_seconds(database: Database, tmp_path: Path) -> None:
    """``python -m simulators.modbus`` and ``ingestor run -c config/modbus-simulator.yaml`` with only
    INGESTOR_DATABASE_URL set; only the ports and the spool are moved (to free ports, to a spool of the
    test's own) so that tests and a running demo do not collide."""
    modbus_port, http_port = free_port(), free_port()
    text = (REPO / "config" / "modbus-simulator.yaml").read_text()
    assert "port: 5020" in text and "listen: 127.0.0.1:9110" in text
    config = tmp_path / "modbus-simulator.yaml"
    spool = "spool_dir: /var/lib/ingestor/modbus-demo-01/spool"
    assert spool in text
    config.write_text(text.replace("port: 5020", f"port: {modbus_port}")
                      .replace("listen: 127.0.0.1:9110", f"listen: 127.0.0.1:{http_port}")
                      .replace(spool, f"spool_dir: {tmp_path / 'spool'}"))
    env = {**os.environ, "INGESTOR_DATABASE_URL": database.dsn}
    with (tmp_path / "simulator.log").open("w") as sim_log, (tmp_path / "daemon.log").open("w") as daemon_log:
        simulator = subprocess.Popen([sys.executable, "-m", "simulators.modbus", "--port", str(modbus_port)],
                                     cwd=REPO, stdout=sim_log, stderr=subprocess.STDOUT)
        daemon = subprocess.Popen([sys.executable, "-m", "ingestor", "run", "-c", str(config)],
                                  cwd=REPO, env=env, stdout=daemon_log, stderr=subprocess.STDOUT)
    try:
        # 25 tags: 3 presses x 8 parameters, and PRESS-03's alarm lamp
        def every_tag_written() -> bool:
            assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()[-3000:]
            return _count_rows(database.dsn) == 25

        wait_until(every_tag_written, 30, "every tag of the example in fact_sensor_event")
        status, body = http_get(f"http://127.0.0.1:{http_port}/readyz")
        assert status == 200 and '"press-line-1": {"state": "connected"' in body
        _, metrics_text = http_get(f"http://127.0.0.1:{http_port}/metrics")
        assert 'ingestor_modbus_device_up{connector="press-line-1",device="press-03"} 1.0' in metrics_text
    finally:
        for process in (daemon, simulator):
            process.terminate()
        for process in (daemon, simulator):
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
    assert daemon.returncode == 0, (tmp_path / "daemon.log").read_text()[-3000:]
    assert "requests served: unit 1 fc 3:" in (tmp_path / "simulator.log").read_text()
