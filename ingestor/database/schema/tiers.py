"""The three database tiers the schema is built for, how to tell them apart, and making TimescaleDB present.

* ``postgres``: plain PostgreSQL (14 or newer).
* ``timescaledb-apache``: TimescaleDB's Apache-licensed edition (``timescaledb.license = 'apache'``), as
  packaged by Debian: hypertables and ``time_bucket``, but no compression and no continuous aggregates.
* ``timescaledb``: the full edition (license ``'timescale'``): everything, including compression and
  continuous aggregates.  Debian strips its TSL code; the tests build it from a source tarball
  (``deploy/dev/timescaledb.sh --source``).

The tiers are ordered by capability; a schema built on a lower tier stays on it when the server later gains
TimescaleDB (see :func:`capable_of`).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

import asyncpg

from ingestor.database.schema.errors import SchemaError

TimescaleMode = Literal["auto", "require", "off"]

MIN_POSTGRES = 140000  # date_bin, used by the plain-PostgreSQL sensor_5min_avg
MIN_TIMESCALEDB = (2, 13)  # create_hypertable(..., by_range(...))
SCHEMA_LOCK_KEY = 0x5348_4F50_5343_4845  # pg_advisory_xact_lock key shared by every schema change


class Tier(StrEnum):
    POSTGRES = "postgres"
    TIMESCALEDB_APACHE = "timescaledb-apache"
    TIMESCALEDB_FULL = "timescaledb"


_RANK = {Tier.POSTGRES: 0, Tier.TIMESCALEDB_APACHE: 1, Tier.TIMESCALEDB_FULL: 2}


def capable_of(detected: Tier, built_on: Tier | None) -> Tier:
    """The tier to build for: the detected one, but never above the tier the schema was first built on
    (its fact_sensor_event would not be a hypertable, say), so that later migrations fit what exists."""
    if built_on is None or _RANK[built_on] >= _RANK[detected]:
        return detected
    return built_on


def edition(tier: Tier, *, detected: Tier, mode: TimescaleMode) -> str:
    """How skip reasons name the database's edition ("{edition} has no compression")."""
    if tier is Tier.POSTGRES:
        if mode == "off":
            return "plain PostgreSQL (TimescaleDB turned off)"
        if detected is not Tier.POSTGRES:
            return "plain PostgreSQL (the schema was first built without TimescaleDB)"
        return "plain PostgreSQL (no TimescaleDB)"
    if tier is Tier.TIMESCALEDB_APACHE:
        return "TimescaleDB Apache edition"
    return "full TimescaleDB"


async def timescaledb_version(conn: asyncpg.Connection) -> str | None:
    """The version of the timescaledb extension created in this database, or None."""
    version: str | None = await conn.fetchval(
        "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
    return version


async def detect_tier(conn: asyncpg.Connection) -> Tier:
    """The tier of this database as it is now: TimescaleDB counts only once the extension exists in it."""
    if await timescaledb_version(conn) is None:
        return Tier.POSTGRES
    license_name = await conn.fetchval("SELECT current_setting('timescaledb.license', true)")
    return Tier.TIMESCALEDB_FULL if license_name == "timescale" else Tier.TIMESCALEDB_APACHE


async def check_server(conn: asyncpg.Connection) -> None:
    """Refuse servers older than PostgreSQL 14."""
    version_num = int(await conn.fetchval("SELECT current_setting('server_version_num')"))
    if version_num < MIN_POSTGRES:
        raise SchemaError(
            f"PostgreSQL {version_num // 10000} is too old: the analytics schema needs PostgreSQL 14 or "
            "newer")


async def prepare_timescaledb(conn: asyncpg.Connection, mode: TimescaleMode) -> Tier:
    """Create the timescaledb extension where the server offers it (unless ``mode`` is ``off``) and return
    the tier to build for.  ``require`` fails when the server has no TimescaleDB."""
    if mode not in ("auto", "require", "off"):
        raise ValueError(f"timescaledb must be 'auto', 'require' or 'off', not {mode!r}")
    if mode == "off":
        return Tier.POSTGRES
    if await timescaledb_version(conn) is None:
        available = await conn.fetchval(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'")
        if available is None:
            if mode == "require":
                raise SchemaError(
                    "database.timescaledb is 'require' but this PostgreSQL server has no TimescaleDB "
                    "(timescaledb is not in pg_available_extensions); install TimescaleDB on the server or "
                    "set database.timescaledb to 'auto' or 'off'")
            return Tier.POSTGRES
        await _create_extension(conn)
    version = await timescaledb_version(conn)
    assert version is not None
    if _version_tuple(version) < MIN_TIMESCALEDB:
        raise SchemaError(
            f"TimescaleDB {version} is too old: the schema needs "
            f"{'.'.join(map(str, MIN_TIMESCALEDB))} or newer; "
            "run ALTER EXTENSION timescaledb UPDATE after upgrading the package, or set database.timescaledb "
            "to 'off'")
    return await detect_tier(conn)


async def _create_extension(conn: asyncpg.Connection) -> None:
    database = await conn.fetchval("SELECT current_database()")
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK_KEY)
            # Checked again under the lock: another daemon may have created it while this one waited.
            if await timescaledb_version(conn) is None:
                await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except asyncpg.InsufficientPrivilegeError as exc:
        raise SchemaError(
            f"TimescaleDB is available on the server but this user may not create the extension ({exc}); "
            f"have a superuser run CREATE EXTENSION timescaledb in database {database!r}, or set "
            "database.timescaledb to 'off' to use plain PostgreSQL") from exc
    except asyncpg.PostgresError as exc:
        raise SchemaError(
            f"TimescaleDB is available on the server but CREATE EXTENSION timescaledb failed: {exc} "
            "(is timescaledb in shared_preload_libraries?); fix the server or set database.timescaledb "
            "to 'off'") from exc


def _version_tuple(version: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in version.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)
