"""The materialized views the daemon refreshes on its own schedule (no pg_cron), and refreshing one.

``view_oee_daily`` and ``view_reliability_summary`` are ordinary materialized views on every tier;
``sensor_5min_avg`` is one too except on full TimescaleDB, where it is a continuous aggregate with its own
refresh policy (it then appears as a plain view in the catalog and is not listed here).  Every one of them
has a unique index, so a refresh runs ``CONCURRENTLY`` and dashboards keep reading while it runs.

Since migration 0011 ``sensor_5min_avg`` on PostgreSQL and TimescaleDB Apache is a plain view over the table
``sensor_5min_rollup``, which ``ingestor_refresh_sensor_5min()`` maintains incrementally (only the buckets
that received readings since the last refresh); it is still refreshed under its own name here.
"""

from __future__ import annotations

import asyncpg

from ingestor.database.schema.errors import SchemaError

REFRESHABLE_VIEWS: tuple[str, ...] = ("view_oee_daily", "view_reliability_summary", "sensor_5min_avg")
"""Every view the daemon may have to refresh, in the order it should refresh them."""


async def views_to_refresh(conn: asyncpg.Connection) -> list[str]:
    """The views of :data:`REFRESHABLE_VIEWS` that are materialized views in this database (each refreshed
    ``CONCURRENTLY`` by :func:`refresh_view`)."""
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_class c WHERE c.relkind = 'm' AND c.relname = ANY($1::text[]) "
        "AND c.relnamespace = current_schema()::regnamespace", list(REFRESHABLE_VIEWS))
    present = {row["relname"] for row in rows}
    if await _incremental_rollup(conn):
        present.add("sensor_5min_avg")
    return [name for name in REFRESHABLE_VIEWS if name in present]


async def refresh_view(conn: asyncpg.Connection, name: str) -> None:
    """``REFRESH MATERIALIZED VIEW CONCURRENTLY``; a plain refresh the first time, when the view has never
    been populated (created ``WITH NO DATA``), because CONCURRENTLY needs a populated view."""
    if name not in REFRESHABLE_VIEWS:
        raise ValueError(f"{name!r} is not one of the refreshable views {', '.join(REFRESHABLE_VIEWS)}")
    if name == "sensor_5min_avg" and await _incremental_rollup(conn):
        if await conn.fetchval("SELECT to_regprocedure('ingestor_refresh_view(text)') IS NOT NULL"):
            await conn.execute("SELECT ingestor_refresh_view($1)", name)  # the writer role's way in (0010)
        else:
            await conn.execute("SELECT ingestor_refresh_sensor_5min()")
        return
    populated = await conn.fetchval(
        "SELECT c.relispopulated FROM pg_class c WHERE c.relkind = 'm' AND c.relname = $1 "
        "AND c.relnamespace = current_schema()::regnamespace", name)
    if populated is None:
        raise SchemaError(f"{name} is not a materialized view in this database (schema not applied, or a "
                          "continuous aggregate that TimescaleDB refreshes itself)")
    if await conn.fetchval("SELECT to_regprocedure('ingestor_refresh_view(text)') IS NOT NULL"):
        # migration 0010: runs with the owner's rights, so a writer role that does not own the view can refresh
        await conn.execute("SELECT ingestor_refresh_view($1)", name)
        return
    concurrently = "CONCURRENTLY " if populated else ""
    await conn.execute(f"REFRESH MATERIALIZED VIEW {concurrently}{name}")


async def _incremental_rollup(conn: asyncpg.Connection) -> bool:
    """True where ``sensor_5min_avg`` is maintained by ``ingestor_refresh_sensor_5min()`` (migration 0011)."""
    return bool(await conn.fetchval(
        "SELECT to_regprocedure(format('%I.ingestor_refresh_sensor_5min()', current_schema())) IS NOT NULL"))
