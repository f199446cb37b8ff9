"""``ingestor import``: every bad input with its exact error line, re-import, edit, undo, --skip-bad, the
encodings and formats people send, against real databases (the demo plant of config/demo.yaml)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from ingestor.cli import main
from ingestor.records import importer
from ingestor.records.source import RecordFile, detect_encoding
from ingestor.records.values import parse_decimal, parse_int, parse_time

from .conftest import REPO, Database
from .helpers import demo_plant, run_on

RECORDS = REPO / "config" / "records"
BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture(scope="module")
def plant(database: Database) -> Database:
    run_on(database.dsn, demo_plant)
    assert main(["import", "equipment", str(RECORDS / "legacy-equipment.csv"), "--dsn", database.dsn]) == 0
    return database


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def sql(db: Database, query: str, *args: Any) -> list[tuple[Any, ...]]:
    async def go() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(db.dsn)
        try:
            return [tuple(r) for r in await conn.fetch(query, *args)]
        finally:
            await conn.close()
    return asyncio.run(go())


def events(db: Database) -> list[tuple[int, str, str, dict[str, Any], str]]:
    """The maintenance events: (id, change, batchId, data, undo), in id order."""
    return [(r[0], r[1]["change"], r[1]["batchId"], r[1], json.dumps(r[1]["undo"]))
            for r in ((i, json.loads(d)) for i, d in sql(
                db, "SELECT event_id, data::text FROM api_event WHERE event_type = 'maintenance' ORDER BY event_id"))]


def batch_of(out: str) -> str:
    return next(line.split()[1] for line in out.splitlines() if line.startswith("batch:"))


def write(tmp_path: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


# ------------------------------------------------------------------------------------------------------------
# Every bad input: its exact line, exit 2, nothing written
# ------------------------------------------------------------------------------------------------------------

MAINTENANCE_HEADER = "work_order,equipment,type,start,end,labor_hours,parts_cost,failure_code\n"
SCRAP_HEADER = "scrap_id,equipment,time,product,quantity,reason,cost\n"

BAD = [
    ("maintenance", MAINTENANCE_HEADER + "W-1,PRES-01,corrective,2025-06-03 10:00,2025-06-03 11:00,1,,\n",
     "2: equipment: unknown equipment 'PRES-01'; did you mean PRESS-01?"),
    ("maintenance", MAINTENANCE_HEADER + "W-1,PRESS-01,corrective,2025-06-03 10:00,2025-06-03 11:00,1,,MECH_FAI\n",
     "2: failure_code: unknown reason code 'MECH_FAI'; did you mean MECH_FAIL?"),
    ("scrap", SCRAP_HEADER + "S-1,PRESS-01,2025-06-03 10:00,BRACKET-A,3,SC-BUR,\n",
     "2: reason: unknown scrap reason 'SC-BUR'; did you mean SC-BURR?"),
    ("scrap", SCRAP_HEADER + "S-1,PRESS-01,2025-06-03 10:00,BRAKET-A,3,SC-BURR,\n",
     "2: product: unknown product 'BRAKET-A'; did you mean BRACKET-A?"),
    ("maintenance", MAINTENANCE_HEADER + "W-1,PRESS-01,corrective,2025-06-31 10:00,2025-06-03 11:00,1,,\n",
     "2: start: '2025-06-31 10:00' is not a date and time (write 2025-06-09 14:30, 09.06.2025 14:30, "
     "2025-06-09T12:30:00Z or an Excel date number)"),
    ("maintenance", MAINTENANCE_HEADER + "W-1,PRESS-01,corrective,31.13.2025 10:00,2025-06-03 11:00,1,,\n",
     "2: start: '31.13.2025 10:00' is not a valid date: month must be in 1..12"),
    ("maintenance", MAINTENANCE_HEADER + "W-1,PRESS-01,corrective,03/06/2025 10:00,2025-06-03 11:00,1,,\n",
     "2: start: '03/06/2025 10:00' is ambiguous (day/month or month/day?): give --date-order dmy or mdy"),
    ("maintenance", MAINTENANCE_HEADER + "W-1,PRESS-01,corrective,2025-03-30 02:30,2025-03-30 04:00,1,,\n",
     "2: start: '2025-03-30 02:30' does not exist in Europe/Berlin: the clocks skip that hour"),
    ("scrap", SCRAP_HEADER + "S-1,PRESS-01,2025-06-03 10:00,BRACKET-A,-3,SC-BURR,\n",
     "2: quantity: must not be negative, got -3"),
    ("scrap", SCRAP_HEADER + "S-1,PRESS-01,2025-06-03 10:00,BRACKET-A,2.5,SC-BURR,\n",
     "2: quantity: '2.5' is not a whole number"),
    ("maintenance", MAINTENANCE_HEADER + "W-1,PRESS-01,corrective,2025-06-03 10:00,2025-06-03 11:00,-1,,\n",
     "2: labor_hours: must not be negative, got -1"),
    ("maintenance", MAINTENANCE_HEADER + "W-1,PRESS-01,corrective,2025-06-03 10:00,2025-06-03 09:00,1,,\n",
     "2: end: 2025-06-03 09:00 is before the start 2025-06-03 10:00"),
    ("maintenance", MAINTENANCE_HEADER + "W-1,PRESS-01,repair,2025-06-03 10:00,2025-06-03 11:00,1,,\n"
     "W-1,PRESS-02,pm,2025-06-03 10:00,2025-06-03 11:00,1,,\n",
     "3: work_order: 'W-1' appears again (first on line 2)"),
    ("maintenance", MAINTENANCE_HEADER + "W-1,PRESS-01,fix,2025-06-03 10:00,2025-06-03 11:00,1,,\n",
     "2: type: unknown maintenance type 'fix' (preventive, corrective, predictive or calibration)"),
    ("scrap", "equipment,time,quantity,reason\nPRESS-01,2025-06-03 10:00,1,SC-BURR\n"
     "PRESS-01,2025-06-03T08:00:00Z,2,SC-BURR\n",  # the same instant: 10:00 in Berlin is 08:00 UTC
     "3: equipment+time+reason: the same equipment, time and reason as line 2"),
    ("scrap", SCRAP_HEADER + "S-1,PRESS-01,,BRACKET-A,3,SC-BURR,\n", "2: time: missing"),
    ("scrap", "scrap_id,equipment,time,product,reason\n", "1: header: no quantity column (parts scrapped; also "
     "accepted: qty, scrap_qty, count, pieces)"),
]


@pytest.mark.parametrize(("kind", "text", "error"), BAD, ids=[b[2].split(":")[1].strip() + "-" + str(i)
                                                            for i, b in enumerate(BAD)])
def test_every_bad_input_has_its_line(plant: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      kind: str, text: str, error: str) -> None:
    path = write(tmp_path, "bad.csv", text)
    before = sql(plant, "SELECT (SELECT count(*) FROM fact_maintenance), (SELECT count(*) FROM fact_scrap), "
                        "(SELECT count(*) FROM record_import_batch)")
    code, _, err = cli(capsys, "import", kind, str(path), "--dsn", plant.dsn)
    assert code == 2
    assert err.splitlines()[0] == f"{path}:{error}"
    assert err.splitlines()[-1].endswith("; nothing was written")
    assert sql(plant, "SELECT (SELECT count(*) FROM fact_maintenance), (SELECT count(*) FROM fact_scrap), "
                      "(SELECT count(*) FROM record_import_batch)") == before


def test_every_problem_of_a_file_at_once(plant: Database, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "bad.csv", MAINTENANCE_HEADER
                 + "W-1,PRES-01,corrective,2025-06-03 10:00,2025-06-03 09:00,-1,,\n"
                 + "W-2,PRESS-01,corrective,2025-06-03 10:00,2025-06-03 11:00,1,,\n"
                 + "W-2,PRESS-01,corrective,2025-06-03 10:00,2025-06-03 11:00,1,abc,\n"
                 + "W-2,PRESS-01,corrective,2025-06-03 10:00,2025-06-03 11:00,1,,\n")
    code, _, err = cli(capsys, "import", "maintenance", str(path), "--dsn", plant.dsn)
    assert code == 2
    assert err.splitlines() == [
        f"{path}:2: equipment: unknown equipment 'PRES-01'; did you mean PRESS-01?",
        f"{path}:2: end: 2025-06-03 09:00 is before the start 2025-06-03 10:00",
        f"{path}:2: labor_hours: must not be negative, got -1",
        f"{path}:4: parts_cost: 'abc' is not a number",
        f"{path}:5: work_order: 'W-2' appears again (first on line 3)",
        f"{path}: 5 problems in 4 rows; nothing was written",
    ]


# ------------------------------------------------------------------------------------------------------------
# Import, re-import, edit, undo
# ------------------------------------------------------------------------------------------------------------

def test_import_again_edit_and_undo(plant: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    export = RECORDS / "maintenance-export.csv"
    code, out, _ = cli(capsys, "import", "maintenance", str(export), "--dry-run", "--dsn", plant.dsn)
    assert code == 0 and "7 would be inserted" in out and "nothing was written" in out
    assert sql(plant, "SELECT count(*) FROM fact_maintenance") == [(0,)]

    code, out, _ = cli(capsys, "import", "maintenance", str(export), "--dsn", plant.dsn)
    assert code == 0
    assert "file:      " + str(export) + " (UTF-8 with BOM, delimiter ';')" in out
    assert "written:   7 inserted, 0 updated, 0 unchanged" in out
    assert "warning:   preventive work without a stop of its machine: 4000124, 4000125" in out
    first = batch_of(out)
    # 05.06.2025 22:30 in Berlin is 20:30 UTC; 1.280,00 is 1280.00
    assert sql(plant, "SELECT e.equipment_code, m.maintenance_type, m.start_time, m.end_time, m.labor_hours, "
                      "m.material_cost, m.labor_cost, m.failure_code, m.technician FROM fact_maintenance m "
                      "JOIN dim_equipment e USING (equipment_id) WHERE m.record_key = '4000126'") == [
        ("PRESS-04", "Corrective", datetime(2025, 6, 5, 20, 30, tzinfo=UTC), datetime(2025, 6, 5, 23, 0, tzinfo=UTC),
         Decimal("2.50"), Decimal("1280.00"), Decimal("162.50"), "ELEC_FAIL", "M. Weber")]
    # a 'maintenance' event per work order, emitted by the import for its batch (migration 0009)
    assert [(e[1], e[2], e[4]) for e in events(plant)] == [("created", first, "false")] * 7

    # The same file again writes nothing, not even a batch.
    code, out, _ = cli(capsys, "import", "maintenance", str(export), "--dsn", plant.dsn)
    assert code == 0 and "written:   0 inserted, 0 updated, 7 unchanged" in out and "batch:     none" in out
    assert sql(plant, "SELECT count(*) FROM record_import_batch WHERE kind = 'maintenance'") == [(1,)]

    # An edited file: one row changed, one added.
    edited = export.read_bytes().replace(b"4000125;PRESS-02;Preventive;04.06.2025 14:00;04.06.2025 15:00;1;",
                                         b"4000125;PRESS-02;Preventive;04.06.2025 14:00;04.06.2025 15:00;1,25;")
    edited += b"4000129;PRESS-05;PM;06.06.2025 06:00;06.06.2025 07:00;1;;;;A. Novak;Filter change\r\n"
    path = tmp_path / "edited.csv"
    path.write_bytes(edited)
    code, out, _ = cli(capsys, "import", "maintenance", str(path), "--dsn", plant.dsn)
    assert code == 0 and "written:   1 inserted, 1 updated, 6 unchanged" in out
    second = batch_of(out)
    audit = sql(plant, "SELECT record_key, action, old_values ->> 'labor_hours', new_values ->> 'labor_hours' "
                       "FROM record_import_audit WHERE batch_id = $1 ORDER BY record_key", second)
    assert audit == [("4000125", "update", "1.00", "1.25"), ("4000129", "insert", None, None)]
    # the edit is an 'updated' event with the new values, the new work order a 'created' one
    edit_events = sorted((e for e in events(plant) if e[2] == second), key=lambda e: e[3]["workOrderNumber"])
    assert [(e[3]["workOrderNumber"], e[1], e[3]["laborHours"]) for e in edit_events] == [
        ("4000125", "updated", 1.25), ("4000129", "created", 1.0)]

    # The first batch cannot be taken back while the second changed one of its records.
    code, _, err = cli(capsys, "import", "undo", first, "--dsn", plant.dsn)
    assert code == 2 and f"later batches changed records of batch {first}; undo them first: {second}" in err

    code, out, _ = cli(capsys, "import", "undo", second, "--dsn", plant.dsn)
    assert code == 0 and "1 deleted, 1 restored, 2 events emitted" in out
    # the undo takes the edit's events back: the restored values, the inserted work order deleted
    undo_events = sorted((e for e in events(plant) if e[2] == second and e[4] == "true"),
                         key=lambda e: e[3]["workOrderNumber"])
    assert [(e[3]["workOrderNumber"], e[1], e[3]["laborHours"], e[3]["retracts"]) for e in undo_events] == [
        ("4000125", "updated", 1.0, [edit_events[0][0]]), ("4000129", "deleted", 1.0, [edit_events[1][0]])]
    assert sql(plant, "SELECT record_key, labor_hours FROM fact_maintenance WHERE record_key IN "
                      "('4000125', '4000129')") == [("4000125", Decimal("1.00"))]
    code, out, _ = cli(capsys, "import", "undo", first, "--dsn", plant.dsn)
    assert code == 0 and "7 deleted, 0 restored, 7 events emitted" in out
    assert sorted(e[1] for e in events(plant) if e[2] == first and e[4] == "true") == ["deleted"] * 7
    assert sql(plant, "SELECT count(*) FROM fact_maintenance WHERE record_key IS NOT NULL") == [(0,)]
    code, _, err = cli(capsys, "import", "undo", first, "--dsn", plant.dsn)
    assert code == 2 and "was undone already" in err
    # the undo is in the audit log too
    assert sql(plant, "SELECT action, count(*) FROM record_import_audit WHERE batch_id = $1 AND undo "
                      "GROUP BY action", first) == [("delete", 7)]


def test_scrap_keys_formats_and_production(plant: Database, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    async def production() -> int:
        conn = await asyncpg.connect(plant.dsn)
        try:
            ident: int = await conn.fetchval(
                "INSERT INTO fact_production (equipment_id, date_id, shift_id, start_time, end_time, "
                "planned_production_time, operating_time, planned_parts, total_parts_produced, good_parts) "
                "SELECT e.equipment_id, 20250603, s.shift_id, '2025-06-03 04:00Z', '2025-06-03 12:00Z', 1, 1, 1, 1, 1 "
                "FROM dim_equipment e, dim_shift s WHERE e.equipment_code = 'PRESS-02' AND s.shift_code = 'EARLY' "
                "RETURNING production_id")
            return ident
        finally:
            await conn.close()
    record = asyncio.run(production())
    code, out, _ = cli(capsys, "import", "scrap", str(RECORDS / "scrap-mes.jsonl"), "--dsn", plant.dsn)
    assert code == 0 and "(UTF-8, JSON lines)" in out and "written:   2 inserted" in out
    assert "warning:   1 scrap records fall in no production record" in out
    assert sql(plant, "SELECT record_key, production_id, scrap_qty, scrap_cost, recorded_at FROM fact_scrap "
                      "WHERE record_key LIKE 'MES-%' ORDER BY record_key") == [
        ("MES-77001", record, 5, Decimal("7.00"), datetime(2025, 6, 3, 8, 30, tzinfo=UTC)),
        ("MES-77002", None, 3, None, datetime(2025, 6, 3, 12, 0, tzinfo=UTC))]
    # Without an id of their own, records are keyed by equipment + time + reason: the same record written in
    # UTC instead of local time is the same record.  A semicolon file with decimal commas, Excel serial dates.
    first = write(tmp_path, "a.csv", "Equipment;Time;Qty;Reason;Cost\nPRESS-02;2025-06-03 10:00;4;SC-DENT;5,60\n"
                                     "PRESS-02;45811,5;2;SC-DIM;1.234,5\n")
    code, out, _ = cli(capsys, "import", "scrap", str(first), "--dsn", plant.dsn)
    assert code == 0 and "delimiter ';'" in out and "written:   2 inserted" in out
    again = write(tmp_path, "b.csv", "equipment,time,qty,reason,cost\nPRESS-02,2025-06-03T08:00:00Z,4,SC-DENT,5.60\n")
    code, out, _ = cli(capsys, "import", "scrap", str(again), "--dsn", plant.dsn)
    assert code == 0 and "written:   0 inserted, 0 updated, 1 unchanged" in out
    # 45811.5 is 2025-06-03 12:00 in Berlin (Excel counts days from 1899-12-30)
    assert sql(plant, "SELECT recorded_at, scrap_cost, production_id FROM fact_scrap WHERE scrap_code = 'SC-DIM' "
                      "AND record_key LIKE 'PRESS-02|%'") == [
        (datetime(2025, 6, 3, 10, 0, tzinfo=UTC), Decimal("1234.50"), record)]


@pytest.mark.parametrize("superuser", [True, False], ids=["superuser", "plain-role"])
def test_scrap_dry_run_edit_audit_and_undo(plant: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           superuser: bool) -> None:
    """The scrap merge's two ways of writing: without the per-row foreign-key triggers (a superuser: it checks
    the references once per id itself) and with them (a role that may not set session_replication_role)."""
    dsn, prefix = plant.dsn, "SU" if superuser else "PR"
    if not superuser:
        role = f"records_{uuid.uuid4().hex[:8]}"
        sql(plant, f"CREATE ROLE {role} LOGIN")
        sql(plant, f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}")
        sql(plant, f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}")
        dsn = plant.dsn.replace("postgres@", f"{role}@", 1)
    rows = [f"{prefix}-1,PRESS-04,2025-06-03 10:00,BRACKET-A,3,SC-BURR,1.50\n",
            f"{prefix}-2,PRESS-04,2025-06-03 11:00,,2,SC-DENT,\n"]
    try:
        path = write(tmp_path, "scrap.csv", SCRAP_HEADER + "".join(rows))
        code, out, _ = cli(capsys, "import", "scrap", str(path), "--dry-run", "--dsn", dsn)
        assert code == 0 and "written:   2 would be inserted, 0 would be updated, 0 unchanged" in out
        assert "warning:   2 scrap records fall in no production record" in out and "nothing was written" in out
        code, out, _ = cli(capsys, "import", "scrap", str(path), "--dsn", dsn)
        assert code == 0 and "written:   2 inserted, 0 updated, 0 unchanged" in out
        first = batch_of(out)

        edited = write(tmp_path, "edited.csv", SCRAP_HEADER + rows[0] + rows[1].replace(",2,", ",7,")
                       + f"{prefix}-3,PRESS-04,2025-06-03 12:00,,1,SC-DIM,\n")
        code, out, _ = cli(capsys, "import", "scrap", str(edited), "--dry-run", "--dsn", dsn)
        assert code == 0 and "written:   1 would be inserted, 1 would be updated, 1 unchanged" in out
        code, out, _ = cli(capsys, "import", "scrap", str(edited), "--dsn", dsn)
        assert code == 0 and "written:   1 inserted, 1 updated, 1 unchanged" in out
        second = batch_of(out)
        assert sql(plant, "SELECT record_key, action, old_values ->> 'scrap_qty', new_values ->> 'scrap_qty' "
                          "FROM record_import_audit WHERE batch_id = $1 ORDER BY record_key", second) == [
            (f"{prefix}-2", "update", "2", "7")]  # a scrap insert is not audited: the record carries its batch
        assert sql(plant, "SELECT record_key, import_batch::text FROM fact_scrap WHERE record_key LIKE $1 "
                          "ORDER BY 1", f"{prefix}-%") == [(f"{prefix}-1", first), (f"{prefix}-2", second),
                                                           (f"{prefix}-3", second)]
        # the first batch's insert of -2 was changed by the second: undo that one first
        code, _, err = cli(capsys, "import", "undo", first, "--dsn", dsn)
        assert code == 2 and f"later batches changed records of batch {first}; undo them first: {second}" in err

        code, out, _ = cli(capsys, "import", "undo", second, "--dsn", dsn)
        assert code == 0 and "1 deleted, 1 restored" in out
        assert sql(plant, "SELECT record_key, scrap_qty, import_batch::text FROM fact_scrap WHERE record_key LIKE "
                          "$1 ORDER BY 1", f"{prefix}-%") == [(f"{prefix}-1", 3, first), (f"{prefix}-2", 2, first)]
        code, out, _ = cli(capsys, "import", "undo", first, "--dsn", dsn)
        assert code == 0 and "2 deleted, 0 restored" in out
    finally:
        if not superuser:
            sql(plant, f"DROP OWNED BY {role}")
            sql(plant, f"DROP ROLE {role}")


def test_scrap_written_in_chunks_while_read(plant: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The streamed path with chunks of two records: a key again in a later chunk, or in the same one, is
    reported with its line and nothing of the file is kept, though earlier chunks were written already; a
    clean file counts its inserts, changes and unchanged records across chunks."""
    monkeypatch.setattr(importer, "CHUNK", 2)
    rows = [f"C-{i},PRESS-05,2025-06-03 1{i}:00,,{i},SC-BURR,\n" for i in range(1, 6)]
    before = sql(plant, "SELECT count(*) FROM fact_scrap")
    for text, error in ((rows[0] + rows[1] + rows[2] + rows[0].replace(",1,", ",9,"), "5: scrap_id: 'C-1' appears "
                         "again (first on line 2)"),
                        (rows[0] + rows[1] + rows[2] + rows[2], "5: scrap_id: 'C-3' appears again (first on line 4)"),
                        (rows[0] + rows[1] + rows[2].replace("SC-BURR", "SC-BUR"),
                         "4: reason: unknown scrap reason 'SC-BUR'; did you mean SC-BURR?")):
        path = write(tmp_path, "chunks.csv", SCRAP_HEADER + text)
        code, _, err = cli(capsys, "import", "scrap", str(path), "--dsn", plant.dsn)
        assert code == 2 and err.splitlines()[0] == f"{path}:{error}", err
        assert sql(plant, "SELECT count(*) FROM fact_scrap") == before
    path = write(tmp_path, "chunks.csv", SCRAP_HEADER + "".join(rows[:3]))
    code, out, _ = cli(capsys, "import", "scrap", str(path), "--dsn", plant.dsn)
    assert code == 0 and "written:   3 inserted, 0 updated, 0 unchanged" in out
    path = write(tmp_path, "chunks.csv", SCRAP_HEADER + rows[0] + rows[1].replace(",2,", ",7,") + "".join(rows[2:]))
    code, out, _ = cli(capsys, "import", "scrap", str(path), "--dsn", plant.dsn)
    assert code == 0 and "written:   2 inserted, 1 updated, 2 unchanged" in out
    assert sql(plant, "SELECT record_key, scrap_qty FROM fact_scrap WHERE record_key LIKE 'C-%' ORDER BY 1") == [
        ("C-1", 1), ("C-2", 7), ("C-3", 3), ("C-4", 4), ("C-5", 5)]
    code, out, _ = cli(capsys, "import", "undo", batch_of(out), "--dsn", plant.dsn)
    assert code == 0 and "2 deleted, 1 restored" in out
    code, out, _ = cli(capsys, "import", "undo", sql(plant, "SELECT import_batch::text FROM fact_scrap WHERE "
                                                            "record_key = 'C-1'")[0][0], "--dsn", plant.dsn)
    assert code == 0 and "3 deleted, 0 restored" in out
    assert sql(plant, "SELECT count(*) FROM fact_scrap") == before


def test_skip_bad_writes_the_good_rows_and_a_rejects_file(plant: Database, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "mixed.csv", SCRAP_HEADER + "K-1,PRESS-03,2025-06-03 10:00,,1,SC-BURR,\n"
                                                       "K-2,PRESS-03,2025-06-03 10:00,,-1,SC-BURR,\n"
                                                       "K-1,PRESS-03,2025-06-03 11:00,,1,SC-BURR,\n"
                                                       "K-3,PRESS-03,2025-06-03 12:00,,1,SC-BURR,\n")
    code, out, err = cli(capsys, "import", "scrap", str(path), "--skip-bad", "--dsn", plant.dsn)
    assert code == 0
    assert err.splitlines() == [f"{path}:3: quantity: must not be negative, got -1",
                                f"{path}:4: scrap_id: 'K-1' appears again (first on line 2)"]
    assert "rows:      4 read, 2 rejected" in out and "written:   2 inserted" in out
    rejects = tmp_path / "mixed.csv.rejects.csv"
    assert f"rejects:   2 rows in {rejects}" in out
    assert rejects.read_text().splitlines() == [
        "scrap_id,equipment,time,product,quantity,reason,cost,error",
        "K-2,PRESS-03,2025-06-03 10:00,,-1,SC-BURR,,\"quantity: must not be negative, got -1\"",
        "K-1,PRESS-03,2025-06-03 11:00,,1,SC-BURR,,scrap_id: 'K-1' appears again (first on line 2)"]
    assert sql(plant, "SELECT record_key FROM fact_scrap WHERE record_key LIKE 'K-%' ORDER BY 1") == [("K-1",), ("K-3",)]


def test_legacy_equipment_as_the_migration_guide_says(plant: Database, capsys: pytest.CaptureFixture[str]) -> None:
    rows = sql(plant, "SELECT e.equipment_code, e.equipment_name, e.equipment_type, w.work_center_code, "
                      "e.manufacturer, e.criticality_level, e.attributes ->> 'legacy_id', "
                      "e.attributes ? 'import_batch', e.attributes ? 'import_date' FROM dim_equipment e "
                      "JOIN dim_work_center w USING (work_center_id) WHERE e.attributes ? 'legacy_id' ORDER BY 1")
    assert rows == [  # Latin-1 read as such; the work center by code or by name
        ("10004711", "Richtpresse Süd", "press", "LINE-1", "Schuler", "High", "10004711", True, True),
        ("10004712", "Entgratstation", "deburring", "LINE-2", None, "Medium", "10004712", True, True),
        ("10004713", "Prüfstand Härte", "test bench", "LINE-3", "Zwick", "Low", "10004713", True, True),
    ]
    code, out, _ = cli(capsys, "import", "equipment", str(RECORDS / "legacy-equipment.csv"), "--dsn", plant.dsn)
    assert code == 0 and "(Latin-1 (not UTF-8), delimiter ';')" in out and "0 inserted, 0 updated, 3 unchanged" in out


def test_config_instead_of_dsn(plant: Database, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("INGESTOR_DATABASE_URL", plant.dsn)
    code, out, _ = cli(capsys, "import", "equipment", str(RECORDS / "legacy-equipment.csv"),
                       "-c", str(REPO / "config" / "demo.yaml"))
    assert code == 0 and "3 unchanged" in out


# ------------------------------------------------------------------------------------------------------------
# Encodings and values, without a database
# ------------------------------------------------------------------------------------------------------------

def test_encodings_are_detected_and_named(tmp_path: Path) -> None:
    text = "equipment;reason\nPRESS-01;Grat außen\n"
    cases = [("utf-8", b"", "UTF-8"), ("utf-8", b"\xef\xbb\xbf", "UTF-8 with BOM"),
             ("latin-1", b"", "Latin-1 (not UTF-8)")]
    for encoding, prefix, label in cases:
        path = tmp_path / f"{label}.csv"
        path.write_bytes(prefix + text.encode(encoding))
        assert detect_encoding(path).label == label
        source = RecordFile(path)
        assert source.header == ["equipment", "reason"] and list(source.rows()) == [(2, ["PRESS-01", "Grat außen"])]
    path = tmp_path / "excel.csv"
    path.write_bytes("equipment,cost\nPRESS-01,5 €\n".encode("cp1252"))
    assert detect_encoding(path).label == "Windows-1252 (not UTF-8)"
    assert list(RecordFile(path).rows()) == [(2, ["PRESS-01", "5 €"])]


def test_quoted_fields_across_lines_keep_their_first_line(tmp_path: Path) -> None:
    path = write(tmp_path, "q.csv", 'a,b\n1,"two\nlines"\n\n3,x\n')
    assert list(RecordFile(path).rows()) == [(2, ["1", "two\nlines"]), (5, ["3", "x"])]


def test_numbers_as_people_write_them() -> None:
    assert [parse_decimal(t) for t in ("12.5", "12,5", "1.280,00", "1,280.00", "1 280,5", "-3")] == [
        Decimal("12.5"), Decimal("12.5"), Decimal("1280.00"), Decimal("1280.00"), Decimal("1280.5"), Decimal(-3)]
    assert parse_int("1000") == 1000 and parse_int("12,0") == 12 and parse_int("12.0") == 12
    with pytest.raises(ValueError, match="ambiguous"):
        parse_int("1.000")
    with pytest.raises(ValueError, match="not a number"):
        parse_decimal("12 kg")


def test_times_as_people_write_them() -> None:
    utc = datetime(2025, 6, 3, 8, 0, tzinfo=UTC)
    for text in ("2025-06-03 10:00", "2025-06-03T10:00:00", "03.06.2025 10:00", "3.6.2025 10:00:00",
                 "2025-06-03T08:00:00Z", "2025-06-03T10:00+02:00", "45811.4166666667", "45811,4166666667"):
        assert parse_time(text, BERLIN) == utc, text
    assert parse_time("03/06/2025 10:00", BERLIN, "dmy") == utc
    assert parse_time("06/03/2025 10:00", BERLIN, "mdy") == utc
    # clocks going back: 02:30 exists twice on 26 October 2025; the first (summer time) is taken
    assert parse_time("2025-10-26 02:30", BERLIN) == datetime(2025, 10, 26, 0, 30, tzinfo=UTC)
    assert json.dumps(str(parse_time("2025-01-15", BERLIN))) == '"2025-01-14 23:00:00+00:00"'
