"""Plant records written over HTTP: ``POST /api/records/maintenance`` and ``POST /api/records/scrap``, for an
operator terminal or an MES webhook.  They need the write token.

A body is one record or a list of them, with the columns of the file import (docs/records.md) as keys.  It
goes through exactly the checks of ``ingestor import`` (:func:`ingestor.records.import_rows`) and is written
the same way: by natural key (posting the same record again changes nothing), as one batch that
``ingestor import undo`` takes back.  Any problem refuses the whole request with a 400 problem document
listing every problem; nothing is written.

Events: each new or changed work order emits its ``maintenance`` event (``change`` created or updated, with
the batch; the import emits them before it commits); a scrap record that takes its machine's shift above
``events.scrap_rate_alert`` emits a ``quality_alert``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends
from pydantic import Field

from ingestor.api.auth import require_write
from ingestor.api.deps import DbPool, State
from ingestor.api.models import ApiModel
from ingestor.api.problems import ApiProblem
from ingestor.records import Kind, import_rows
from ingestor.records.store import scrap_rate_alerts

router = APIRouter(prefix="/api/records", tags=["records"], dependencies=[Depends(require_write)])

MAX_RECORDS = 1000


class RecordWritten(ApiModel):
    record: int = Field(description="the record's position in the request, from 1")
    key: str = Field(description="its natural key: the work order number, or the scrap record's key")


class RecordsWritten(ApiModel):
    batch_id: str | None = Field(description="the import batch, for `ingestor import undo`; null when nothing "
                                             "changed")
    inserted: int
    updated: int
    unchanged: int
    records: list[RecordWritten]
    alerts: int = Field(0, description="quality_alert events this request emitted")


RecordsBody = Annotated[
    dict[str, Any] | list[dict[str, Any]],
    Body(description="one record or a list of up to 1000, keyed by the columns of docs/records.md",
         examples=[{"equipment": "PRESS-01", "time": "2025-06-03T09:15:00+02:00", "product": "BRACKET-A",
                    "quantity": 4, "reason": "SC-BURR"}]),
]


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise ApiProblem(400, "invalid records", f"values must be strings or numbers, got {type(value).__name__}")


async def _write(kind: Kind, body: dict[str, Any] | list[dict[str, Any]], pool: DbPool, state: State,
                 path: str) -> RecordsWritten:
    records = body if isinstance(body, list) else [body]
    if not records:
        raise ApiProblem(400, "invalid records", "the body holds no record")
    if len(records) > MAX_RECORDS:
        raise ApiProblem(400, "invalid records", f"at most {MAX_RECORDS} records per request, got {len(records)}")
    names: list[str] = []
    for record in records:
        names.extend(k for k in record if k not in names)
    rows = [(i, [_text(record.get(name)) for name in names]) for i, record in enumerate(records, start=1)]
    async with pool.acquire() as conn:
        result = await import_rows(conn, kind, names, rows, source=f"api:{path}", want_keys=True)
        if result.problems:
            errors = [{"record": p.line, "field": p.column, "problem": p.message} for p in result.problems]
            for e in errors:
                if e["field"] == "header":  # a column missing from every record
                    e["record"] = None
            raise ApiProblem(400, "invalid records",
                             "; ".join(f"record {e['record']}: {e['field']}: {e['problem']}"
                                       if e["record"] else f"{e['problem']}" for e in errors[:5]),
                             errors=errors)
        alerts = 0
        if kind == "scrap" and result.batch is not None and state.scrap_rate_alert is not None:
            async with conn.transaction():
                alerts = await scrap_rate_alerts(conn, result.batch, state.scrap_rate_alert,
                                                 state.scrap_alert_min_parts)
    return RecordsWritten(batch_id=None if result.batch is None else str(result.batch),
                          inserted=result.written.inserted, updated=result.written.updated,
                          unchanged=result.unchanged,
                          records=[RecordWritten(record=i, key=k) for i, k in sorted(result.keys.items())],
                          alerts=alerts)


@router.post("/maintenance", response_model=RecordsWritten, summary="write maintenance work orders")
async def post_maintenance(body: RecordsBody, pool: DbPool, state: State) -> RecordsWritten:
    """Work orders keyed by ``work_order``: a new one is inserted, a changed one updated (each emits its
    ``maintenance`` event), an unchanged one left alone."""
    return await _write("maintenance", body, pool, state, "/api/records/maintenance")


@router.post("/scrap", response_model=RecordsWritten, summary="write scrap records")
async def post_scrap(body: RecordsBody, pool: DbPool, state: State) -> RecordsWritten:
    """Scrap records keyed by ``scrap_id``, else by equipment + time + reason.  When the scrap recorded for a
    machine's shift passes ``events.scrap_rate_alert`` of its parts, a ``quality_alert`` is emitted (once per
    machine and shift)."""
    return await _write("scrap", body, pool, state, "/api/records/scrap")
