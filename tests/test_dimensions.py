"""Syncing the plant model into the dim_* tables: upsert by code, nothing written when nothing changed,
changes kept in the audit log, retired shifts deactivated."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from ingestor.config import load_config
from ingestor.database.dimensions import sync_dimensions
from ingestor.database.schema import apply_schema
from ingestor.plant import PlantConfig

from .conftest import Database

PLANT = """
plant:
  sites:
    - code: S1
      name: Site 1
      timezone: Europe/Berlin
      shifts:
        - {code: EARLY, name: Early, start: "06:00", end: "14:00"}
        - {code: LATE, name: Late, start: "14:00", end: "22:00"}
      areas:
        - code: A1
          name: Area 1
          work_centers:
            - code: W1
              name: Work center 1
              equipment:
                - {code: M1, name: Press one, criticality: high, theoretical_rate: 600,
                   attributes: {tonnage: 250}}
                - {code: M2, name: Robot}
  products:
    - {code: P1, name: Part one, target_cycle_time: 6s}
"""


def plant_from(tmp_path: Path, text: str) -> PlantConfig:
    path = tmp_path / "plant.yaml"
    path.write_text(text)
    return load_config(path, environ={}).plant


@pytest.fixture
async def conn(database: Database) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database.dsn)
    await apply_schema(connection)
    await connection.execute("TRUNCATE audit_log")
    try:
        yield connection
    finally:
        await connection.close()


async def test_sync_creates_the_plant_and_a_second_sync_writes_nothing(conn: asyncpg.Connection,
                                                                       tmp_path: Path) -> None:
    plant = plant_from(tmp_path, PLANT)
    first = await sync_dimensions(conn, plant)
    assert set(first.equipment) >= {"M1", "M2"}
    row = await conn.fetchrow("SELECT * FROM dim_equipment WHERE equipment_code = 'M1'")
    assert (row["equipment_name"], row["criticality_level"], float(row["theoretical_rate"])) == ("Press one", "High", 600)
    product = await conn.fetchrow("SELECT target_cycle_time FROM dim_product WHERE product_code = 'P1'")
    assert product["target_cycle_time"] == 6000  # milliseconds
    audit_rows = await conn.fetchval("SELECT count(*) FROM audit_log")

    second = await sync_dimensions(conn, plant)
    assert sum(second.changed.values()) == 0
    assert second.equipment == first.equipment  # ids are stable
    assert await conn.fetchval("SELECT count(*) FROM audit_log") == audit_rows


async def test_an_equipment_change_is_kept_as_history_in_the_audit_log(conn: asyncpg.Connection,
                                                                      tmp_path: Path) -> None:
    await sync_dimensions(conn, plant_from(tmp_path, PLANT))
    before = await conn.fetchval("SELECT count(*) FROM audit_log WHERE table_name = 'dim_equipment'")
    changed = PLANT.replace("name: Press one", "name: Press one (rebuilt)").replace("tonnage: 250", "tonnage: 300")
    keys = await sync_dimensions(conn, plant_from(tmp_path, changed))
    assert keys.changed["dim_equipment"] == 1
    rows = await conn.fetch("SELECT * FROM audit_log WHERE table_name = 'dim_equipment' ORDER BY audit_id")
    assert len(rows) == before + 1
    change = rows[-1]
    assert change["action"] == "UPDATE" and change["record_id"] == str(keys.equipment["M1"])
    before_data, after_data = json.loads(change["before_data"]), json.loads(change["after_data"])
    assert before_data["equipment_name"] == "Press one" and after_data["equipment_name"] == "Press one (rebuilt)"
    assert before_data["attributes"] == {"tonnage": 250} and after_data["attributes"] == {"tonnage": 300}


async def test_a_shift_dropped_from_the_calendar_is_retired_and_equipment_is_never_deleted(
        conn: asyncpg.Connection, tmp_path: Path) -> None:
    await sync_dimensions(conn, plant_from(tmp_path, PLANT))
    fewer = PLANT.replace('        - {code: LATE, name: Late, start: "14:00", end: "22:00"}\n', "").replace(
        "                - {code: M2, name: Robot}\n", "")
    await sync_dimensions(conn, plant_from(tmp_path, fewer))
    shifts = dict(await conn.fetch("SELECT shift_code, is_active FROM dim_shift"))
    assert shifts == {"EARLY": True, "LATE": False}
    # equipment missing from this YAML may belong to another daemon's YAML: it is left alone
    assert await conn.fetchval("SELECT is_active FROM dim_equipment WHERE equipment_code = 'M2'") is True
