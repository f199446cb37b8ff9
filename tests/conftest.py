"""Shared fixtures: real database servers, one private database per test module and server.

Two servers are used: the machine's plain PostgreSQL (``INGESTOR_TEST_PG_URL``, default 127.0.0.1:5432) and
the project's own TimescaleDB from ``deploy/dev/timescaledb.sh`` (``INGESTOR_TEST_TSDB_URL``, default
127.0.0.1:5433).  Tests never skip because a server is missing: a missing server is a failed run.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

REPO = Path(__file__).resolve().parent.parent
SERVERS = {
    "postgres": os.environ.get("INGESTOR_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    "timescaledb": os.environ.get("INGESTOR_TEST_TSDB_URL", "postgresql://postgres@127.0.0.1:5433/postgres"),
}


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
        self.server_dsn = server_dsn
        self.name = name
        self.dsn = dsn_for(server_dsn, name)

    def __repr__(self) -> str:
        return f"Database({self.server}, {self.name})"


def _create_database(server: str, module: str) -> Database:
    server_dsn = SERVERS[server]
    name = f"t_{re.sub(r'[^a-z0-9]+', '_', module.lower())[-30:]}_{server[:4]}_{uuid.uuid4().hex[:6]}"
    try:
        asyncio.run(_admin(server_dsn, f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(
            f"{server} test server at {server_dsn} is not usable ({exc}); "
            "start it with deploy/dev/timescaledb.sh start (TimescaleDB) or check PostgreSQL",
            pytrace=False,
        )
    return Database(server, server_dsn, name)


def _drop_database(db: Database) -> None:
    asyncio.run(_admin(db.server_dsn, f'DROP DATABASE IF EXISTS "{db.name}" WITH (FORCE)'))


@pytest.fixture(scope="module", params=sorted(SERVERS))
def database(request: pytest.FixtureRequest) -> Iterator[Database]:
    """An empty database of this module's own, once on plain PostgreSQL and once on TimescaleDB."""
    db = _create_database(request.param, request.module.__name__)
    yield db
    _drop_database(db)


@pytest.fixture
def fresh_database(request: pytest.FixtureRequest) -> Iterator[Database]:
    """An empty database for one test, on plain PostgreSQL (tests needing both use ``database``)."""
    db = _create_database("postgres", request.node.name)
    yield db
    _drop_database(db)
