"""Fault tests of the durable pipeline, counted row for row against the real database:

1. the database stops mid-stream and comes back: every reading exactly once;
2. the daemon is killed with SIGKILL at several points, including during a COPY: nothing acknowledged is lost,
   nothing is written twice;
3. poisoned readings in a batch are dead-lettered with their reason and the rest of the batch lands;
4. the spool fills up: the configured policy holds and accepted = written + dead-lettered + dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from ingestor.config import load_config
from ingestor.contract import Reading, now_us
from ingestor.daemon.runtime import Daemon
from ingestor.database.schema import apply_schema

from .bench.common import scrape
from .conftest import REPO, SERVERS, Database, dsn_for
from .helpers import async_wait_until, free_port, http_get, wait_until
from .private_postgres import PrivatePostgres

CONFIG = """
instance_id: {instance}
database:
  url: {dsn}
  reconnect: {{initial: 100ms, max: 1s}}
  refresh: {{view_oee_daily: 0, view_reliability_summary: 0, sensor_5min_avg: 0}}
plant:
  sites:
    - code: S1
      name: Site 1
      areas:
        - code: A1
          name: Area 1
          work_centers:
            - code: W1
              name: Work center 1
              equipment:
                - {{code: M1, name: Machine 1}}
pipeline:
  batch_rows: {batch_rows}
  batch_age: 50ms
  queue_size: {queue_size}
  spool_dir: {spool}
  spool_max_bytes: {spool_max}
  spool_full: {policy}
  write_rows: {write_rows}
  shutdown_timeout: 20s
http:
  listen: 127.0.0.1:{port}
logging:
  format: json
"""


def write_config(tmp_path: Path, dsn: str, *, instance: str = "fault-test", batch_rows: int = 500,
                 queue_size: int = 20_000, spool_max: str = "1GiB", policy: str = "backpressure",
                 write_rows: int = 20_000) -> tuple[Path, int]:
    port = free_port()
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG.format(instance=instance, dsn=dsn, spool=tmp_path / "spool", port=port,
                                  batch_rows=batch_rows, queue_size=queue_size, spool_max=spool_max,
                                  policy=policy, write_rows=write_rows))
    return path, port


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


async def _values(dsn: str) -> list[int]:
    conn = await asyncpg.connect(dsn)
    try:
        if not await conn.fetchval("SELECT to_regclass('fact_sensor_event') IS NOT NULL"):
            return []
        return [int(v) for v in await conn.fetchval(
            "SELECT coalesce(array_agg(value ORDER BY value), '{}') FROM fact_sensor_event WHERE parameter = 'seq'")]
    finally:
        await conn.close()


def db_values(dsn: str) -> list[int]:
    return run(_values(dsn))  # type: ignore[no-any-return]


def acknowledged(ledger: Path) -> set[int]:
    found: set[int] = set()
    if ledger.exists():
        for line in ledger.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2:  # a line cut short by SIGKILL is simply not acknowledged
                found.update(range(int(parts[0]), int(parts[1]) + 1))
    return found


class Runner:
    """The fault runner as a child process (tests/fault_runner.py)."""

    def __init__(self, config: Path, ledger: Path, log: Path) -> None:
        self.config, self.ledger, self.log = config, ledger, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, first: int, count: int, rate: float, fault: str | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("INGESTOR_DATABASE_URL", "FAULT_KILL")}
        if fault:
            env["FAULT_KILL"] = fault
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.fault_runner", str(self.config), str(self.ledger), str(first),
                 str(count), str(rate)], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def terminate(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(40)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def final_counts(self) -> dict[str, int]:
        lines = [json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")]
        stopped = [line for line in lines if line.get("event") == "ingestor stopped"]
        assert stopped, self.log.read_text()[-3000:]
        return {k: v for k, v in stopped[-1].items() if k.startswith("readings_")}


def spool_readings(port: int) -> int:
    return int(json.loads(http_get(f"http://127.0.0.1:{port}/readyz")[1])["spool"]["readings"])


def assert_exactly_once(values: list[int], acked: set[int], emitted: set[int]) -> None:
    assert len(values) == len(set(values)), f"{len(values) - len(set(values))} readings written twice"
    missing = acked - set(values)
    assert not missing, f"{len(missing)} acknowledged readings lost, e.g. {sorted(missing)[:5]}"
    assert set(values) <= emitted


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    pg = PrivatePostgres()
    pg.start()
    try:
        yield pg
    finally:
        pg.close()


def test_database_outage_buffers_in_the_spool_then_writes_every_reading_once(private_pg: PrivatePostgres,
                                                                            tmp_path: Path) -> None:
    run(_admin(private_pg.dsn(), "CREATE DATABASE ingest"))
    dsn = private_pg.dsn("ingest")
    config, port = write_config(tmp_path, dsn)
    runner = Runner(config, tmp_path / "ledger", tmp_path / "daemon.log")
    count = 24_000
    runner.start(first=0, count=count, rate=3000)
    try:
        wait_until(lambda: len(db_values(dsn)) > 1000, 30, "the first readings in the database")
        private_pg.stop("immediate")  # a crash of the database server, connections cut mid-stream
        wait_until(lambda: http_get(f"http://127.0.0.1:{port}/readyz")[0] == 503, 10, "/readyz to report it")
        wait_until(lambda: spool_readings(port) > 2000, 15, "readings to pile up in the spool")
        # the metric agrees with /readyz for the whole outage, and a lost link is not a refused COPY
        outage = scrape(port)
        assert outage["ingestor_database_up"] == 0
        assert outage.get("ingestor_database_connection_failures_total", 0) >= 1
        assert outage.get("ingestor_copy_errors_total", 0) == 0
        private_pg.start()
        wait_until(lambda: len(db_values(dsn)) >= count, 60, "the backlog to drain")
        assert runner.terminate() == 0
    finally:
        runner.close()
    values = db_values(dsn)
    assert values == list(range(count))  # every reading, once, none missing
    final = runner.final_counts()
    assert final["readings_accepted"] == final["readings_spooled"] == final["readings_written"] == count
    assert final["readings_dropped"] == final["readings_dead_lettered"] == final["readings_left_in_spool"] == 0
    log = runner.log.read_text()
    # the outage is logged once, as whichever the writer met first: a commit cut off, a failed connect, a refusal
    assert any(first in log for first in ("commit not confirmed (connection lost)",
                                          "database unavailable; readings stay in the spool", "batch not written"))
    assert acknowledged(runner.ledger) == set(range(count))


COMMIT_COMPLETE = b"C\x00\x00\x00\x0bCOMMIT\x00"  # the server's CommandComplete for COMMIT


class CommitReplyLoss:
    """A TCP relay to PostgreSQL that, once armed, cuts the connection instead of passing on the server's
    reply to a COMMIT: the server has committed, the client never hears it.  Only the writer's connection is
    cut (one that has sent a COPY … FROM STDIN): the derivation, the live events and the view refresher commit
    through the relay too, and losing one of their replies tests nothing here."""

    def __init__(self, target_port: int) -> None:
        import threading
        self.target_port = target_port
        self.port = free_port()
        self.armed = threading.Event()
        self.swallowed = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, to_client: bool,
                        other: asyncio.StreamWriter, link: dict[str, bool]) -> None:
            try:
                while data := await reader.read(65536):
                    if not to_client and b"FROM STDIN" in data:
                        link["copies"] = True
                    if to_client and link["copies"] and self.armed.is_set() and COMMIT_COMPLETE in data:
                        self.armed.clear()
                        self.swallowed.set()
                        break
                    other.write(data)
                    await other.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                for each in (writer, other):
                    each.close()

        async def accept(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            link = {"copies": False}
            await asyncio.gather(relay(client_reader, client_writer, False, server_writer, link),
                                 relay(server_reader, server_writer, True, client_writer, link))

        async def main() -> None:
            await asyncio.start_server(accept, "127.0.0.1", self.port)
            self._ready.set()
            await asyncio.Event().wait()

        with contextlib.suppress(RuntimeError):
            self._loop.run_until_complete(main())


def test_a_commit_whose_reply_is_lost_is_counted_once_and_written_once(fresh_database: Database,
                                                                       tmp_path: Path) -> None:
    database = fresh_database  # its own database: the other tests of this module count rows in theirs
    server_port = int(database.dsn.rsplit(":", 1)[1].split("/", 1)[0])
    relay = CommitReplyLoss(server_port)
    dsn = database.dsn.replace(f"127.0.0.1:{server_port}", f"127.0.0.1:{relay.port}")
    config, _ = write_config(tmp_path, dsn, instance="lost-commit")
    runner = Runner(config, tmp_path / "ledger", tmp_path / "daemon.log")
    count = 6000
    runner.start(first=0, count=count, rate=3000)
    try:
        wait_until(lambda: len(db_values(database.dsn)) > 500, 30, "the first readings in the database")
        relay.armed.set()
        wait_until(relay.swallowed.is_set, 30, "a COMMIT reply to be lost")
        wait_until(lambda: len(db_values(database.dsn)) >= count, 60, "every reading")
        assert runner.terminate() == 0
    finally:
        runner.close()
    assert db_values(database.dsn) == list(range(count))  # the batch whose reply was lost was not written again
    final = runner.final_counts()
    assert final["readings_accepted"] == final["readings_written"] == count, final
    log = runner.log.read_text()
    assert "a commit whose reply was lost had landed" in log
    assert '"level": "error"' not in log or "commit not confirmed" in log


async def _admin(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _copy_running(server_dsn: str, database: str) -> bool:
    conn = await asyncpg.connect(server_dsn)
    try:
        return bool(await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND state = 'active' "
            "AND query ILIKE 'COPY%fact_sensor_event%'", database))
    finally:
        await conn.close()


def test_sigkill_at_any_point_loses_nothing_acknowledged_and_writes_nothing_twice(database: Database,
                                                                                    tmp_path: Path) -> None:
    config, port = write_config(tmp_path, database.dsn, instance=f"kill-{database.server}", batch_rows=2000,
                                write_rows=200_000)
    runner = Runner(config, tmp_path / "ledger", tmp_path / "daemon.log")
    emitted: set[int] = set()
    rng = random.Random(42)
    kills = ["during_copy", "after_commit:3", "random", "after_spool_append:5", "during_copy", "random"]
    copies_caught = 0
    try:
        for cycle, point in enumerate(kills):
            first, count = cycle * 10_000_000, 400_000
            runner.start(first=first, count=count, rate=40_000, fault=point if ":" in point else None)
            started = time.monotonic()
            if ":" in point:  # the runner kills itself at that exact point
                assert runner.process is not None
                assert runner.process.wait(30) == -signal.SIGKILL
            elif point == "during_copy":
                deadline = started + 20
                while time.monotonic() < deadline and not run(_copy_running(database.server_dsn, database.name)):
                    time.sleep(0.002)
                copies_caught += time.monotonic() < deadline
            else:
                time.sleep(rng.uniform(0.3, 2.5))
            if ":" not in point:
                runner.kill()
            emitted.update(range(first, first + count))
        # a last, clean run writes what the killed ones left in the spool
        runner.start(first=99_000_000, count=100, rate=1000)
        wait_until(lambda: http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200, 30, "the last run to connect")
        wait_until(lambda: spool_readings(port) == 0 and 99_000_099 in acknowledged(runner.ledger), 60,
                   "the spool to drain")
        assert runner.terminate() == 0
        emitted.update(range(99_000_000, 99_000_100))
    finally:
        runner.close()
    values = db_values(database.dsn)
    acked = acknowledged(runner.ledger)
    assert_exactly_once(values, acked, emitted)
    assert len(acked) > 5_000
    assert copies_caught >= 1, "no kill landed during a COPY"
    # the kill after a commit left committed batches in the spool: the restart must have found and dropped them
    assert "spool batches already committed before a restart were removed" in runner.log.read_text()
    assert runner.final_counts()["readings_left_in_spool"] == 0


async def test_poisoned_readings_are_dead_lettered_with_their_reason_and_the_rest_lands(
        database: Database, tmp_path: Path) -> None:
    conn = await asyncpg.connect(database.dsn)
    try:
        await apply_schema(conn)
        await conn.execute("TRUNCATE fact_sensor_event, ingest_dead_letter")  # the module's database is shared
        # the database refuses value -666 (stands in for any value or constraint the server rejects)
        await conn.execute("ALTER TABLE fact_sensor_event ADD CONSTRAINT poison CHECK (value <> -666)")
    finally:
        await conn.close()
    config_path, _ = write_config(tmp_path, database.dsn, instance=f"poison-{database.server}", batch_rows=400)
    daemon = Daemon(load_config(config_path))
    served = asyncio.create_task(daemon.serve())
    stamp = now_us()
    good = [Reading("M1", "seq", float(i), stamp + i, "pcs") for i in range(1000)]
    poisoned = [
        Reading("M1", "seq", -666.0, stamp + 5000, "pcs"),                       # refused by the database
        Reading("M1", "seq", 1.5, 10**19, "pcs"),                                # timestamp out of range
        Reading("M1", "x" * 150, 2.5, stamp, "pcs"),                             # parameter too long
        Reading("GHOST", "seq", 3.5, stamp, "pcs"),                              # equipment not in the plant
    ]
    sink = daemon.queue.sink_for("test")
    await sink.put(good[:500] + poisoned[:2])
    await sink.put(poisoned[2:] + good[500:])

    async def landed() -> bool:
        conn = await asyncpg.connect(database.dsn)
        try:
            return bool(await conn.fetchval("SELECT count(*) FROM ingest_dead_letter") == 4
                        and await conn.fetchval("SELECT count(*) FROM fact_sensor_event") == 1000)
        finally:
            await conn.close()

    try:
        await async_wait_until(landed, 30, "good rows and dead letters")
    finally:
        daemon.stop()
        assert await asyncio.wait_for(served, 30) == 0
    conn = await asyncpg.connect(database.dsn)
    try:
        reasons = {r["reason"]: r for r in await conn.fetch("SELECT * FROM ingest_dead_letter")}
        values = [r[0] for r in await conn.fetch("SELECT value FROM fact_sensor_event ORDER BY value")]
    finally:
        await conn.close()
    assert values == [float(i) for i in range(1000)]
    assert set(reasons) == {"database_refused", "timestamp_out_of_range", "parameter_too_long", "unknown_equipment"}
    assert reasons["database_refused"]["value"] == -666.0 and "poison" in reasons["database_refused"]["detail"]
    assert reasons["unknown_equipment"]["equipment_code"] == "GHOST"
    assert str(10**19) in reasons["timestamp_out_of_range"]["detail"]
    assert daemon.writer.written == 1000 and daemon.writer.dead_lettered == 4


@pytest.mark.parametrize("policy", ["backpressure", "drop_oldest", "drop_newest"])
async def test_spool_full_policy_holds_and_the_counts_add_up(policy: str, tmp_path: Path) -> None:
    server_dsn = SERVERS["postgres"]
    name = f"t_spool_full_{policy}_{os.getpid()}"
    dsn = dsn_for(server_dsn, name)  # does not exist yet: the database is "down" until it is created
    config_path, _ = write_config(tmp_path, dsn, instance="spool-full", batch_rows=1000, queue_size=2000,
                                  spool_max="1MiB", policy=policy)
    daemon = Daemon(load_config(config_path))
    served = asyncio.create_task(daemon.serve())
    sink = daemon.queue.sink_for("test")
    total = 60_000  # about 3.8 MB encoded: well over the 1 MiB spool
    stamp = now_us()

    async def produce() -> None:
        for start in range(0, total, 500):
            await sink.put([Reading("M1", "seq", float(i), stamp + i, "pcs") for i in range(start, start + 500)])

    producer = asyncio.create_task(produce())
    try:
        await async_wait_until(lambda: _spool_near_full(daemon), 30, "the spool to fill")
        await asyncio.sleep(0.5)
        spool = daemon.spool.spool
        assert spool.bytes_used <= 2**20 + 70_000  # the limit, give or take the batch that filled it
        if policy == "backpressure":
            assert not producer.done(), "with backpressure the source must be held back"
            assert sum(daemon.spooler.dropped.values()) == 0
        else:
            await asyncio.wait_for(producer, 30)  # dropping never holds the source back
            assert sum(daemon.spooler.dropped.values()) > 0
        await _admin(server_dsn, f'CREATE DATABASE "{name}"')
        await asyncio.wait_for(producer, 60)
        await async_wait_until(lambda: _drained(daemon), 60, "the spool to drain")
        daemon.stop()
        assert await asyncio.wait_for(served, 30) == 0
        values = [int(v) for v in await _values(dsn)]
    finally:
        if not served.done():
            daemon.stop()
            await asyncio.gather(served, return_exceptions=True)
        producer.cancel()
        await _admin(server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    dropped = daemon.spooler.dropped
    assert daemon.queue.accepted == total
    assert daemon.queue.accepted == daemon.writer.written + daemon.writer.dead_lettered + sum(dropped.values())
    assert len(values) == len(set(values)) == daemon.writer.written
    if policy == "backpressure":
        assert values == list(range(total)) and not dropped
    elif policy == "drop_oldest":
        assert set(dropped) == {"spool_full_drop_oldest"}
        assert values[-1] == total - 1  # the newest readings survive
    else:
        assert set(dropped) == {"spool_full_drop_newest"}
        assert values[0] == 0  # the oldest readings survive


async def _spool_near_full(daemon: Daemon) -> bool:
    return daemon.spool.spool.bytes_used > 2**20 - 70_000


async def _drained(daemon: Daemon) -> bool:
    return daemon.spool.spool.readings == 0 and len(daemon.queue) == 0 and daemon.spooler.finished.is_set() is False


async def test_daemons_share_a_database_and_even_a_duplicate_instance_id_loses_nothing(
        database: Database, tmp_path: Path) -> None:
    """edge-a and edge-b write at once; a second daemon misconfigured with edge-a's instance_id writes its own
    spool too (watermarks belong to spools, not to instance names); a copy of a running spool is refused."""
    daemons: dict[str, Daemon] = {}
    for name, instance in (("a", "edge-a"), ("b", "edge-b"), ("a2", "edge-a")):
        directory = tmp_path / name
        directory.mkdir()
        path, _ = write_config(directory, database.dsn, instance=instance)
        daemons[name] = Daemon(load_config(path))
    served = {name: asyncio.create_task(d.serve()) for name, d in daemons.items()}
    stamp = now_us()
    firsts = {"a": 1_000_000, "b": 2_000_000, "a2": 3_000_000}
    for name, first in firsts.items():
        sink = daemons[name].queue.sink_for("test")
        for start in range(first, first + 5000, 500):
            await sink.put([Reading("M1", "shared", float(i), stamp + i, "pcs") for i in range(start, start + 500)])

    async def shared() -> list[int]:
        conn = await asyncpg.connect(database.dsn)
        try:
            if not await conn.fetchval("SELECT to_regclass('fact_sensor_event') IS NOT NULL"):
                return []
            return [int(r[0]) for r in await conn.fetch(
                "SELECT value FROM fact_sensor_event WHERE parameter = 'shared' ORDER BY value")]
        finally:
            await conn.close()

    try:
        await async_wait_until(lambda: _has(shared, 15_000), 30, "all three daemons to write")
        # a second daemon on a spool directory that is in use does not start
        copy_path, _ = write_config(tmp_path / "a", database.dsn, instance="edge-a")
        assert await Daemon(load_config(copy_path)).serve() == 1
    finally:
        for daemon in daemons.values():
            daemon.stop()
        results = await asyncio.gather(*served.values(), return_exceptions=True)
    assert results == [0, 0, 0]
    expected = sorted(i for first in firsts.values() for i in range(first, first + 5000))
    assert await shared() == expected


async def _has(values: object, count: int) -> bool:
    return len(await values()) >= count  # type: ignore[operator]
