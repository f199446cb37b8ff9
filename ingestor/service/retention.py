"""The scheduled retention job: every ``database.retention.interval`` one run of
:func:`ingestor.database.retention.run_retention` on a connection of its own, so a long run never delays the
writer.

The first run starts as soon as the schema is ready.  When several daemons share a database, the one holding
the retention advisory lock runs and the others skip that round (counted as ``skipped``, logged at debug).
A run that fails (a lock it waited for too long, the database gone) is logged once as a warning, repeats at
debug with a periodic "still failing" line, and "recovered" when a run succeeds again (:class:`ProblemLog`);
what it committed before the failure stays done, and the next run goes on from there.

Metrics: ``ingestor_retention_rows_total{action="archived"|"deleted"}``, ``ingestor_retention_chunks_dropped_total``,
``ingestor_retention_runs_total{result="ok"|"error"|"skipped"}``, ``ingestor_retention_run_seconds``,
``ingestor_retention_last_success_timestamp_seconds``, ``ingestor_retention_failing`` (1 while the last run
failed) and ``ingestor_retention_last_error_info{error=…}``.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg
from prometheus_client import Counter, Gauge, Histogram, Info

from ingestor.contract import ProblemLog, backoff_delays, get_logger
from ingestor.database.config import DatabaseConfig
from ingestor.database.connection import CONNECTION_ERRORS, DatabaseUnavailable, connect, redact
from ingestor.database.retention import RetentionReport, run_retention

log = get_logger(__name__)

_OUTAGE: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, DatabaseUnavailable)

RETENTION_ROWS = Counter(
    "ingestor_retention_rows_total",
    "Sensor readings moved by retention: archived (fact_sensor_event -> archive) or deleted (from the archive)",
    ["action"])
RETENTION_CHUNKS = Counter("ingestor_retention_chunks_dropped_total",
                           "TimescaleDB chunks of fact_sensor_event dropped after archiving their rows")
RETENTION_RUNS = Counter("ingestor_retention_runs_total", "Retention runs by result", ["result"])
RETENTION_SECONDS = Histogram("ingestor_retention_run_seconds", "Duration of a retention run",
                              buckets=(0.1, 1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0))
RETENTION_LAST_SUCCESS = Gauge("ingestor_retention_last_success_timestamp_seconds",
                               "Unix time the last retention run finished without error (0: never)")
RETENTION_FAILING = Gauge("ingestor_retention_failing", "1 while the last retention run failed")
RETENTION_LAST_ERROR = Info("ingestor_retention_last_error", "The error of the last failed retention run")

for _action in ("archived", "deleted"):
    RETENTION_ROWS.labels(_action)
for _result in ("ok", "error", "skipped"):
    RETENTION_RUNS.labels(_result)


class _Counted:
    """Moves the row counters by each committed batch, so a run that fails halfway still counts its work."""

    def __init__(self) -> None:
        self.archived = self.deleted = self.chunks = 0

    def __call__(self, report: RetentionReport) -> None:
        RETENTION_ROWS.labels("archived").inc(report.archived - self.archived)
        RETENTION_ROWS.labels("deleted").inc(report.deleted - self.deleted)
        RETENTION_CHUNKS.inc(report.chunks_dropped - self.chunks)
        self.archived, self.deleted, self.chunks = report.archived, report.deleted, report.chunks_dropped


class RetentionTask:
    """Runs retention on its schedule until cancelled; waits for the schema before the first run."""

    def __init__(self, config: DatabaseConfig, url: str, schema_ready: asyncio.Event) -> None:
        self._config = config
        self._url = url
        self._schema_ready = schema_ready
        self._problems = ProblemLog(log, repeats_at_debug=True)
        self.runs = 0
        self.last_report: RetentionReport | None = None
        self.last_error: str | None = None

    async def run(self) -> None:
        settings = self._config.retention
        if not settings.enabled:
            return
        await self._schema_ready.wait()
        log.info("retention scheduled", raw_days=_days(settings.raw), archive_days=_days(settings.archive),
                 interval_s=settings.interval)
        conn: asyncpg.Connection | None = None
        delays = backoff_delays(self._config.reconnect)
        try:
            while True:
                started = time.monotonic()
                try:
                    if conn is None or conn.is_closed():
                        conn = await connect(self._url, self._config.connect_timeout)
                    await self.run_once(conn)
                    delays = backoff_delays(self._config.reconnect)
                    wait = settings.interval
                except _OUTAGE as exc:
                    self._failed(exc)
                    if conn is not None:
                        conn.terminate()
                    conn = None
                    wait = min(settings.interval, next(delays))
                    started = time.monotonic()
                await asyncio.sleep(max(0.0, started + wait - time.monotonic()))
        finally:
            if conn is not None and not conn.is_closed():
                conn.terminate()

    async def run_once(self, conn: asyncpg.Connection) -> RetentionReport | None:
        """One run with metrics and logs; a database error is reported, not raised (the connection is lost:
        raised)."""
        counted = _Counted()
        started = time.monotonic()
        try:
            report = await run_retention(conn, self._config.retention, on_progress=counted)
        except asyncpg.PostgresError as exc:
            if isinstance(exc, CONNECTION_ERRORS):
                raise
            self._failed(exc)
            RETENTION_SECONDS.observe(time.monotonic() - started)
            return None
        if not report.ran:
            RETENTION_RUNS.labels("skipped").inc()
            log.debug("retention skipped: another session holds the retention lock")
            return report
        RETENTION_RUNS.labels("ok").inc()
        RETENTION_SECONDS.observe(report.seconds)
        RETENTION_LAST_SUCCESS.set(time.time())
        RETENTION_FAILING.set(0)
        self.runs += 1
        self.last_report = report
        self.last_error = None
        self._problems.recovered("run", "retention recovered")
        log.info("retention run", tier=str(report.tier), archived=report.archived, deleted=report.deleted,
                 chunks_dropped=report.chunks_dropped, batches=report.batches, seconds=round(report.seconds, 3),
                 raw_cutoff=report.raw_cutoff.isoformat() if report.raw_cutoff else None,
                 archive_cutoff=report.archive_cutoff.isoformat() if report.archive_cutoff else None)
        return report

    def _failed(self, exc: BaseException) -> None:
        error = redact(str(exc)) or type(exc).__name__
        if isinstance(exc, asyncpg.LockNotAvailableError):
            error += (f" (a batch waited longer than database.retention.lock_timeout, "
                      f"{self._config.retention.lock_timeout:g} s, for a lock; what was done stays done)")
        self.last_error = error
        RETENTION_RUNS.labels("error").inc()
        RETENTION_FAILING.set(1)
        RETENTION_LAST_ERROR.info({"error": error[:300]})
        self._problems.failed("run", "retention run failed; retried at the next run", error=error,
                              still="retention still failing")


def _days(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / 86400.0, 3)
