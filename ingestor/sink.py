"""The database side of the writer: one connection that prepares the database and commits spool segments.

``prepare`` connects, applies the schema (when configured), syncs the plant's dimensions, takes the advisory
lock of this daemon's spool (a copied spool directory must not be written twice) and reads the spool's
watermark: the sequence number of the last spool segment committed.

``commit`` writes rows already in binary COPY format with ``COPY … FROM STDIN (FORMAT binary)``, records any
dead letters, and advances the watermark, all in one transaction: after a crash at any instant, either the
rows and the new watermark are both in the database or neither is, which is what makes replaying the spool
exactly-once.  When the database refuses some rows (a value it cannot store, a constraint), the batch is
split to find them; they go to ``ingest_dead_letter`` with the reason and the rest lands.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import asyncpg

from ingestor import metrics
from ingestor.copy_format import COLUMNS, HEADER, TRAILER, decode_row, split_rows
from ingestor.database import DatabaseConfig, connect, redact
from ingestor.dimensions import DimensionKeys, sync_dimensions
from ingestor.logs import get_logger
from ingestor.plant import PlantConfig
from ingestor.readings import from_timestamp_us
from ingestor.schema import apply_schema

log = get_logger(__name__)

CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError, asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.CrashShutdownError,
)
DATA_ERRORS: tuple[type[BaseException], ...] = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)


@dataclass(frozen=True)
class DeadLetter:
    """A reading that is kept aside instead of written, with why."""

    spool_seq: int
    reason: str
    equipment_code: str | None = None
    equipment_id: int | None = None
    parameter: str | None = None
    unit_code: str | None = None
    unit_id: int | None = None
    quality: int | None = None
    timestamp_us: int | None = None
    value: float | None = None
    detail: str | None = None


class InstanceBusy(Exception):
    """Another daemon holds this spool's lock in the database (a copy of the same spool is running)."""


class WatermarkMoved(Exception):
    """The watermark is not where this writer left it: someone else wrote from this spool."""


class DatabaseSink:
    """Prepares the database and commits segments; reconnects (and re-prepares) after a connection failure."""

    def __init__(self, config: DatabaseConfig, plant: PlantConfig, instance_id: str, url: str | None = None) -> None:
        self._config = config
        self._plant = plant
        self.instance_id = instance_id
        self.spool_id = ""  # set by the daemon once the spool is open
        self.url = url or config.effective_url()
        self._conn: asyncpg.Connection | None = None
        self.keys: DimensionKeys | None = None
        self.database_id = ""
        self.watermark = 0
        self.schema_ready = False

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def prepare(self) -> None:
        """Connect and make the database ready for this instance.  Raises on any failure (the caller retries)."""
        conn = await connect(self.url, self._config.connect_timeout)
        try:
            if self._config.apply_schema and not self.schema_ready:
                report = await apply_schema(conn, timescaledb=self._config.timescaledb)
                log.info("schema ready", tier=str(report.tier), version=report.current_version,
                         applied=report.applied, skipped=[s.object for s in report.skipped])
            keys = await sync_dimensions(conn, self._plant)
            changed = {table: n for table, n in keys.changed.items() if n}
            log.info("dimensions synced", equipment=len(keys.equipment), changed=changed or "nothing")
            if not self.spool_id:
                raise RuntimeError("the spool must be open before the database is prepared")
            if not await conn.fetchval("SELECT pg_try_advisory_lock(hashtextextended($1, 0))",
                                       f"ingestor.spool:{self.spool_id}"):
                raise InstanceBusy(
                    f"another daemon is writing from a spool with the same id ({self.spool_id}) to this database: "
                    "was a spool directory copied? every daemon needs a spool of its own")
            self.database_id = str(await conn.fetchval("SELECT database_id FROM ingest_database"))
            await conn.execute("INSERT INTO ingest_watermark (spool_id, instance_id) VALUES ($1, $2) "
                               "ON CONFLICT (spool_id) DO UPDATE SET instance_id = EXCLUDED.instance_id "
                               "WHERE ingest_watermark.instance_id <> EXCLUDED.instance_id",
                               self.spool_id, self.instance_id)
            self.watermark = int(await conn.fetchval(
                "SELECT last_seq FROM ingest_watermark WHERE spool_id = $1", self.spool_id))
        except BaseException:
            conn.terminate()
            raise
        self._conn = conn
        self.keys = keys
        self.schema_ready = True
        metrics.DATABASE_UP.set(1)
        log.info("database connected", url=redact(self.url), instance_id=self.instance_id, spool_id=self.spool_id,
                 watermark=self.watermark)

    async def commit(self, rows: Sequence[bytes], row_count: int, dead: Sequence[DeadLetter], last_seq: int
                     ) -> tuple[int, int]:
        """Write ``rows`` (encoded parts holding ``row_count`` rows in all) and the dead letters, and move the
        watermark to ``last_seq``, in one transaction.  Returns (rows written, rows the database refused and
        that were dead-lettered)."""
        conn = self._conn
        if conn is None:
            raise ConnectionError("not connected")
        started = time.monotonic()
        letters: list[DeadLetter] = []
        try:
            async with conn.transaction():
                written, refused = await self._copy_isolating(conn, rows, whole_rows=row_count)
                letters = list(dead) + [self._refused_letter(row, reason, last_seq) for row, reason in refused]
                if letters:
                    await self._insert_dead_letters(conn, letters)
                status = await conn.execute(
                    "UPDATE ingest_watermark SET last_seq = $2, rows_written = rows_written + $3, updated_at = now() "
                    "WHERE spool_id = $1 AND last_seq < $2", self.spool_id, last_seq, written)
                if status != "UPDATE 1":
                    raise WatermarkMoved(f"the watermark of spool {self.spool_id} is already at or past {last_seq}; "
                                         "another daemon is writing from a copy of this spool")
        except CONNECTION_ERRORS as exc:
            await self.disconnect()
            raise ConnectionError(f"database connection lost: {exc}") from exc
        self.watermark = last_seq
        metrics.BATCH_SECONDS.observe(time.monotonic() - started)
        metrics.READINGS_WRITTEN.inc(written)
        metrics.BATCHES_WRITTEN.inc()
        if letters:
            by_reason: dict[str, int] = {}
            for letter in letters:
                by_reason[letter.reason] = by_reason.get(letter.reason, 0) + 1
            for reason, count in by_reason.items():
                metrics.READINGS_DEAD_LETTERED.labels(reason).inc(count)
            first = letters[0]
            log.warning("readings dead-lettered", by_reason=by_reason, spool_seq=last_seq,
                        example={"equipment": first.equipment_code or first.equipment_id,
                                 "parameter": first.parameter, "detail": first.detail})
        return written, len(refused)

    async def _copy(self, conn: asyncpg.Connection, rows: Sequence[bytes]) -> None:
        async def source() -> AsyncIterator[bytes]:
            yield HEADER
            for part in rows:
                yield part
            yield TRAILER

        await conn.copy_to_table("fact_sensor_event", source=source(), columns=COLUMNS, format="binary")

    async def _copy_isolating(self, conn: asyncpg.Connection, rows: Sequence[bytes], *, whole_rows: int = 0
                              ) -> tuple[int, list[tuple[bytes, str]]]:
        """COPY the rows in a savepoint; when the database refuses the data, split until the refused rows are
        found.  ``rows`` may be parts holding many rows each (``whole_rows`` of them in all): they are split
        into single rows first."""
        if not rows:
            return 0, []
        try:
            async with conn.transaction():
                await self._copy(conn, rows)
            return (whole_rows or len(rows)), []
        except DATA_ERRORS as exc:
            if whole_rows:
                singles = [row for part in rows for row in split_rows(part)]
                log.warning("the database refused rows of a batch; isolating them", rows=len(singles),
                            error=str(exc))
                return await self._copy_isolating(conn, singles)
            if len(rows) == 1:
                return 0, [(rows[0], f"{type(exc).__name__}: {exc}")]
        half = len(rows) // 2
        written_a, refused_a = await self._copy_isolating(conn, rows[:half])
        written_b, refused_b = await self._copy_isolating(conn, rows[half:])
        return written_a + written_b, refused_a + refused_b

    @staticmethod
    def _refused_letter(row: bytes, detail: str, spool_seq: int) -> DeadLetter:
        fields = decode_row(row)
        return DeadLetter(spool_seq=spool_seq, reason="database_refused", equipment_id=fields["equipment_id"],
                          parameter=fields["parameter"], unit_id=fields["unit_id"], quality=fields["quality"],
                          timestamp_us=fields["timestamp_us"], value=fields["value"], detail=detail)

    async def _insert_dead_letters(self, conn: asyncpg.Connection, letters: Sequence[DeadLetter]) -> None:
        """Record dead letters.  Whatever is in them, this must not fail for the data's sake, or the batch
        could never commit: values are bounded to their columns, and a letter that still does not fit is
        stored as its reason and a text rendering of it."""
        try:
            async with conn.transaction():
                await conn.executemany(
                    "INSERT INTO ingest_dead_letter (instance_id, spool_id, spool_seq, reason, detail, equipment_code, "
                    "equipment_id, parameter, unit_code, unit_id, quality, timestamp_us, event_ts, value) "
                    "VALUES ($1, $14, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                    [(self.instance_id, d.spool_seq, d.reason[:50], d.detail, _text(d.equipment_code, 100),
                      _int(d.equipment_id, 2**31), _text(d.parameter, 200), _text(d.unit_code, 50),
                      _int(d.unit_id, 2**31), _int(d.quality, 2**15), _int(d.timestamp_us, 2**63),
                      _stamp(d.timestamp_us), _float(d.value), self.spool_id) for d in letters])
        except DATA_ERRORS as exc:
            log.warning("dead letters stored as text", error=str(exc))
            await conn.executemany(
                "INSERT INTO ingest_dead_letter (instance_id, spool_id, spool_seq, reason, detail) "
                "VALUES ($1, $2, $3, $4, $5)",
                [(self.instance_id, self.spool_id, d.spool_seq, d.reason[:50], repr(d)) for d in letters])

    async def disconnect(self) -> None:
        metrics.DATABASE_UP.set(0)
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        metrics.DATABASE_UP.set(0)
        if conn is not None:
            try:
                await asyncio.wait_for(conn.close(), 5)
            except CONNECTION_ERRORS:
                conn.terminate()


def _text(value: str | None, limit: int) -> str | None:
    return None if value is None else str(value)[:limit]


def _int(value: int | None, bound: int) -> int | None:
    return value if isinstance(value, int) and -bound <= value < bound else None


def _float(value: float | None) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _stamp(timestamp_us: int | None) -> object:
    if timestamp_us is None:
        return None
    try:
        return from_timestamp_us(timestamp_us)
    except (OverflowError, ValueError, OSError):
        return None

