"""Making a database ready for this configuration: the schema (when ``database.apply_schema``), then the plant's
dimensions.  The daemon does it on every new writer connection, ``ingestor derive`` and ``ingestor bench`` once."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from ingestor.database.config import DatabaseConfig
from ingestor.database.dimensions import DimensionKeys, sync_dimensions
from ingestor.database.schema import ApplyReport, apply_schema
from ingestor.plant import PlantConfig


@dataclass(frozen=True)
class Prepared:
    """What preparing did: the schema report (None when the schema was not applied) and the dimension keys."""

    schema: ApplyReport | None
    keys: DimensionKeys


async def prepare_database(conn: asyncpg.Connection, database: DatabaseConfig, plant: PlantConfig, *,
                           apply: bool = True) -> Prepared:
    """Apply the schema when ``database.apply_schema`` (and ``apply``: the daemon applies it once per process),
    then upsert the plant into the ``dim_*`` tables."""
    report = None
    if database.apply_schema and apply:
        report = await apply_schema(conn, timescaledb=database.timescaledb)
    return Prepared(report, await sync_dimensions(conn, plant))
