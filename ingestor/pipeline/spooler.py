"""The spooler: takes batches from the in-memory queue, encodes them once, stores them in the durable spool,
and acknowledges them to their connectors.

A batch is up to ``batch_rows`` readings, or whatever arrived within ``batch_age`` of its first reading.  Its
readings are encoded into binary COPY rows with the latest dimension keys (remembered in the spool, so this
works while the database is down); readings for equipment those keys do not know yet, or that can never be
stored, travel in the same batch as JSON with their reason.  Once the batch is durable (fsynced, per
``pipeline.durability``) the connectors' ``on_durable`` callbacks run: that is when MQTT acknowledges.

When the spool reaches ``spool_max_bytes`` the ``spool_full`` policy applies: ``backpressure`` waits for the
writer to make room (the queue fills, connectors wait), ``drop_oldest`` deletes the oldest unwritten batches,
``drop_newest`` drops the incoming batch.  Every dropped reading is counted by reason.

A full disk is a full spool: the spool's effective limit is the smaller of ``spool_max_bytes`` and what its
file system still has room for, less a reserve (:meth:`~ingestor.pipeline.spool.Spool.disk`), and the same
policy applies.  The writer keeps draining meanwhile; space comes back as it deletes committed batches (or as
something else frees the disk: the spooler looks again every second), and the spooler resumes by itself.  A
write that finds the disk full anyway waits the same way and is retried.  At startup it warns when the file
system is smaller than ``spool_max_bytes``.

At shutdown (the queue closed) a full spool is waited for at most ``shutdown_timeout``: what is still queued
after that is not spooled and not acknowledged (an MQTT broker redelivers it), counted as dropped with reason
``shutdown_spool_full``, so that a daemon whose database is down and whose disk is full still stops.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from ingestor.contract import Reading, get_logger, now_us
from ingestor.contract.timeouts import wait_for
from ingestor.database.copy_format import RowEncoder
from ingestor.database.dimensions import DimensionKeys
from ingestor.pipeline import metrics
from ingestor.pipeline.config import PipelineConfig
from ingestor.pipeline.queue import Entry, ReadingQueue
from ingestor.pipeline.spool import AsyncSpool, DiskFull, DiskSpace, KeyEpoch

log = get_logger(__name__)

RESOLVABLE = frozenset({"unknown_equipment", "unresolved"})
"""Pending reasons the writer retries with the database's current keys; any other reason is final."""

DISK_RECHECK = 1.0
"""Seconds between looks at the disk while waiting for room: space freed by something else sends no signal."""


class Spooler:
    """Moves batches from the queue into the spool."""

    def __init__(self, queue: ReadingQueue, spool: AsyncSpool, config: PipelineConfig) -> None:
        self._queue = queue
        self._spool = spool
        self._config = config
        self.encoder: RowEncoder | None = None
        self.epoch: KeyEpoch | None = None
        self.wake_writer = asyncio.Event()
        self.room = asyncio.Condition()
        self.inflight_through = 0          # set by the writer: batches at or below it are being committed
        self.dropped: dict[str, int] = {}
        self.spooled = 0
        self.finished = asyncio.Event()
        self._unsynced: list[Callable[[], None]] = []
        self._full_logged = False
        self.disk: DiskSpace | None = None
        self._give_up_at: float | None = None  # at shutdown: when to stop waiting for room

    async def load_keys(self) -> None:
        """Use the keys remembered in the spool (from the last dimension sync), if any."""
        epoch = await self._spool.call(self._spool.spool.latest_epoch)
        if epoch is not None:
            self._use(epoch)

    async def update_keys(self, database_id: str, keys: DimensionKeys) -> KeyEpoch:
        """Remember the keys of a fresh dimension sync and encode with them from now on."""
        epoch: KeyEpoch = await self._spool.call(
            self._spool.spool.record_epoch, database_id, dict(keys.equipment), dict(keys.units))
        self._use(epoch)
        return epoch

    def _use(self, epoch: KeyEpoch) -> None:
        self.epoch = epoch
        self.encoder = RowEncoder(epoch.equipment, epoch.units)

    async def run(self) -> None:
        """Until the queue is closed and drained."""
        syncer = asyncio.create_task(self._sync_periodically()) if self._config.durability == "interval" else None
        disk = await self._look_at_disk()
        if disk.total < self._config.spool_max_bytes:
            log.warning("the spool's file system is smaller than spool_max_bytes; the spool is limited by its free "
                        "space", spool_dir=str(self._spool.spool.directory), file_system_bytes=disk.total,
                        free_bytes=disk.free, spool_max_bytes=self._config.spool_max_bytes,
                        reserve_bytes=disk.reserve)
        try:
            while True:
                entries = await self._queue.take(self._config.batch_rows, self._config.batch_age)
                if not entries:
                    break
                await self._store(entries)
        finally:
            if syncer is not None:
                syncer.cancel()
                await asyncio.gather(syncer, return_exceptions=True)
                await self._sync()
            self.finished.set()
            self.wake_writer.set()

    async def _store(self, entries: list[Entry]) -> None:
        readings = [reading for entry in entries for reading in entry.readings]
        age_us = int((time.monotonic() - entries[0].accepted_at) * 1_000_000)
        created_us = now_us() - age_us
        if self.encoder is not None:
            rows, row_count, refused = self.encoder.encode(readings)
        else:  # never synced with the database: keep the readings as they are until the writer can resolve them
            rows, row_count, refused = b"", 0, [(reading, "unresolved") for reading in readings]
        pending_text = json.dumps([_pending(reading, reason) for reading, reason in refused]) if refused else None
        size = len(rows) + (len(pending_text) if pending_text else 0)
        room = await self._make_room(size, len(readings))
        if room is None:  # shutting down with no room: never durable, so never acknowledged
            self._count_dropped("shutdown_spool_full", len(readings))
            return
        if not room:
            self._acknowledge(entries)  # dropped by policy: the connectors must not hold them forever
            return
        epoch = self.epoch.epoch if self.epoch is not None else 0
        while True:
            started = time.monotonic()
            try:
                await self._spool.call(self._spool.spool.append, rows, row_count, pending_text, len(refused), epoch,
                                       created_us)
                break
            except DiskFull as exc:  # the disk filled faster than measured: wait as for a full spool
                self._log_full("disk", error=str(exc))
                if self._giving_up():
                    self._count_dropped("shutdown_spool_full", len(readings))
                    return
                await self._wait_for_room()
        metrics.SPOOL_SECONDS.observe(time.monotonic() - started)
        metrics.READINGS_SPOOLED.inc(len(readings))
        self.spooled += len(readings)
        self._update_gauges()
        if self._config.durability == "batch":
            self._acknowledge(entries)
        else:
            self._unsynced.extend(entry.on_durable for entry in entries if entry.on_durable is not None)
        self.wake_writer.set()

    async def _look_at_disk(self) -> DiskSpace:
        self.disk = await self._spool.call(self._spool.spool.disk)
        metrics.SPOOL_FREE_BYTES.set(self.disk.free)
        return self.disk

    async def _full(self, size: int) -> str | None:
        """Why a batch of ``size`` bytes does not fit now: "limit" (``spool_max_bytes``; a batch bigger than the
        whole limit is still let into an empty spool), "disk", or None when it fits."""
        spool = self._spool.spool
        if spool.bytes_used + size > self._config.spool_max_bytes and spool.batches:
            return "limit"
        if not (await self._look_at_disk()).fits(size):
            return "disk"
        return None

    def _log_full(self, cause: str, **details: object) -> None:
        if self._full_logged:
            return
        spool = self._spool.spool
        disk = self.disk
        log.warning("spool full" if cause == "limit" else "spool full: its file system has no more room",
                    policy=self._config.spool_full, bytes=spool.bytes_used, limit=self._config.spool_max_bytes,
                    free_bytes=None if disk is None else disk.free, readings_waiting=spool.readings, **details)
        self._full_logged = True

    async def _wait_for_room(self) -> None:
        """Until the writer frees space, or a second passes (the disk may have been freed by something else)."""
        async with self.room:
            try:
                await wait_for(self.room.wait(), DISK_RECHECK)
            except TimeoutError:
                pass

    def _giving_up(self) -> bool:
        """At shutdown, once ``shutdown_timeout`` passed without room: stop waiting for it."""
        if not self._queue.closed:
            return False
        if self._give_up_at is None:
            self._give_up_at = time.monotonic() + self._config.shutdown_timeout
        if time.monotonic() < self._give_up_at:
            return False
        if self._give_up_at > 0:
            log.warning("shutting down with the spool full: readings still queued are not spooled (nor "
                        "acknowledged)", readings_queued=len(self._queue), timeout_s=self._config.shutdown_timeout)
            self._give_up_at = 0.0
        return True

    async def _make_room(self, size: int, readings: int) -> bool | None:
        """True: the batch fits (now); False: dropped by the policy; None: shutting down without room."""
        spool = self._spool.spool
        cause = await self._full(size)
        if cause is None:
            self._full_logged = False
            return True
        policy = self._config.spool_full
        self._log_full(cause)
        if policy == "drop_newest":
            self._count_dropped("spool_full_drop_newest", readings)
            return False
        while await self._full(size) is not None:
            if policy == "drop_oldest":
                seq, count = await self._spool.call(spool.drop_oldest, self.inflight_through)
                if seq:
                    self._count_dropped("spool_full_drop_oldest", count)
                    continue
            if self._giving_up():
                return None
            await self._wait_for_room()  # backpressure (or every droppable batch is being written)
        self._update_gauges()
        return True

    def _count_dropped(self, reason: str, count: int) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + count
        metrics.READINGS_DROPPED.labels(reason).inc(count)

    def _acknowledge(self, entries: list[Entry]) -> None:
        for entry in entries:
            if entry.on_durable is not None:
                entry.on_durable()

    async def _sync_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._config.fsync_interval)
            await self._sync()

    async def _sync(self) -> None:
        if not self._unsynced:
            return
        callbacks, self._unsynced = self._unsynced, []
        await self._spool.call(self._spool.spool.sync)
        for callback in callbacks:
            callback()

    def _update_gauges(self) -> None:
        metrics.SPOOL_BYTES.set(self._spool.spool.bytes_used)
        metrics.SPOOL_READINGS.set(self._spool.spool.readings)

    async def space_freed(self) -> None:
        """The writer deleted committed batches."""
        self._update_gauges()
        async with self.room:
            self.room.notify_all()


def _pending(reading: Reading, reason: str) -> list[Any]:
    return [reading.equipment, reading.parameter, reading.value, reading.timestamp_us, reading.unit,
            int(reading.quality), reason]
