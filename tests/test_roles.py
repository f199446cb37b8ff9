"""Least privilege: ``ingestor schema apply --roles`` makes an owner, a writer and a reader; the daemon runs as
a login user in the writer role with ``apply_schema: false`` and ingests, derives and refreshes; the reader is
refused any write but reads what the API reads, and ``ingestor api`` runs as it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from ingestor.database.schema.roles import RoleNames, roles_sql

from .conftest import REPO, Database, dsn_for
from .helpers import free_port, http_get, wait_until

CONFIG = """
instance_id: test-roles
database:
  url: {dsn}
  apply_schema: false
  refresh: {{view_oee_daily: 1s, view_reliability_summary: 1s, sensor_5min_avg: 1s}}
derivation: {{interval: 1s, settle: 0s}}
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
                - code: M1
                  name: Machine 1
                  theoretical_rate: 600
                  roles:
                    part_counter: {{parameter: parts_total}}
connectors:
  - type: generate
    name: gen
    interval: 50ms
    tags:
      - {{equipment: M1, parameter: temperature, unit: degC, signal: sine, min: 20, max: 80, period: 10s}}
      - {{equipment: M1, parameter: parts_total, unit: pcs, signal: counter, rate: 10}}
pipeline:
  batch_rows: 50
  batch_age: 200ms
  spool_dir: {spool}
http:
  listen: 127.0.0.1:{port}
"""


@dataclass
class Logins:
    names: RoleNames
    writer_dsn: str
    reader_dsn: str


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "INGESTOR_DATABASE_URL"}
    env["PYTHONPATH"] = str(REPO)
    return env


def _ingestor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ingestor", *args], capture_output=True, text=True, env=_env(),
                          cwd=REPO, timeout=180, check=False)


async def _execute(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _fetchval(dsn: str, sql: str) -> object:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def logins(database: Database) -> Iterator[Logins]:
    """The schema applied with ``--roles`` under role names of this module's own (roles are per server, and
    other tests share the servers), and two login users: one in the writer role, one in the reader role."""
    tag = uuid.uuid4().hex[:6]
    names = RoleNames(f"t_owner_{tag}", f"t_writer_{tag}", f"t_reader_{tag}")
    writer_login, reader_login = f"t_daemon_{tag}", f"t_dashboard_{tag}"
    done = _ingestor("schema", "apply", "--dsn", database.dsn, "--roles", "--owner-role", names.owner,
                     "--writer-role", names.writer, "--reader-role", names.reader)
    assert done.returncode == 0, done.stderr
    assert f"writer {names.writer}" in done.stdout
    asyncio.run(_execute(database.dsn, f"CREATE ROLE {writer_login} LOGIN IN ROLE {names.writer}; "
                                       f"CREATE ROLE {reader_login} LOGIN IN ROLE {names.reader};"))
    try:
        yield Logins(names, dsn_for(database.server_dsn, database.name).replace("postgres@", f"{writer_login}@"),
                     dsn_for(database.server_dsn, database.name).replace("postgres@", f"{reader_login}@"))
    finally:
        everyone = (writer_login, reader_login, names.writer, names.reader, names.owner)
        # one role at a time: DROP OWNED BY several roles whose default privileges name each other fails
        # ("could not find tuple for default ACL")
        asyncio.run(_execute(database.dsn, f"REASSIGN OWNED BY {', '.join(everyone)} TO postgres; "
                             + "".join(f"DROP OWNED BY {role}; " for role in everyone)
                             + f"DROP ROLE {', '.join(everyone)}"))


def test_apply_roles_is_idempotent_and_hands_the_objects_to_the_owner(database: Database, logins: Logins) -> None:
    names = logins.names
    done = _ingestor("schema", "apply", "--dsn", database.dsn, "--roles", "--owner-role", names.owner,
                     "--writer-role", names.writer, "--reader-role", names.reader)
    assert done.returncode == 0, done.stderr
    not_owned = asyncio.run(_fetchval(database.dsn, f"""
        SELECT string_agg(c.relname, ', ') FROM pg_class c
         WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
           AND c.relowner <> '{names.owner}'::regrole
           AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')"""))
    assert not_owned is None


def test_the_daemon_runs_as_the_writer_ingests_derives_and_refreshes(logins: Logins, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(dsn=logins.writer_dsn, port=port, spool=tmp_path / "spool"))
    log_path = tmp_path / "daemon.log"
    with log_path.open("w") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "ingestor", "run", "-c", str(config)],
                                   cwd=REPO, env=_env(), stdout=log_file, stderr=subprocess.STDOUT)
    try:
        def count(sql: str) -> int:
            return int(asyncio.run(_fetchval(logins.writer_dsn, sql)))  # type: ignore[call-overload]
        wait_until(lambda: count("SELECT count(*) FROM fact_sensor_event") >= 20, 60, "readings written")
        # the derivation has run and kept its state (facts come once a segment has ended and settled)
        wait_until(lambda: count("SELECT count(*) FROM derive_watermark WHERE last_event_id > 0") >= 1, 60, "the derivation's watermark")
        wait_until(lambda: count("SELECT count(*) FROM sensor_5min_avg") >= 1, 60, "sensor_5min_avg refreshed")
        status, body = http_get(f"http://127.0.0.1:{port}/readyz")
        assert status == 200, body
        assert json.loads(body)["ready"] is True
    finally:
        process.terminate()
        process.wait(30)
        print(log_path.read_text()[-4000:])  # shown when the test fails
    log = log_path.read_text()
    assert "permission denied" not in log.lower(), log[-3000:]
    # and the writer may not change the schema
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        asyncio.run(_execute(logins.writer_dsn, "CREATE TABLE t_writer_ddl (x int)"))
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        asyncio.run(_execute(logins.writer_dsn, "DROP TABLE fact_production"))
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        asyncio.run(_execute(logins.writer_dsn, "TRUNCATE fact_sensor_event"))


@pytest.mark.parametrize("sql", [
    "INSERT INTO dim_site (site_code, site_name) VALUES ('X', 'x')",
    "UPDATE fact_sensor_event SET value = 0",
    "DELETE FROM fact_sensor_event",
    "CREATE TABLE t_reader_ddl (x int)",
    "REFRESH MATERIALIZED VIEW view_oee_daily",
    "SELECT ingestor_refresh_view('view_oee_daily')",
])
def test_the_reader_is_refused_every_write(logins: Logins, sql: str) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        asyncio.run(_execute(logins.reader_dsn, sql))


def test_the_reader_reads_the_views(logins: Logins) -> None:
    for view in ("view_oee_daily", "view_reliability_summary", "sensor_5min_avg", "fact_sensor_event"):
        asyncio.run(_fetchval(logins.reader_dsn, f"SELECT count(*) FROM {view}"))


def test_the_reader_is_refused_copy(logins: Logins) -> None:
    async def copy() -> None:
        conn = await asyncpg.connect(logins.reader_dsn, timeout=10)
        try:
            await conn.copy_records_to_table("ingest_dead_letter", records=[], columns=["reason"])
        finally:
            await conn.close()
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        asyncio.run(copy())


def test_the_api_runs_as_the_reader(logins: Logins, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(dsn=logins.reader_dsn, port=port, spool=tmp_path / "spool"))
    process = subprocess.Popen([sys.executable, "-m", "ingestor", "api", "-c", str(config)], cwd=REPO, env=_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200, 30, "the API ready")
        for path in ("/api/plant", "/api/manufacturing-metrics/oee", "/api/manufacturing-metrics/downtime",
                     "/api/manufacturing-metrics/reliability", "/api/manufacturing-metrics/production",
                     "/api/events"):
            status, body = http_get(f"http://127.0.0.1:{port}{path}")
            assert status == 200, (path, body)
    finally:
        process.terminate()
        process.wait(30)


def test_print_shows_the_sql_with_the_names_given() -> None:
    done = _ingestor("schema", "roles", "--print", "--writer-role", "plant_writer")
    assert done.returncode == 0, done.stderr
    assert 'CREATE ROLE "plant_writer" NOLOGIN' in done.stdout
    assert 'GRANT EXECUTE ON FUNCTION "public".ingestor_refresh_view(text) TO "plant_writer"' in done.stdout
    assert done.stdout == roles_sql(RoleNames(writer="plant_writer"))
    bad = _ingestor("schema", "roles", "--print", "--reader-role", "x; DROP")
    assert bad.returncode == 2 and "letters, digits and underscores" in bad.stderr
