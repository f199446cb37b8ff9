"""Reloading the configuration of a running daemon: the real ``ingestor run`` as a subprocess, real SIGHUPs, a
real Mosquitto (the shared one, on a topic and client id of this test's own), the Modbus simulator as a real
server, and PostgreSQL.

The main test is the issue's "done when": twenty reloads during a steady MQTT stream (a publisher with sequence
numbers) and a Modbus stream, some adding and removing tags, some starting and stopping a connector, some with an
invalid file.  Every sequence number is in fact_sensor_event exactly once, the Modbus readings are all written and
none twice, and no connector was started more often than its own configuration changed.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from .conftest import REPO, Database
from .helpers import free_port, http_get, wait_until
from .test_systemd_notify import NotifySocket

pytestmark = pytest.mark.timeout(120)

PLANT = """
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
                - {code: M1, name: Machine 1}
                - {code: PRESS-01, name: Press 1}
                - {code: G1, name: Generated 1}
"""


def _yaml(*, dsn: str, port: int, spool: Path, connectors: str, extra: str = "", plant: str = PLANT) -> str:
    return f"""instance_id: test-reload
database:
  url: {dsn}
{plant}
connectors:
{connectors}
pipeline:
  batch_rows: 200
  batch_age: 100ms
  spool_dir: {spool}
http:
  listen: 127.0.0.1:{port}
logging:
  format: json
{extra}"""


def mqtt_connector(prefix: str, client_id: str, *, extra_tag: bool, bad: bool = False) -> str:
    lines = f"""  - type: mqtt
    name: line
    host: 127.0.0.1
    port: 1883
    client_id: {client_id}
    clean_start: false
    session_expiry: 10m
    drain_timeout: 4s
    reconnect: {{initial: 100ms, max: 1s}}
    tags:
      - {{topic: {prefix}/seq, equipment: M1, parameter: seq, qos: 1}}
"""
    if extra_tag:
        lines += f"      - {{topic: {prefix}/extra, equipment: M1, parameter: extra, qos: 1}}\n"
    if bad:  # equipment the plant does not have: a cross-check error with its line and field
        lines += f"      - {{topic: {prefix}/bad, equipment: NOPE-9, parameter: bad, qos: 1}}\n"
    return lines


def modbus_connector(port: int) -> str:
    return f"""  - type: modbus
    name: press
    host: 127.0.0.1
    port: {port}
    timeout: 1s
    interval: 100ms
    reconnect: {{initial: 100ms, max: 1s}}
    devices:
      - unit_id: 1
        name: press-01
        tags:
          - {{equipment: PRESS-01, parameter: parts_total, register: holding, address: 0, data_type: uint32,
              byte_order: CDAB}}
          - {{equipment: PRESS-01, parameter: state, register: holding, address: 4, data_type: uint16}}
"""


def generate_connector(name: str = "gen", parameter: str = "temperature") -> str:
    return f"""  - type: generate
    name: {name}
    interval: 100ms
    tags:
      - {{equipment: G1, parameter: {parameter}, unit: degC, signal: sine, min: 20, max: 80, period: 10s}}
"""


class Daemon:
    """``ingestor run -c FILE`` as a subprocess, its JSON log lines parsed on demand."""

    def __init__(self, config: Path, tmp_path: Path, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.log_path = tmp_path / "daemon.log"
        environ = {k: v for k, v in os.environ.items() if k != "INGESTOR_DATABASE_URL"}
        environ.update(env or {})
        with self.log_path.open("w") as log_file:
            self.process = subprocess.Popen([sys.executable, "-m", "ingestor", "run", "-c", str(config)], cwd=REPO,
                                            env=environ, stdout=log_file, stderr=subprocess.STDOUT)

    def running(self) -> bool:
        """True while the process runs; fails the test at once when it exited (no use waiting for it)."""
        assert self.process.poll() is None, f"the daemon exited with {self.process.returncode}"
        return True

    def lines(self) -> list[dict[str, Any]]:
        found = []
        for line in self.log_path.read_text().splitlines():
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except json.JSONDecodeError:  # the line being written
                    pass
        return found

    def events(self, *names: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line.get("event") in names]

    def reload_outcomes(self) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line.get("event") in ("reload applied", "reload: nothing to apply")
                or str(line.get("event", "")).startswith("reload rejected")]

    def hangup_and_wait(self, timeout: float = 30) -> dict[str, Any]:
        before = len(self.reload_outcomes())
        self.process.send_signal(signal.SIGHUP)
        return wait_until(lambda: (lambda o: o[before] if len(o) > before else None)(self.reload_outcomes()),
                          timeout, "the reload's outcome in the log")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)

    def kill(self) -> None:
        print(self.log_path.read_text()[-20000:])  # shown when the test failed
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def metric(port: int, name: str) -> float:
    status, body = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def connector_state(port: int, name: str) -> str | None:
    status, body = http_get(f"http://127.0.0.1:{port}/readyz")
    if status not in (200, 503):
        return None
    return json.loads(body).get("connectors", {}).get(name, {}).get("state")


def query(dsn: str, sql: str) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            return list(await conn.fetch(sql))
        except asyncpg.UndefinedTableError:
            return []
        finally:
            await conn.close()
    return asyncio.run(run())


def count(dsn: str, sql: str) -> int:
    """``SELECT count(*) …``; 0 while the daemon has not created the schema yet."""
    rows = query(dsn, sql)
    return int(rows[0][0]) if rows else 0


class Publisher:
    """Publishes 1, 2, 3, … (QoS 1) on ``PREFIX/seq`` and on ``PREFIX/extra``, about every 5 ms, until stopped."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.sent = 0
        self._stop = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"reload-pub-{uuid.uuid4().hex[:8]}")
        self.client.connect("127.0.0.1", 1883)
        self.client.loop_start()
        self._last: Any = None
        self._thread = threading.Thread(target=self._publish, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _publish(self) -> None:
        while not self._stop.is_set():
            number = self.sent + 1
            self._last = self.client.publish(f"{self.prefix}/seq", str(number), qos=1)
            self.client.publish(f"{self.prefix}/extra", str(number), qos=1)
            self.sent = number
            self._stop.wait(0.005)   # the stream's pace, not a wait for something to happen

    def finish(self) -> int:
        self._stop.set()
        self._thread.join()
        if self._last is not None:
            self._last.wait_for_publish(10)
        self.client.loop_stop()
        self.client.disconnect()
        return self.sent


@contextmanager
def modbus_simulator() -> Iterator[int]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "simulators.modbus", "--port", str(port), "--machines", "1",
                                "--speed", "20"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def listening() -> bool:
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", port)) == 0
    try:
        wait_until(listening, 20, "the Modbus simulator listening")
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_twenty_reloads_during_mqtt_and_modbus_streams_lose_nothing_and_restart_only_what_changed(
        fresh_database: Database, tmp_path: Path) -> None:
    prefix = f"reload-test/{uuid.uuid4().hex[:12]}"
    client_id = f"ingestor-reload-{uuid.uuid4().hex[:8]}"
    http_port = free_port()
    config = tmp_path / "config.yaml"

    with modbus_simulator() as modbus_port:
        def write(*, extra_tag: bool, gen: bool, bad: bool = False) -> None:
            connectors = (mqtt_connector(prefix, client_id, extra_tag=extra_tag, bad=bad)
                          + modbus_connector(modbus_port) + (generate_connector() if gen else ""))
            config.write_text(_yaml(dsn=fresh_database.dsn, port=http_port, spool=tmp_path / "spool",
                                    connectors=connectors))

        write(extra_tag=False, gen=False)
        daemon = Daemon(config, tmp_path)
        publisher = Publisher(prefix)
        try:
            wait_until(lambda: daemon.running() and connector_state(http_port, "line") == "connected", 30, "the MQTT connector")
            wait_until(lambda: connector_state(http_port, "press") == "connected", 30, "the Modbus connector")
            publisher.start()
            # (extra tag, gen connector, invalid) per reload, and what each must do
            steps = [
                (True, False, False), (True, True, False), (True, True, True), (False, True, False),
                (False, False, False), (False, False, True), (True, True, False), (True, True, False),
                (False, True, False), (True, False, True), (True, False, False), (False, False, False),
                (False, True, False), (True, True, False), (True, True, True), (False, False, False),
                (True, False, False), (True, True, False), (False, True, True), (False, False, False),
            ]
            assert len(steps) == 20
            state = (False, False)
            expected_starts = {"line": 1, "press": 1, "gen": 0}
            for number, (extra_tag, gen, bad) in enumerate(steps, 1):
                write(extra_tag=extra_tag, gen=gen, bad=bad)
                sent_before = publisher.sent
                outcome = daemon.hangup_and_wait()
                if bad:
                    assert outcome["event"].startswith("reload rejected"), (number, outcome)
                    continue
                restarted = ["line"] if extra_tag != state[0] else []
                started = ["gen"] if gen and not state[1] else []
                stopped = ["gen"] if state[1] and not gen else []
                if not (restarted or started or stopped):
                    assert outcome["event"] == "reload: nothing to apply", (number, outcome)
                else:
                    assert outcome["event"] == "reload applied", (number, outcome)
                    assert (outcome["restarted"], outcome["started"], outcome["stopped"]) == (
                        restarted, started, stopped), (number, outcome)
                    assert "press" not in outcome["restarted"]
                for name in restarted + started:
                    expected_starts[name] += 1
                state = (extra_tag, gen)
                # the stream goes on between reloads
                wait_until(lambda before=sent_before: publisher.sent >= before + 20, 10, "the publisher going on")

            # every connector was started exactly as often as its configuration asked for
            assert metric(http_port, 'ingestor_connector_starts_total{connector="press"}') == 1
            assert metric(http_port, 'ingestor_connector_connects_total{connector="press"}') == 1
            assert metric(http_port, 'ingestor_connector_starts_total{connector="line"}') == expected_starts["line"]
            assert metric(http_port, 'ingestor_connector_starts_total{connector="gen"}') == expected_starts["gen"]
            # the operator page shows what runs now: line's seq tag (its extra tag is gone), press, no gen
            def tags() -> set[tuple[str, str]]:
                status, body = http_get(f"http://127.0.0.1:{http_port}/api/status")
                assert status == 200, body
                return {(t["connector"], t["parameter"]) for t in json.loads(body)["tags"]}
            assert not state[0]
            wait_until(lambda: tags() == {("line", "seq"), ("press", "parts_total"), ("press", "state")}, 10,
                       "the operator page's tags to be those running")
            # gen is stopped now: its state series left /metrics with it
            assert not state[1]
            assert 'ingestor_connector_state{connector="gen"' not in http_get(f"http://127.0.0.1:{http_port}/metrics")[1]
            invalid = sum(1 for *_, bad in steps if bad)
            assert metric(http_port, 'ingestor_config_reloads_total{result="rejected"}') == invalid
            assert metric(http_port, 'ingestor_config_reloads_total{result="applied"}') + metric(
                http_port, 'ingestor_config_reloads_total{result="no_change"}') == 20 - invalid
            assert metric(http_port, "ingestor_config_last_reload_success_timestamp_seconds") > time.time() - 120

            sent = publisher.finish()
            wait_until(lambda: count(fresh_database.dsn, "SELECT count(*) FROM fact_sensor_event "
                                     "WHERE parameter = 'seq'") >= sent, 30, "every sequence number written")
            assert daemon.stop() == 0
        finally:
            if publisher._thread.is_alive():
                publisher.finish()
            daemon.kill()

    seq = [int(row[0]) for row in query(fresh_database.dsn,
                                        "SELECT value FROM fact_sensor_event WHERE parameter = 'seq' ORDER BY value")]
    assert seq == list(range(1, sent + 1)), (len(seq), sent, sorted(set(range(1, sent + 1)) - set(seq))[:10])
    # the Modbus stream: polled every 100 ms all along, no reading twice, and every accepted reading written
    press = query(fresh_database.dsn, """
        SELECT f.parameter, f.event_ts FROM fact_sensor_event f JOIN dim_equipment e USING (equipment_id)
        WHERE e.equipment_code = 'PRESS-01' ORDER BY f.parameter, f.event_ts""")
    assert len(press) == len({(row[0], row[1]) for row in press})
    stamps = [row[1] for row in press if row[0] == "state"]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(stamps)]
    assert stamps and max(gaps) < 2.0, max(gaps)
    final = daemon.events("ingestor stopped")[-1]
    total = query(fresh_database.dsn, "SELECT count(*) FROM fact_sensor_event")[0][0]
    assert final["readings_accepted"] == final["readings_written"] == total
    assert final["readings_dropped"] == final["readings_dead_lettered"] == final["readings_left_in_spool"] == 0
    # each rejected reload logged its problem as check-config prints it, and changed nothing
    problems = [line["problem"] for line in daemon.events("configuration problem")]
    assert len(problems) == invalid and all("equipment" in p and "NOPE-9" in p for p in problems), problems


def _replace(path: Path, text: str) -> None:
    """Write the file as an editor that saves atomically does: a new file renamed over the old one."""
    new = path.with_suffix(".new")
    new.write_text(text)
    new.rename(path)


PLANT_WITH_G2 = PLANT + "                - {code: G2, name: Generated 2}\n"


def test_watch_picks_up_an_edit_syncs_new_equipment_and_rejects_a_bad_edit_as_check_config_does(
        fresh_database: Database, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "config.yaml"
    watch = "reload: {watch: true, interval: 200ms}\n"
    first = _yaml(dsn=fresh_database.dsn, port=port, spool=tmp_path / "spool", connectors=generate_connector("a"),
                  extra=watch)
    config.write_text(first)
    daemon = Daemon(config, tmp_path)
    try:
        wait_until(lambda: daemon.running() and connector_state(port, "a") == "connected", 30, "connector a")
        # a new machine and a connector for it, saved the way editors do (rename over the file)
        second = _yaml(dsn=fresh_database.dsn, port=port, spool=tmp_path / "spool", plant=PLANT_WITH_G2,
                       extra=watch, connectors=generate_connector("a") + generate_connector("b").replace(
                           "equipment: G1", "equipment: G2"))
        _replace(config, second)
        applied = wait_until(lambda: daemon.events("reload applied"), 20, "the watched edit applied")[0]
        assert (applied["restarted"], applied["started"], applied["stopped"]) == ([], ["b"], [])
        assert "plant" in applied["changed"]
        # the dimensions were synced live: G2's readings reach fact_sensor_event (not the dead letters)
        wait_until(lambda: count(fresh_database.dsn, """
            SELECT count(*) FROM fact_sensor_event f JOIN dim_equipment e USING (equipment_id)
            WHERE e.equipment_code = 'G2'""") >= 3, 20, "readings of the new machine G2")
        assert metric(port, 'ingestor_config_reloads_total{result="applied"}') == 1
        assert metric(port, "ingestor_config_last_reload_success_timestamp_seconds") > 0

        # an edit in place with mistakes: rejected, each problem logged as check-config prints it
        bad = second.replace("interval: 100ms", "intervall: 100ms", 1).replace("equipment: G2", "equipment: G3")
        config.write_text(bad)
        wait_until(lambda: daemon.events("reload rejected: the file is invalid; the running configuration stays"),
                   20, "the bad edit rejected")
        check = subprocess.run([sys.executable, "-m", "ingestor", "check-config", str(config)], cwd=REPO,
                               capture_output=True, text=True, timeout=60, check=False)
        assert check.returncode == 2
        printed = [line for line in check.stderr.splitlines() if not line.endswith("nothing was started")]
        logged = [line["problem"] for line in daemon.events("configuration problem")]
        assert logged == printed and len(logged) == 2, (logged, check.stderr)
        assert any("intervall" in line for line in logged) and any("G3" in line for line in logged)
        # nothing changed: both connectors still run, G2 still gets readings
        assert metric(port, 'ingestor_config_reloads_total{result="rejected"}') == 1
        assert metric(port, 'ingestor_connector_starts_total{connector="a"}') == 1
        assert metric(port, 'ingestor_connector_starts_total{connector="b"}') == 1
        assert connector_state(port, "b") == "connected"
        assert daemon.stop() == 0
    finally:
        daemon.kill()


def test_restart_only_settings_are_named_and_kept_and_systemd_hears_of_the_reload(
        fresh_database: Database, tmp_path: Path) -> None:
    port, other_port = free_port(), free_port()
    config = tmp_path / "config.yaml"
    config.write_text(_yaml(dsn=fresh_database.dsn, port=port, spool=tmp_path / "spool",
                            connectors=generate_connector("a")))
    notify = NotifySocket()
    daemon = Daemon(config, tmp_path, env={"NOTIFY_SOCKET": notify.env})
    try:
        wait_until(lambda: daemon.running() and notify.seen("READY=1"), 30, "READY=1")
        changed = _yaml(dsn=fresh_database.dsn + "_elsewhere", port=other_port, spool=tmp_path / "other-spool",
                        connectors=generate_connector("a", parameter="pressure")).replace(
                            "instance_id: test-reload", "instance_id: another-name")
        config.write_text(changed)
        outcome = daemon.hangup_and_wait()
        assert outcome["event"] == "reload applied" and outcome["restarted"] == ["a"], outcome
        warning = [line for line in daemon.lines() if str(line.get("event", "")).startswith("needs a restart: ")]
        assert len(warning) == 1, daemon.lines()
        assert set(warning[0]["settings"]) == {"instance_id", "database.url", "http.listen", "pipeline.spool_dir"}
        assert warning[0]["event"].startswith("needs a restart: instance_id, database.url, pipeline.spool_dir, ")
        # still the old address, the old spool, the old database; the connector change is live
        assert http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        with pytest.raises(OSError):
            http_get(f"http://127.0.0.1:{other_port}/healthz", timeout=1)
        assert not (tmp_path / "other-spool").exists()
        wait_until(lambda: count(fresh_database.dsn, "SELECT count(*) FROM fact_sensor_event "
                                 "WHERE parameter = 'pressure'") >= 3, 20, "the changed tag's readings")
        # systemd's reload protocol: RELOADING=1 with the monotonic clock in one datagram, then READY=1
        reloading = wait_until(lambda: notify.seen("RELOADING=1"), 10, "RELOADING=1")
        with notify._lock:
            datagrams = [(at, message) for at, message in notify.messages]
        stamped = [message for _, message in datagrams if message.startswith("RELOADING=1")]
        assert len(stamped) == 1 and "\nMONOTONIC_USEC=" in stamped[0], stamped
        usec = int(stamped[0].split("MONOTONIC_USEC=")[1].split("\n")[0])
        assert abs(usec / 1e6 - time.monotonic()) < 60
        wait_until(lambda: [at for at, _ in notify.seen("READY=1") if at >= reloading[0][0]], 10,
                   "READY=1 after the reload")
        assert daemon.stop() == 0
    finally:
        daemon.kill()
        notify.close()


def test_the_watcher_looks_at_content_not_at_timestamps(tmp_path: Path) -> None:
    from ingestor.service.watch import FileWatcher

    path = tmp_path / "config.yaml"
    path.write_text("a: 1\n")
    watcher = FileWatcher(path)
    assert not watcher.changed()
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))   # touched, same content
    assert not watcher.changed()
    path.write_text("a: 2\n")
    assert watcher.changed()
    assert not watcher.changed()
    path.unlink()   # an editor's rename in progress: not a change
    assert not watcher.changed()
    path.write_text("a: 2\n")
    assert not watcher.changed()


def _config(**changes: Any) -> Any:
    from ingestor.config.model import IngestorConfig

    data: dict[str, Any] = {
        "instance_id": "one",
        "plant": {"sites": [{"code": "S1", "name": "Site", "timezone": "UTC", "areas": [{"code": "A1", "name": "A",
                  "work_centers": [{"code": "W1", "name": "W", "equipment": [{"code": "G1", "name": "G"}]}]}]}]},
        "connectors": [
            {"type": "generate", "name": "a", "tags": [{"equipment": "G1", "parameter": "x", "signal": "sine"}]},
            {"type": "generate", "name": "b", "tags": [{"equipment": "G1", "parameter": "y", "signal": "sine"}]},
        ],
    }
    for key, value in changes.items():
        data[key] = value
    return IngestorConfig.model_validate(data)


def test_a_plan_names_what_changes_and_keeps_what_needs_a_restart() -> None:
    from ingestor.daemon.reload import plan_reload

    running = _config()
    assert not plan_reload(running, _config()).applies_something
    connectors = running.model_dump(mode="json")["connectors"]
    connectors[0]["interval"] = 2.0                                  # a changed
    connectors[1]["enabled"] = False                                 # b disabled
    connectors.append({"type": "generate", "name": "c", "tags": [     # c new
        {"equipment": "G1", "parameter": "z", "signal": "sine"}]})
    plan = plan_reload(running, _config(connectors=connectors, instance_id="two",
                                        database={"url": "postgresql://127.0.0.1:6543/other", "apply_schema": False},
                                        pipeline={"spool_dir": "/tmp/other", "batch_rows": 10},
                                        logging={"level": "debug"}))
    assert (plan.restart, plan.start, plan.stop) == (["a"], ["c"], ["b"])
    assert plan.needs_restart == ["instance_id", "database.apply_schema", "database.url", "pipeline.batch_rows",
                                  "pipeline.spool_dir"]
    assert plan.logging and not plan.plant and not plan.derivation
    # what the daemon runs with: the new connectors and logging, the running instance, database and pipeline
    assert plan.config.instance_id == "one" and plan.config.database == running.database
    assert plan.config.pipeline == running.pipeline and plan.config.logging.level == "debug"
    assert [c.name for c in plan.config.enabled_connectors()] == ["a", "c"]
    # enabling b again starts it; the plant's change is seen
    plant = running.model_dump(mode="json")["plant"]
    plant["sites"][0]["areas"][0]["work_centers"][0]["equipment"].append({"code": "G2", "name": "G2"})
    again = plan_reload(plan.config, _config(plant=plant))
    assert (again.restart, again.start, again.stop) == (["a"], ["b"], ["c"])
    assert again.plant and not again.needs_restart


def test_new_equipment_restarts_only_the_connectors_that_learn_equipment_from_the_traffic() -> None:
    from ingestor.daemon.reload import plan_reload

    templated = {"type": "mqtt", "name": "m", "subscriptions": [{"topic": "plant/{equipment}/{parameter}"}]}
    running = _config(connectors=[*_config().model_dump(mode="json")["connectors"], templated])
    plant = running.model_dump(mode="json")["plant"]
    plant["sites"][0]["areas"][0]["work_centers"][0]["equipment"].append({"code": "G2", "name": "G2"})
    new = _config(plant=plant, connectors=running.model_dump(mode="json")["connectors"])
    assert plan_reload(running, new).restart == ["m"]
    plant["sites"][0]["areas"][0]["work_centers"][0]["equipment"][0]["name"] = "renamed"  # codes as they were
    assert plan_reload(new, _config(plant=plant, connectors=running.model_dump(mode="json")["connectors"])).restart == []
