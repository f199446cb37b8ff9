"""``POST /api/records/maintenance`` and ``/api/records/scrap``: the write token, the import's checks as
problem documents, writes by natural key, and the events they emit, on a real database (the demo plant)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg
import pytest

from ingestor.records.store import undo_batch

from .api_helpers import api_client, api_state
from .conftest import Database
from .helpers import demo_plant, run_on

READ, WRITE = "r" * 20, "w" * 20
TOKENS = {"INGESTOR_API_READ_TOKEN": READ, "INGESTOR_API_WRITE_TOKEN": WRITE}
AUTH = {"Authorization": f"Bearer {WRITE}"}


@pytest.fixture(scope="module")
def plant(database: Database) -> Database:
    async def fill(conn: asyncpg.Connection) -> None:
        await demo_plant(conn)
        # PRESS-01's early shift of 3 June (06:00-14:00 in Berlin): 100 parts
        await conn.execute(
            "INSERT INTO fact_production (equipment_id, date_id, shift_id, start_time, end_time, "
            "planned_production_time, operating_time, planned_parts, total_parts_produced, good_parts) "
            "SELECT e.equipment_id, 20250603, s.shift_id, '2025-06-03 04:00Z', '2025-06-03 12:00Z', "
            "28800000, 28800000, 100, 100, 94 FROM dim_equipment e, dim_shift s "
            "WHERE e.equipment_code = 'PRESS-01' AND s.shift_code = 'EARLY'")
    run_on(database.dsn, fill)
    return database


async def events(db: Database, kind: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(db.dsn)
    try:
        return [json.loads(r[0]) for r in await conn.fetch(
            "SELECT data::text FROM api_event WHERE event_type = $1 ORDER BY event_id", kind)]
    finally:
        await conn.close()


async def test_records_need_the_write_token(plant: Database) -> None:
    async with api_client(api_state(plant.dsn, environ=TOKENS)) as client:
        record = {"equipment": "PRESS-01", "time": "2025-06-03T07:00", "quantity": 1, "reason": "SC-BURR"}
        response = await client.post("/api/records/scrap", json=record)
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"
        response = await client.post("/api/records/scrap", json=record, headers={"Authorization": f"Bearer {READ}"})
        assert response.status_code == 403


async def test_maintenance_posted_like_an_import(plant: Database) -> None:
    order = {"work_order": "T-900", "equipment": "PRESS-03", "type": "corrective",
             "start": "2025-06-03T10:00:00+02:00", "end": "2025-06-03T11:15:00+02:00", "labor_hours": 1.25,
             "parts_cost": "88,40", "failure_code": "MECH_FAIL", "technician": "terminal 3"}
    async with api_client(api_state(plant.dsn, environ=TOKENS)) as client:
        response = await client.post("/api/records/maintenance", json=order, headers=AUTH)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["inserted"] == 1 and body["updated"] == 0 and body["records"] == [{"record": 1, "key": "T-900"}]
        assert body["batchId"]
        assert [(e["workOrderNumber"], e["startTime"], e["laborHours"], e["materialCost"])
                for e in await events(plant, "maintenance")] == [("T-900", "2025-06-03T08:00:00.000Z", 1.25, 88.40)]
        again = (await client.post("/api/records/maintenance", json=[order], headers=AUTH)).json()
        assert (again["inserted"], again["updated"], again["unchanged"], again["batchId"]) == (0, 0, 1, None)
        changed = (await client.post("/api/records/maintenance", json={**order, "labor_hours": 2},
                                     headers=AUTH)).json()
        assert (changed["inserted"], changed["updated"]) == (0, 1)
        # the change is a 'maintenance' event of its own, with the new values and the batch
        assert [(e["change"], e["laborHours"], e["batchId"]) for e in await events(plant, "maintenance")] == [
            ("created", 1.25, body["batchId"]), ("updated", 2.0, changed["batchId"])]

        bad = [order, {**order, "work_order": "T-901", "equipment": "PRESS-3", "end": "2025-06-03T09:00:00+02:00"}]
        response = await client.post("/api/records/maintenance", json=bad, headers=AUTH)
        assert response.status_code == 400
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["title"] == "invalid records"
        assert problem["errors"] == [
            {"record": 2, "field": "equipment", "problem": "unknown equipment 'PRESS-3'; did you mean PRESS-03?"},
            {"record": 2, "field": "end",
             "problem": "2025-06-03T09:00:00+02:00 is before the start 2025-06-03T10:00:00+02:00"}]
        assert problem["detail"].startswith("record 2: equipment: unknown equipment 'PRESS-3'")
        missing = await client.post("/api/records/maintenance", json={"equipment": "PRESS-03"}, headers=AUTH)
        assert missing.status_code == 400 and missing.json()["errors"][0]["record"] is None


async def test_scrap_raises_a_quality_alert_once_the_shift_crosses_the_threshold(plant: Database) -> None:
    async with api_client(api_state(plant.dsn, environ=TOKENS)) as client:
        first = {"scrap_id": "T-1", "equipment": "PRESS-01", "time": "2025-06-03 07:00", "quantity": 4,
                 "reason": "SC-BURR"}
        body = (await client.post("/api/records/scrap", json=first, headers=AUTH)).json()
        assert (body["inserted"], body["alerts"]) == (1, 0)  # 4 of 100: under 5 %
        assert await events(plant, "quality_alert") == []
        more = [{**first, "scrap_id": "T-2", "quantity": 2}, {**first, "scrap_id": "T-3", "quantity": 1}]
        body = (await client.post("/api/records/scrap", json=more, headers=AUTH)).json()
        assert (body["inserted"], body["alerts"]) == (2, 1)  # 7 of 100
        alert = {"kind": "scrap_rate", "source": "scrap_records", "batchId": body["batchId"], "shift": "Early shift",
                 "shiftCode": "EARLY", "productionDay": 20250603, "scrapRate": 0.07, "threshold": 0.05,
                 "scrapParts": 7, "partsProduced": 100}
        assert await events(plant, "quality_alert") == [alert]
        alert_batch = body["batchId"]
        body = (await client.post("/api/records/scrap", json={**first, "scrap_id": "T-4"}, headers=AUTH)).json()
        assert body["alerts"] == 0  # once per machine and shift
        response = await client.post("/api/records/scrap", json={**first, "quantity": -1}, headers=AUTH)
        assert response.status_code == 400
        assert response.json()["errors"] == [{"record": 1, "field": "quantity", "problem": "must not be negative, got -1"}]

    # Undoing the batch that raised the alert retracts it, and frees the shift to be alerted again.
    conn = await asyncpg.connect(plant.dsn)
    try:
        alert_id = await conn.fetchval("SELECT event_id FROM api_event WHERE event_type = 'quality_alert'")
        async with conn.transaction():
            undone = await undo_batch(conn, uuid.UUID(alert_batch))
        assert (undone.deleted, undone.events) == (2, 1)
        assert await conn.fetchval("SELECT dedupe_key FROM api_event WHERE event_id = $1", alert_id) is None
    finally:
        await conn.close()
    assert (await events(plant, "quality_alert"))[1] == {
        **alert, "kind": "retracted", "retractedKind": "scrap_rate", "retracts": alert_id, "undo": True}
    # T-1 and T-4 are left (8 of 100, still over): a new record alerts the shift again
    async with api_client(api_state(plant.dsn, environ=TOKENS)) as client:
        body = (await client.post("/api/records/scrap", json={**first, "scrap_id": "T-5", "quantity": 3},
                                  headers=AUTH)).json()
        assert body["alerts"] == 1
