"""Sync the plant model from the YAML into the ``dim_*`` tables at startup.

Every dimension is upserted by its business code.  A row is only updated when something in it changed, so
an unchanged YAML writes nothing (and the audit log, which keeps the history of every change to the
dimensions, records nothing).  Nothing is ever deleted: facts reference the rows.  Equipment that should no
longer be used is retired with ``active: false``.  Several daemons may share one database with different
YAML files, which is why equipment missing from one file is left alone rather than deactivated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from ingestor.plant import PlantConfig

_LOCK_KEY = 0x1D6E_5EED  # advisory lock serialising dimension syncs from several daemons


@dataclass
class DimensionKeys:
    """Surrogate keys by business code, for the writer and the derivations."""

    equipment: dict[str, int] = field(default_factory=dict)
    units: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    products: dict[str, int] = field(default_factory=dict)
    sites: dict[str, int] = field(default_factory=dict)
    shifts: dict[tuple[str, str], int] = field(default_factory=dict)
    changed: dict[str, int] = field(default_factory=dict)


def _upsert(table: str, key: str, columns: list[str], extra_set: str = "") -> str:
    """INSERT … ON CONFLICT (key) DO UPDATE, updating only when a column differs (so the status counts the
    rows inserted or really changed)."""
    cols = ", ".join([key, *columns])
    params = ", ".join(f"${i}" for i in range(1, len(columns) + 2))
    assignments = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns) + extra_set
    current = ", ".join(f"{table}.{c}" for c in columns)
    incoming = ", ".join(f"EXCLUDED.{c}" for c in columns)
    return (f"INSERT INTO {table} ({cols}) VALUES ({params}) "
            f"ON CONFLICT ({key}) DO UPDATE SET {assignments} "
            f"WHERE ({current}) IS DISTINCT FROM ({incoming})")


_SITE = _upsert("dim_site", "site_code", ["site_name", "timezone"])
_AREA = _upsert("dim_area", "area_code", ["area_name", "site_id"])
_WORK_CENTER = _upsert("dim_work_center", "work_center_code",
                       ["work_center_name", "area_id", "capacity", "capacity_unit"])
_EQUIPMENT = _upsert(
    "dim_equipment", "equipment_code",
    ["equipment_name", "equipment_type", "work_center_id", "manufacturer", "model", "serial_number",
     "installation_date", "criticality_level", "theoretical_rate", "attributes", "is_active"],
    extra_set=", updated_at = now()")
_PRODUCT = _upsert("dim_product", "product_code",
                   ["product_name", "product_family", "unit_of_measure", "standard_cost", "target_cycle_time"])
_REASON = _upsert("dim_downtime_reason", "reason_code",
                  ["reason_description", "reason_category", "is_planned", "affects_oee", "is_failure"])
_SCRAP_REASON = _upsert("dim_scrap_reason", "scrap_code", ["scrap_description", "scrap_category"])
_UNIT = _upsert("dim_unit", "unit_code", ["unit_name", "quantity"])
_SHIFT = (
    "INSERT INTO dim_shift (site_id, shift_code, shift_name, start_time, end_time, is_active) "
    "VALUES ($1, $2, $3, $4, $5, true) ON CONFLICT (site_id, shift_code) DO UPDATE SET "
    "shift_name = EXCLUDED.shift_name, start_time = EXCLUDED.start_time, end_time = EXCLUDED.end_time, "
    "is_active = true WHERE (dim_shift.shift_name, dim_shift.start_time, dim_shift.end_time, dim_shift.is_active) "
    "IS DISTINCT FROM (EXCLUDED.shift_name, EXCLUDED.start_time, EXCLUDED.end_time, true)"
)


async def _ids(conn: asyncpg.Connection, table: str, key: str, code: str) -> dict[str, int]:
    return {row[1]: row[0] for row in await conn.fetch(f"SELECT {key}, {code} FROM {table}")}


async def _run(conn: asyncpg.Connection, sql: str, rows: list[tuple[Any, ...]]) -> int:
    """Execute an upsert per row; returns how many rows were inserted or changed."""
    changed = 0
    for row in rows:
        status = await conn.execute(sql, *row)
        changed += int(status.rsplit(" ", 1)[1])
    return changed


async def sync_dimensions(conn: asyncpg.Connection, plant: PlantConfig) -> DimensionKeys:
    """Upsert the plant model; returns the surrogate keys and how many rows changed per table."""
    keys = DimensionKeys()
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
        changed = keys.changed
        changed["dim_unit"] = await _run(conn, _UNIT, [(u.code, u.name, u.quantity) for u in plant.units])
        changed["dim_site"] = await _run(conn, _SITE, [(s.code, s.name, s.timezone) for s in plant.sites])
        keys.sites = await _ids(conn, "dim_site", "site_id", "site_code")
        changed["dim_area"] = await _run(conn, _AREA, [
            (a.code, a.name, keys.sites[s.code]) for s in plant.sites for a in s.areas])
        areas = await _ids(conn, "dim_area", "area_id", "area_code")
        changed["dim_work_center"] = await _run(conn, _WORK_CENTER, [
            (w.code, w.name, areas[a.code], w.capacity, w.capacity_unit)
            for s in plant.sites for a in s.areas for w in a.work_centers])
        centers = await _ids(conn, "dim_work_center", "work_center_id", "work_center_code")
        changed["dim_equipment"] = await _run(conn, _EQUIPMENT, [
            (e.code, e.name, e.type, centers[w.code], e.manufacturer, e.model, e.serial_number,
             e.installation_date, e.criticality, e.theoretical_rate,
             json.dumps(e.attributes, sort_keys=True), e.active)
            for _, _, w, e in plant.equipment()])
        changed["dim_product"] = await _run(conn, _PRODUCT, [
            (p.code, p.name, p.family, p.unit_of_measure, p.standard_cost,
             None if p.target_cycle_time is None else round(p.target_cycle_time * 1000))
            for p in plant.products])
        changed["dim_downtime_reason"] = await _run(conn, _REASON, [
            (r.code, r.description, r.category, r.planned, r.affects_oee, r.failure)
            for r in plant.downtime_reasons])
        changed["dim_scrap_reason"] = await _run(conn, _SCRAP_REASON, [
            (r.code, r.description, r.category) for r in plant.scrap_reasons])
        changed["dim_shift"] = await _run(conn, _SHIFT, [
            (keys.sites[s.code], sh.code, sh.name, sh.start, sh.end) for s in plant.sites for sh in s.calendar()])
        # A site's shift calendar belongs to the YAML that defines the site: shifts dropped from it retire.
        for site in plant.sites:
            status = await conn.execute(
                "UPDATE dim_shift SET is_active = false WHERE site_id = $1 AND is_active "
                "AND shift_code <> ALL($2::text[])", keys.sites[site.code], [sh.code for sh in site.calendar()])
            changed["dim_shift"] += int(status.rsplit(" ", 1)[1])
        keys.equipment = await _ids(conn, "dim_equipment", "equipment_id", "equipment_code")
        keys.units = await _ids(conn, "dim_unit", "unit_id", "unit_code")
        keys.reasons = await _ids(conn, "dim_downtime_reason", "reason_id", "reason_code")
        keys.products = await _ids(conn, "dim_product", "product_id", "product_code")
        keys.shifts = {(row["site_code"], row["shift_code"]): row["shift_id"] for row in await conn.fetch(
            "SELECT s.site_code, sh.shift_code, sh.shift_id FROM dim_shift sh JOIN dim_site s USING (site_id)")}
    return keys
