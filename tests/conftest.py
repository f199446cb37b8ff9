"""Shared fixtures: real database servers, one private database per test module and server.

Three servers, one per database tier (ingestor/database/schema/tiers.py):

* ``postgres``: the machine's plain PostgreSQL (``INGESTOR_TEST_PG_URL``, default 127.0.0.1:5432);
* ``timescaledb``: the project's TimescaleDB, Apache edition, from ``deploy/dev/timescaledb.sh``
  (``INGESTOR_TEST_TSDB_URL``, default 127.0.0.1:5433);
* ``timescaledb_full``: the full edition built from a source tarball by ``deploy/dev/timescaledb.sh --source``
  (``INGESTOR_TEST_TSDB_FULL_URL``, default 127.0.0.1:5434).

Tests never skip because the first two are missing: a missing server is a failed run.  The full edition can
only exist where its source was provided, so it is optional: when ``INGESTOR_TEST_TSDB_FULL_URL`` is set (as
``deploy/dev/test.sh`` does when it started one) it is required like the others; otherwise it is used when
something answers on 127.0.0.1:5434, and when nothing does the tier is left out and
tests/test_timescaledb_full.py reports one skip with the reason (``INGESTOR_TEST_TSDB_FULL_SKIP``, set by
test.sh, says why it was not built).

Which tests run on the full tier: every module's ``database`` tests in :data:`FULL_TIER_MODULES` (where the
tier changes what the code meets: the schema, COPY and exactly-once into a hypertable with compression, the
analytics and records queries and the views they read), plus tests/test_timescaledb_full.py.  The other
modules that use ``database`` (connectors, API plumbing, derivation) run the same SQL on every TimescaleDB
edition, so a third copy of them would cost CI minutes and test nothing new; they run on ``postgres`` and
``timescaledb``.  The numbers behind this choice are in the README's "Tests" section.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from ingestor.database.schema.tiers import Tier

REPO = Path(__file__).resolve().parent.parent
SERVERS = {
    "postgres": os.environ.get("INGESTOR_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    "timescaledb": os.environ.get("INGESTOR_TEST_TSDB_URL", "postgresql://postgres@127.0.0.1:5433/postgres"),
    "timescaledb_full": os.environ.get("INGESTOR_TEST_TSDB_FULL_URL",
                                       "postgresql://postgres@127.0.0.1:5434/postgres"),
}
TIERS = {"postgres": Tier.POSTGRES, "timescaledb": Tier.TIMESCALEDB_APACHE,
         "timescaledb_full": Tier.TIMESCALEDB_FULL}
"""The tier each server's databases are on once the schema is applied (``database.timescaledb: auto``)."""

FULL_TIER_MODULES = frozenset({
    "tests.test_schema",            # migrations, tiers, skipped objects, views per tier
    "tests.test_exactly_once",      # COPY and exactly-once into a compressed hypertable
    "tests.test_queries",           # analytics queries over sensor_5min_avg (a continuous aggregate there)
    "tests.test_api_analytics",     # the same through the API
    "tests.test_records",           # records: tables next to a hypertable
    "tests.test_records_queries",   # records queries that read sensor_5min_avg
    "tests.test_daemon",            # the daemon's view refresh and its job-failure report
})
"""Modules whose ``database`` tests also run on full TimescaleDB (see the module docstring)."""


def _full_tier() -> tuple[bool, str]:
    """Whether the full tier runs in this session, and why not when it does not."""
    if os.environ.get("INGESTOR_TEST_TSDB_FULL_URL"):
        return True, ""  # asked for explicitly: required, a missing server fails the run
    parts = urlsplit(SERVERS["timescaledb_full"])
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), timeout=1).close()
    except OSError:
        why = os.environ.get("INGESTOR_TEST_TSDB_FULL_SKIP") or (
            f"nothing answers on {parts.hostname}:{parts.port}")
        return False, (f"full TimescaleDB tier not run: {why}; build and start it with "
                       "deploy/dev/timescaledb.sh --source timescaledb-X.Y.Z.tar.gz start (see the README)")
    return True, ""


FULL_TIER, FULL_TIER_SKIP_REASON = _full_tier()


FULL_TIER_EVERYWHERE = os.environ.get("INGESTOR_TEST_FULL_TIER") == "all"
"""``INGESTOR_TEST_FULL_TIER=all`` runs every module's ``database`` tests on the full tier too."""


def servers_for(module: str) -> list[str]:
    """The servers a module's ``database`` tests run on."""
    servers = ["postgres", "timescaledb"]
    if FULL_TIER and (FULL_TIER_EVERYWHERE or module in FULL_TIER_MODULES
                      or module == "tests.test_timescaledb_full"):
        servers.append("timescaledb_full")
    return servers


def dsn_for(server_dsn: str, database: str) -> str:
    """The server's DSN with another database name."""
    parts = urlsplit(server_dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


async def _admin(server_dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(server_dsn, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


class Database:
    """A private database on one server, created for a test module and dropped after it."""

    def __init__(self, server: str, server_dsn: str, name: str) -> None:
        self.server = server
        self.tier = TIERS[server]
        self.server_dsn = server_dsn
        self.name = name
        self.dsn = dsn_for(server_dsn, name)

    def __repr__(self) -> str:
        return f"Database({self.server}, {self.name})"


def _create_database(server: str, module: str) -> Database:
    server_dsn = SERVERS[server]
    code = {"postgres": "pg", "timescaledb": "tsa", "timescaledb_full": "tsf"}[server]
    name = f"t_{re.sub(r'[^a-z0-9]+', '_', module.lower())[-30:]}_{code}_{uuid.uuid4().hex[:6]}"
    try:
        asyncio.run(_admin(server_dsn, f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(
            f"{server} test server at {server_dsn} is not usable ({exc}); "
            "start it with deploy/dev/timescaledb.sh start (TimescaleDB), "
            "deploy/dev/timescaledb.sh --full start (full TimescaleDB) or check PostgreSQL",
            pytrace=False,
        )
    return Database(server, server_dsn, name)


def _drop_database(db: Database) -> None:
    asyncio.run(_admin(db.server_dsn, f'DROP DATABASE IF EXISTS "{db.name}" WITH (FORCE)'))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``database`` is parametrized per module: the full tier only where it matters (see the docstring)."""
    if "database" in metafunc.fixturenames:
        servers = servers_for(metafunc.module.__name__)
        metafunc.parametrize("database", servers, indirect=True, scope="module", ids=servers)


@pytest.fixture(scope="module")
def database(request: pytest.FixtureRequest) -> Iterator[Database]:
    """An empty database of this module's own, once per server of :func:`servers_for`."""
    db = _create_database(request.param, request.module.__name__)
    yield db
    _drop_database(db)


@pytest.fixture
def fresh_database(request: pytest.FixtureRequest) -> Iterator[Database]:
    """An empty database for one test, on plain PostgreSQL unless the test parametrizes it indirectly with a
    server name (``@pytest.mark.parametrize("fresh_database", servers_for(__name__), indirect=True)``)."""
    db = _create_database(getattr(request, "param", "postgres"), request.node.name)
    yield db
    _drop_database(db)
