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

Every ``database`` test runs on all three tiers: the third adds about 80 s to the suite (the database tests
with ``-k timescaledb_full --durations=0``: 148 tests in 80 s, against 65 s for the Apache tier and 105 s for
``-k postgres``, which also holds the postgres-only tests), which keeps the suite well inside CI's budget, so no
module is left out (README, "Testing on full TimescaleDB").
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
DATABASE_SERVERS = ["postgres", "timescaledb", *(["timescaledb_full"] if FULL_TIER else [])]
"""The servers every ``database`` test runs on."""


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
    """``database`` runs on every server of :data:`DATABASE_SERVERS`, unless the test chose its own."""
    own = any("database" in (m.args[0] if isinstance(m.args[0], (list, tuple)) else m.args[0].split(","))
              for m in metafunc.definition.iter_markers("parametrize"))
    # a test may choose its servers itself, and a module may have a `database` fixture of its own (test_outages)
    if "database" in metafunc.fixturenames and not own and "database" not in vars(metafunc.module):
        metafunc.parametrize("database", DATABASE_SERVERS, indirect=True, scope="module", ids=DATABASE_SERVERS)


@pytest.fixture(scope="module")
def database(request: pytest.FixtureRequest) -> Iterator[Database]:
    """An empty database of this module's own, once per server of :data:`DATABASE_SERVERS`."""
    db = _create_database(request.param, request.module.__name__)
    yield db
    _drop_database(db)


@pytest.fixture
def fresh_database(request: pytest.FixtureRequest) -> Iterator[Database]:
    """An empty database for one test, on plain PostgreSQL unless the test parametrizes it indirectly with a
    server name (``@pytest.mark.parametrize("fresh_database", DATABASE_SERVERS, indirect=True)``)."""
    db = _create_database(getattr(request, "param", "postgres"), request.node.name)
    yield db
    _drop_database(db)
