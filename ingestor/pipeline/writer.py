"""The writer: moves spool batches into the database, in order, exactly once.

It owns the pipeline's database connection.  After every (re)connect it lets the daemon prepare the database
(``prepare``: apply the schema, sync the plant's dimensions), claims this spool in the database and reads its
watermark (:mod:`ingestor.database.watermark`), deletes the spool batches at or below it (committed before a
crash, not yet deleted), and makes sure the spool will never hand out a sequence number at or below it again.
Then it reads the oldest batches, up to ``write_rows`` rows at a time (so a backlog drains in large
transactions, much faster than real time), commits them with the new watermark in one transaction
(:mod:`ingestor.database.commit`), and deletes them from the spool.  While the database is down it retries
with capped exponential backoff and jitter; the spool keeps accepting readings meanwhile.  ``on_committed``
is called right after each commit (the live events wake on it, so a state change reaches a WebSocket client
without waiting for a poll); it must not block.

Batches encoded with keys from an older dimension sync are written as they are when the keys still agree
(the usual case: ids never change in one database), and re-keyed row by row otherwise (the daemon was pointed
at another database).  Pending readings (equipment unknown when spooled) are encoded with the current keys or
dead-lettered.  A reload that changes the plant asks for :meth:`SpoolWriter.resync_dimensions`: the writer
syncs the dimensions between two commits on its own connection, and the spooler encodes with the new keys.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import asyncpg

from ingestor.contract import ProblemLog, Quality, Reading, ReconnectConfig, backoff_delays, get_logger, now_us
from ingestor.contract.timeouts import wait_for
from ingestor.database.commit import DeadLetter, commit_batches
from ingestor.database.connection import CONNECTION_ERRORS, connect, redact
from ingestor.database.copy_format import decode_row, rekey_row, split_rows
from ingestor.database.dimensions import DimensionKeys
from ingestor.database.watermark import SpoolInUse, WatermarkMoved, claim_spool
from ingestor.pipeline import metrics
from ingestor.pipeline.config import PipelineConfig
from ingestor.pipeline.spool import AsyncSpool, Batch, KeyEpoch
from ingestor.pipeline.spooler import RESOLVABLE, Spooler

log = get_logger(__name__)

_RECONNECT: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, SpoolInUse, WatermarkMoved)
"""Failures after which the writer drops its connection and connects again (claiming the spool anew)."""

Prepare = Callable[[asyncpg.Connection], Awaitable[DimensionKeys]]
"""Makes a fresh connection's database ready for the pipeline and returns its dimension keys (the daemon
applies the schema the first time and syncs the plant's dimensions)."""


class SpoolWriter:
    """Commits spool batches to the database until told to finish."""

    def __init__(self, spool: AsyncSpool, spooler: Spooler, config: PipelineConfig, *, url: str, instance_id: str,
                 prepare: Prepare, connect_timeout: float = 10.0, retry: ReconnectConfig | None = None,
                 on_connected: Callable[[], None] | None = None,
                 on_committed: Callable[[], None] | None = None) -> None:
        self._spool = spool
        self._spooler = spooler
        self._config = config
        self._url = url
        self.instance_id = instance_id
        self._prepare = prepare
        self._connect_timeout = connect_timeout
        self._retry = retry or ReconnectConfig(initial=0.5, max=5.0)
        self._on_connected = on_connected
        self._on_committed = on_committed
        self._conn: asyncpg.Connection | None = None
        self._rows_in_database: int | None = None  # ingest_watermark.rows_written as this writer knows it
        self._compatible: dict[int, bool] = {}
        self._problems = ProblemLog(log, repeats_at_debug=True)
        self._database_id: str | None = None
        self._resync = False
        self.watermark = 0
        self.written = 0
        self.dead_lettered = 0
        self.failures = 0
        self.last_error: str | None = None
        self.lag_us: list[int] = []            # commit lag of recent batches (bench and metrics)
        self.commit_seconds: list[float] = []  # duration of recent commits (bench)

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def run(self, stop_when_empty: asyncio.Event) -> None:
        """Write until the spooler has finished, ``stop_when_empty`` is set and the spool is empty, or, once
        both are set, until the database is found unreachable (the spool keeps the rest for the next start)."""
        delays = backoff_delays(self._retry)
        unreachable = False  # the last attempt to connect failed
        while True:
            if not self.connected:
                self._disconnect()  # the connection may have died while idle: say so (ingestor_database_up 0)
                if unreachable and stop_when_empty.is_set() and self._spooler.finished.is_set():
                    # Shutting down during an outage: the spool is durable, so waiting out the shutdown timeout
                    # for a database that is down gains nothing.
                    spool = self._spool.spool
                    log.warning("the database is unavailable; the readings not yet written wait in the spool "
                                "and are written at the next start", readings_in_spool=spool.readings,
                                batches=spool.batches, last_error=self.last_error)
                    return
                try:
                    await self._connect()
                    unreachable = False
                    delays = backoff_delays(self._retry)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    unreachable = True
                    await self._failed("database unavailable; readings stay in the spool", exc, next(delays),
                                       connection=True, until=stop_when_empty)
                    continue
            if self._resync:
                self._resync = False
                try:
                    await self._sync_dimensions()
                except asyncio.CancelledError:
                    raise
                except _RECONNECT as exc:  # the next connection prepares the database anyway
                    self._disconnect()
                    await self._failed("dimensions not synced (connection lost); reconnecting", exc, next(delays),
                                       connection=True, until=stop_when_empty)
                    continue
                except asyncpg.PostgresError as exc:
                    self._resync = True
                    await self._failed("dimensions not synced; will retry", exc, next(delays))
                    continue
            batches: list[Batch] = await self._spool.call(
                self._spool.spool.read, self.watermark, self._config.write_rows)
            if not batches:
                if stop_when_empty.is_set() and self._spooler.finished.is_set():
                    return
                self._spooler.wake_writer.clear()
                try:
                    await wait_for(self._spooler.wake_writer.wait(), 0.5)
                except TimeoutError:
                    pass
                continue
            try:
                await self._commit(batches)
                self._problems.recovered("database", "database writes recovered", after_failures=self.failures)
                self.failures = 0
                delays = backoff_delays(self._retry)
            except asyncio.CancelledError:
                raise
            except _RECONNECT as exc:
                self._disconnect()
                await self._failed("commit not confirmed (connection lost); checking and retrying", exc,
                                   next(delays), connection=True, until=stop_when_empty)
            except asyncpg.PostgresError as exc:  # e.g. a permission or a missing table: keep the data, retry
                await self._failed("batch not written; will retry", exc, next(delays))

    async def _failed(self, message: str, exc: BaseException, delay: float, *, connection: bool = False,
                      until: asyncio.Event | None = None) -> None:
        """Count and log a failure, then wait ``delay`` (cut short when ``until`` is set: a shutdown)."""
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        (metrics.DATABASE_CONNECTION_FAILURES if connection else metrics.COPY_ERRORS).labels(type(exc).__name__).inc()
        self._problems.failed("database", message, level="error", error=self.last_error, attempt=self.failures,
                              retry_in_s=round(delay, 2), spool_readings=self._spool.spool.readings)
        if until is None:
            await asyncio.sleep(delay)
            return
        try:
            await wait_for(until.wait(), delay)
        except TimeoutError:
            pass

    async def _connect(self) -> None:
        conn = await connect(self._url, self._connect_timeout)
        try:
            keys = await self._prepare(conn)
            claim = await claim_spool(conn, self._spool.spool.spool_id, self.instance_id)
        except BaseException:
            conn.terminate()
            raise
        self._conn = conn
        previous, self.watermark = self.watermark, claim.watermark
        await self._count_unconfirmed(conn, previous)
        metrics.DATABASE_UP.set(1)
        log.info("database connected", url=redact(self._url), instance_id=self.instance_id,
                 spool_id=self._spool.spool.spool_id, watermark=self.watermark)
        removed = await self._spool.call(self._spool.spool.delete_through, self.watermark)
        if removed:
            log.info("spool batches already committed before a restart were removed", batches=removed,
                     watermark=self.watermark)
            await self._spooler.space_freed()
        await self._spool.call(self._spool.spool.raise_floor, self.watermark)
        self._database_id = claim.database_id
        await self._spooler.update_keys(claim.database_id, keys)
        self._compatible.clear()
        if self._on_connected is not None:
            self._on_connected()

    def resync_dimensions(self) -> None:
        """Prepare the database again on the writer's connection (the plant changed in a reload): the dimension
        rows are synced and new keys used for what is spooled from then on.  Done between two commits, by the
        writer's own task; while the database is down the next connection does it anyway."""
        self._resync = True
        self._spooler.wake_writer.set()

    async def _sync_dimensions(self) -> None:
        conn = self._conn
        if conn is None or self._database_id is None:
            return
        keys = await self._prepare(conn)
        await self._spooler.update_keys(self._database_id, keys)
        self._compatible.clear()

    async def _count_unconfirmed(self, conn: asyncpg.Connection, previous: int) -> None:
        """A commit whose reply was lost (the link dropped after the server committed) is found on reconnect:
        the watermark moved past what this writer saw confirmed.  Count what it wrote, so that accepted =
        written + dead-lettered + dropped holds, and say what happened."""
        spool_id = self._spool.spool.spool_id
        rows_written = await conn.fetchval("SELECT rows_written FROM ingest_watermark WHERE spool_id = $1", spool_id)
        if rows_written is None:
            return
        confirmed, self._rows_in_database = self._rows_in_database, int(rows_written)
        if confirmed is None or self.watermark <= previous:
            return
        landed = int(rows_written) - confirmed
        dead = int(await conn.fetchval(
            "SELECT count(*) FROM ingest_dead_letter WHERE spool_id = $1 AND spool_seq > $2 AND spool_seq <= $3",
            spool_id, previous, self.watermark))
        self.written += landed
        self.dead_lettered += dead
        metrics.READINGS_WRITTEN.inc(landed)
        log.warning("a commit whose reply was lost had landed; its readings are counted as written, not written "
                    "again", batches_through=self.watermark, readings_written=landed, readings_dead_lettered=dead)

    def _disconnect(self) -> None:
        metrics.DATABASE_UP.set(0)
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    async def close(self) -> None:
        """Close the connection (the session's spool lock goes with it)."""
        conn, self._conn = self._conn, None
        metrics.DATABASE_UP.set(0)
        if conn is not None:
            try:
                await wait_for(conn.close(), 5)
            except CONNECTION_ERRORS:
                conn.terminate()

    async def _commit(self, batches: list[Batch]) -> None:
        conn = self._conn
        assert conn is not None
        rows, row_count, dead = await self._rows_of(batches)
        last = batches[-1].seq
        self._spooler.inflight_through = last
        started = time.monotonic()
        committed = await commit_batches(conn, spool_id=self._spool.spool.spool_id, instance_id=self.instance_id,
                                         rows=rows, row_count=row_count, dead=dead, last_seq=last)
        elapsed = time.monotonic() - started
        self.watermark = last
        self.commit_seconds.append(elapsed)
        metrics.BATCH_SECONDS.observe(elapsed)
        metrics.READINGS_WRITTEN.inc(committed.written)
        metrics.BATCHES_WRITTEN.inc()
        if committed.dead_letters:
            _report_dead_letters(committed.dead_letters, last)
        now = now_us()
        self.lag_us.extend(now - batch.created_us for batch in batches)
        if len(self.lag_us) > 100_000:
            del self.lag_us[:50_000], self.commit_seconds[:-1000]
        self.written += committed.written
        self.dead_lettered += len(committed.dead_letters)
        if self._rows_in_database is not None:
            self._rows_in_database += committed.written
        if self._on_committed is not None:
            self._on_committed()
        await self._spool.call(self._spool.spool.delete_through, last)
        await self._spooler.space_freed()

    async def _rows_of(self, batches: list[Batch]) -> tuple[list[bytes], int, list[DeadLetter]]:
        current = self._spooler.epoch
        assert current is not None and self._spooler.encoder is not None
        rows: list[bytes] = []
        row_count = 0
        dead: list[DeadLetter] = []
        for batch in batches:
            if batch.row_count:
                if batch.epoch == current.epoch or await self._keys_agree(batch.epoch, current):
                    rows.append(batch.rows)
                    row_count += batch.row_count
                else:
                    rekeyed = await self._rekeyed(batch, current, dead)
                    rows.extend(rekeyed)
                    row_count += len(rekeyed)
            for equipment, parameter, value, stamp, unit, quality, reason in batch.pending or ():
                if reason in RESOLVABLE and isinstance(value, int | float):
                    reading = Reading(equipment, parameter, float(value), stamp, unit, Quality(quality))
                    encoded, count, refused = self._spooler.encoder.encode([reading])
                    if count:
                        rows.append(encoded)
                        row_count += count
                        continue
                    reason = refused[0][1]
                dead.append(DeadLetter(spool_seq=batch.seq, reason=reason, equipment_code=equipment,
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

    async def _rekeyed(self, batch: Batch, current: KeyEpoch, dead: list[DeadLetter]) -> list[bytes]:
        old: KeyEpoch | None = await self._spool.call(self._spool.spool.epoch, batch.epoch)
        equipment_codes = {key: code for code, key in (old.equipment if old else {}).items()}
        unit_codes = {key: code for code, key in (old.units if old else {}).items()}
        log.info("re-keying a spool batch written for another database", seq=batch.seq, rows=batch.row_count)
        rows = []
        for row in split_rows(batch.rows):
            fields = decode_row(row)
            code = equipment_codes.get(fields["equipment_id"])
            equipment_id = current.equipment.get(code) if code else None
            unit_code = unit_codes.get(fields["unit_id"]) if fields["unit_id"] is not None else None
            if equipment_id is None:
                dead.append(DeadLetter(spool_seq=batch.seq, reason="equipment_not_in_database",
                                       equipment_code=code, equipment_id=fields["equipment_id"],
                                       parameter=fields["parameter"], quality=fields["quality"],
                                       timestamp_us=fields["timestamp_us"], value=fields["value"]))
                continue
            rows.append(rekey_row(row, equipment_id, current.units.get(unit_code) if unit_code else None))
        return rows


def _report_dead_letters(letters: list[DeadLetter], spool_seq: int) -> None:
    by_reason: dict[str, int] = {}
    for letter in letters:
        by_reason[letter.reason] = by_reason.get(letter.reason, 0) + 1
    for reason, count in by_reason.items():
        metrics.READINGS_DEAD_LETTERED.labels(reason).inc(count)
    first = letters[0]
    log.warning("readings dead-lettered", by_reason=by_reason, spool_seq=spool_seq,
                example={"equipment": first.equipment_code or first.equipment_id, "parameter": first.parameter,
                         "detail": first.detail})


def _detail(reason: str, value: object, stamp: int) -> str | None:
    if reason == "timestamp_out_of_range":
        return f"timestamp {stamp} (microseconds since 1970) is outside what PostgreSQL can store"
    if not isinstance(value, int | float):
        return f"value {value!r} is not a number"
    return None
