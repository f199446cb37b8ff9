"""The in-process pipeline: the bounded queue (backpressure) and the spooler (batches by rows and age,
acknowledgments only once a batch is durable), with a real spool file and no database."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from ingestor.contract import Reading
from ingestor.database.copy_format import decode_row, split_rows
from ingestor.database.dimensions import DimensionKeys
from ingestor.pipeline import metrics
from ingestor.pipeline.config import PipelineConfig
from ingestor.pipeline.queue import ReadingQueue
from ingestor.pipeline.spool import AsyncSpool, Spool
from ingestor.pipeline.spooler import Spooler


def readings(n: int, start: int = 0, equipment: str = "M1") -> list[Reading]:
    return [Reading(equipment, "p", float(i), 1_700_000_000_000_000 + i, "degC") for i in range(start, start + n)]


@pytest.fixture
async def spooled(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A queue, an open spool and a spooler with keys for M1 (not M2)."""
    def make(**settings: object) -> tuple[ReadingQueue, AsyncSpool, Spooler]:
        config = PipelineConfig(spool_dir=tmp_path, **settings)  # type: ignore[arg-type]
        queue = ReadingQueue(config.queue_size)
        spool = AsyncSpool(Spool(tmp_path, "test"))
        return queue, spool, Spooler(queue, spool, config)

    made: list[AsyncSpool] = []

    async def factory(**settings: object) -> tuple[ReadingQueue, AsyncSpool, Spooler]:
        queue, spool, spooler = make(**settings)
        await spool.open()
        await spooler.update_keys("db-1", DimensionKeys(equipment={"M1": 11}, units={"degC": 3}))
        made.append(spool)
        return queue, spool, spooler

    yield factory
    for spool in made:
        await spool.close()


async def test_batches_are_cut_at_batch_rows_without_splitting_a_put(spooled) -> None:  # type: ignore[no-untyped-def]
    queue, spool, spooler = await spooled(batch_rows=100, batch_age=5.0)
    for i in range(10):
        await queue.put(readings(30, i * 30), None, "c")
    task = asyncio.create_task(spooler.run())
    await queue.close()
    await asyncio.wait_for(task, 5)
    batches = spool.spool.read(0, 10**9, 100)
    assert [s.row_count for s in batches] == [90, 90, 90, 30]
    values = [decode_row(row)["value"] for s in batches for row in split_rows(s.rows)]
    assert values == [float(i) for i in range(300)]
    first = decode_row(next(split_rows(batches[0].rows)))
    assert first == {"equipment_id": 11, "parameter": "p", "unit_id": 3, "quality": 0,
                     "timestamp_us": 1_700_000_000_000_000, "value": 0.0}


async def test_a_partial_batch_leaves_after_batch_age(spooled) -> None:  # type: ignore[no-untyped-def]
    queue, spool, spooler = await spooled(batch_rows=1000, batch_age=0.2)
    task = asyncio.create_task(spooler.run())
    started = time.monotonic()
    acked = asyncio.Event()
    await queue.put(readings(5), acked.set, "c")
    await asyncio.wait_for(acked.wait(), 5)
    assert 0.15 <= time.monotonic() - started < 2.0
    assert spool.spool.readings == 5
    await queue.close()
    await asyncio.wait_for(task, 5)


async def test_acknowledged_only_once_durable_and_unknown_equipment_travels_as_pending(spooled) -> None:  # type: ignore[no-untyped-def]
    queue, spool, spooler = await spooled(batch_rows=10, batch_age=0.01)
    acked: list[int] = []
    for i in range(3):
        await queue.put(readings(5, i * 5) + readings(1, 100 + i, equipment="M2"), lambda i=i: acked.append(i), "c")
    assert acked == []  # nothing is acknowledged before it is in the spool
    task = asyncio.create_task(spooler.run())
    await queue.close()
    await asyncio.wait_for(task, 5)
    assert acked == [0, 1, 2]
    batches = spool.spool.read(0, 10**9, 100)
    assert sum(s.row_count for s in batches) == 15
    pending = [p for s in batches for p in (s.pending or [])]
    assert [(p[0], p[2], p[6]) for p in pending] == [("M2", 100.0, "unknown_equipment"),
                                                     ("M2", 101.0, "unknown_equipment"),
                                                     ("M2", 102.0, "unknown_equipment")]


async def test_interval_durability_acknowledges_after_the_next_fsync(spooled, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The acknowledgment waits for an fsync of the WAL that came after the batch was stored.  The real
    ``os.fsync`` runs; the wrapper only notes which file it synced (a ``Spool.sync`` doing nothing fails)."""
    queue, spool, spooler = await spooled(batch_rows=10, batch_age=0.01, durability="interval", fsync_interval=0.3)
    events: list[str] = []
    real_fsync = os.fsync

    def noting_fsync(fd: int) -> None:
        real_fsync(fd)
        events.append("fsync " + os.readlink(f"/proc/self/fd/{fd}"))

    monkeypatch.setattr(os, "fsync", noting_fsync)
    acked = asyncio.Event()

    def acknowledge() -> None:
        events.append("ack")
        acked.set()

    task = asyncio.create_task(spooler.run())
    started = time.monotonic()
    await queue.put(readings(3), acknowledge, "c")
    await asyncio.wait_for(acked.wait(), 5)
    assert time.monotonic() - started >= 0.25
    assert spool.spool.batches == 1
    wal = f"fsync {spool.spool.path}-wal"
    assert wal in events and events.index(wal) < events.index("ack"), events
    await queue.close()
    await asyncio.wait_for(task, 5)


async def test_a_full_queue_makes_the_connector_wait_and_counts_it() -> None:
    queue = ReadingQueue(100)
    before = metrics.QUEUE_FULL_WAITS.labels("slow")._value.get()
    await queue.put(readings(80), None, "slow")
    blocked = asyncio.create_task(queue.put(readings(40, 80), None, "slow"))
    await asyncio.sleep(0.05)
    assert not blocked.done() and len(queue) == 80
    assert metrics.QUEUE_FULL_WAITS.labels("slow")._value.get() == before + 1
    batch = await queue.take(100, 0.0)
    assert sum(len(e.readings) for e in batch) == 80
    await asyncio.wait_for(blocked, 1)
    assert len(queue) == 40


async def test_put_after_close_is_refused() -> None:
    queue = ReadingQueue(10)
    await queue.close()
    with pytest.raises(RuntimeError):
        await queue.put(readings(1), None, "c")


def test_a_spool_written_before_the_rename_keeps_its_unwritten_batches(tmp_path: Path) -> None:
    """Spools of 0.1 kept batches in a table named ``segment``.  Opening one renames it in place: the readings
    waiting in it are still there, and sequence numbers go on from where they were (never reused)."""
    import sqlite3

    from ingestor.database.copy_format import RowEncoder

    rows, count, _ = RowEncoder({"M1": 11}, {"degC": 3}).encode(readings(3))
    old = sqlite3.connect(tmp_path / Spool.FILE_NAME)
    old.executescript("""
        CREATE TABLE segment (seq INTEGER PRIMARY KEY AUTOINCREMENT, created_us INTEGER NOT NULL,
                              epoch INTEGER NOT NULL, row_count INTEGER NOT NULL, rows BLOB NOT NULL, pending TEXT);
        CREATE TABLE key_epoch (epoch INTEGER PRIMARY KEY, database TEXT NOT NULL, equipment TEXT NOT NULL,
                                units TEXT NOT NULL, created_us INTEGER NOT NULL);
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('spool_id', '6f1c2f1e-0000-4000-8000-000000000001');
    """)
    for seq in (1, 2, 3):
        old.execute("INSERT INTO segment VALUES (?, 1, 1, ?, ?, NULL)", (seq, count, rows))
    old.execute("DELETE FROM segment WHERE seq = 1")  # committed and forgotten before the upgrade
    old.commit()
    old.close()

    spool = Spool(tmp_path, "test")
    spool.open()
    try:
        assert spool.spool_id == "6f1c2f1e-0000-4000-8000-000000000001"
        assert (spool.batches, spool.readings) == (2, 6)
        assert [b.seq for b in spool.read(0, 10**9)] == [2, 3]
        assert spool.append(rows, count, None, 0, 1, 2) == 4
        tables = {name for (name,) in spool.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert "segment" not in tables and "batch" in tables
    finally:
        spool.close()
