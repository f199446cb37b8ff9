"""The writer: moves spool segments into the database, in order, exactly once.

It owns the database connection (through :class:`~ingestor.sink.DatabaseSink`).  After every (re)connect it
reads this spool's watermark, deletes the spool segments at or below it (committed before a crash, not yet
deleted), and makes sure the spool will never hand out a sequence number at or below it again.  Then it reads
the oldest segments, up to ``write_rows`` rows at a time (so a backlog drains in large transactions, much
faster than real time), commits them with the new watermark in one transaction, and deletes them from the
spool.  While the database is down it retries with capped exponential backoff and jitter; the spool keeps
accepting readings meanwhile.

Segments encoded with keys from an older dimension sync are written as they are when the keys still agree
(the usual case: ids never change in one database), and re-keyed row by row otherwise (the daemon was pointed
at another database).  Pending readings (equipment unknown when spooled) are encoded with the current keys or
dead-lettered.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import asyncpg

from ingestor import metrics
from ingestor.config_types import ReconnectConfig
from ingestor.copy_format import decode_row, rekey_row, split_rows
from ingestor.logs import get_logger
from ingestor.pipeline import PipelineConfig
from ingestor.readings import Quality, Reading, now_us
from ingestor.sink import DatabaseSink, DeadLetter, InstanceBusy, WatermarkMoved
from ingestor.spool import AsyncSpool, KeyEpoch, Segment
from ingestor.spooler import RESOLVABLE, Spooler
from ingestor.supervisor import backoff_delays

log = get_logger(__name__)


class SpoolWriter:
    """Commits spool segments to the database until told to finish."""

    def __init__(self, spool: AsyncSpool, sink: DatabaseSink, spooler: Spooler, config: PipelineConfig,
                 retry: ReconnectConfig | None = None, on_connected: Callable[[], None] | None = None) -> None:
        self._on_connected = on_connected
        self._spool = spool
        self._sink = sink
        self._spooler = spooler
        self._config = config
        self._retry = retry or ReconnectConfig(initial=0.5, max=30.0)
        self._compatible: dict[int, bool] = {}
        self.written = 0
        self.dead_lettered = 0
        self.failures = 0
        self.last_error: str | None = None
        self.lag_us: list[int] = []            # commit lag of recent segments (bench and metrics)
        self.commit_seconds: list[float] = []  # duration of recent commits (bench)

    async def run(self, stop_when_empty: asyncio.Event) -> None:
        """Write until the spooler has finished, ``stop_when_empty`` is set and the spool is empty."""
        delays = backoff_delays(self._retry)
        while True:
            if not self._sink.connected:
                try:
                    await self._connect()
                    delays = backoff_delays(self._retry)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    await self._failed("database unavailable; readings stay in the spool", exc, next(delays))
                    continue
            segments: list[Segment] = await self._spool.call(
                self._spool.spool.read, self._sink.watermark, self._config.write_rows)
            if not segments:
                if stop_when_empty.is_set() and self._spooler.finished.is_set():
                    return
                self._spooler.wake_writer.clear()
                try:
                    await asyncio.wait_for(self._spooler.wake_writer.wait(), 0.5)
                except TimeoutError:
                    pass
                continue
            try:
                await self._commit(segments)
                if self.failures:
                    log.info("database writes recovered", after_failures=self.failures)
                self.failures = 0
                delays = backoff_delays(self._retry)
            except asyncio.CancelledError:
                raise
            except (ConnectionError, InstanceBusy, WatermarkMoved) as exc:
                await self._sink.disconnect()
                await self._failed("batch not written; will retry", exc, next(delays))
            except asyncpg.PostgresError as exc:  # e.g. a permission or a missing table: keep the data, retry
                await self._failed("batch not written; will retry", exc, next(delays))

    async def _failed(self, message: str, exc: BaseException, delay: float) -> None:
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        metrics.COPY_ERRORS.labels(type(exc).__name__).inc()
        (log.error if self.failures == 1 else log.debug)(
            message, error=self.last_error, attempt=self.failures, retry_in_s=round(delay, 2),
            spool_readings=self._spool.spool.readings)
        await asyncio.sleep(delay)

    async def _connect(self) -> None:
        await self._sink.prepare()
        assert self._sink.keys is not None
        watermark = self._sink.watermark
        removed = await self._spool.call(self._spool.spool.delete_through, watermark)
        if removed:
            log.info("spool batches already committed before a restart were removed", batches=removed,
                     watermark=watermark)
            await self._spooler.space_freed()
        await self._spool.call(self._spool.spool.raise_floor, watermark)
        await self._spooler.update_keys(self._sink.database_id, self._sink.keys)
        self._compatible.clear()
        if self._on_connected is not None:
            self._on_connected()

    async def _commit(self, segments: list[Segment]) -> None:
        rows, row_count, dead = await self._rows_of(segments)
        last = segments[-1].seq
        self._spooler.inflight_through = last
        started = time.monotonic()
        written, refused = await self._sink.commit(rows, row_count, dead, last)
        self.commit_seconds.append(time.monotonic() - started)
        now = now_us()
        self.lag_us.extend(now - segment.created_us for segment in segments)
        if len(self.lag_us) > 100_000:
            del self.lag_us[:50_000], self.commit_seconds[:-1000]
        self.written += written
        self.dead_lettered += refused + len(dead)
        await self._spool.call(self._spool.spool.delete_through, last)
        await self._spooler.space_freed()

    async def _rows_of(self, segments: list[Segment]) -> tuple[list[bytes], int, list[DeadLetter]]:
        current = self._spooler.epoch
        assert current is not None and self._spooler.encoder is not None
        rows: list[bytes] = []
        row_count = 0
        dead: list[DeadLetter] = []
        for segment in segments:
            if segment.row_count:
                if segment.epoch == current.epoch or await self._keys_agree(segment.epoch, current):
                    rows.append(segment.rows)
                    row_count += segment.row_count
                else:
                    rekeyed = await self._rekeyed(segment, current, dead)
                    rows.extend(rekeyed)
                    row_count += len(rekeyed)
            for equipment, parameter, value, stamp, unit, quality, reason in segment.pending or ():
                if reason in RESOLVABLE and isinstance(value, int | float):
                    reading = Reading(equipment, parameter, float(value), stamp, unit, Quality(quality))
                    encoded, count, refused = self._spooler.encoder.encode([reading])
                    if count:
                        rows.append(encoded)
                        row_count += count
                        continue
                    reason = refused[0][1]
                dead.append(DeadLetter(spool_seq=segment.seq, reason=reason, equipment_code=equipment,
                                       parameter=parameter, unit_code=unit, quality=quality, timestamp_us=stamp,
                                       value=value if isinstance(value, int | float) else None,
                                       detail=_detail(reason, value, stamp)))
        return rows, row_count, dead

    async def _keys_agree(self, number: int, current: KeyEpoch) -> bool:
        if number not in self._compatible:
            old: KeyEpoch | None = await self._spool.call(self._spool.spool.epoch, number)
            self._compatible[number] = old is not None and old.database == current.database and all(
                current.equipment.get(code) == key for code, key in old.equipment.items()) and all(
                current.units.get(code) == key for code, key in old.units.items())
        return self._compatible[number]

    async def _rekeyed(self, segment: Segment, current: KeyEpoch, dead: list[DeadLetter]) -> list[bytes]:
        old: KeyEpoch | None = await self._spool.call(self._spool.spool.epoch, segment.epoch)
        equipment_codes = {key: code for code, key in (old.equipment if old else {}).items()}
        unit_codes = {key: code for code, key in (old.units if old else {}).items()}
        log.info("re-keying a spool batch written for another database", seq=segment.seq, rows=segment.row_count)
        rows = []
        for row in split_rows(segment.rows):
            fields = decode_row(row)
            code = equipment_codes.get(fields["equipment_id"])
            equipment_id = current.equipment.get(code) if code else None
            unit_code = unit_codes.get(fields["unit_id"]) if fields["unit_id"] is not None else None
            if equipment_id is None:
                dead.append(DeadLetter(spool_seq=segment.seq, reason="equipment_not_in_database",
                                       equipment_code=code, equipment_id=fields["equipment_id"],
                                       parameter=fields["parameter"], quality=fields["quality"],
                                       timestamp_us=fields["timestamp_us"], value=fields["value"]))
                continue
            rows.append(rekey_row(row, equipment_id, current.units.get(unit_code) if unit_code else None))
        return rows


def _detail(reason: str, value: object, stamp: int) -> str | None:
    if reason == "timestamp_out_of_range":
        return f"timestamp {stamp} (microseconds since 1970) is outside what PostgreSQL can store"
    if not isinstance(value, int | float):
        return f"value {value!r} is not a number"
    return None
