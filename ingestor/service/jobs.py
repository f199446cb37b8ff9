"""Watching TimescaleDB's background jobs, so that a failing policy is seen.

A compression policy or a continuous-aggregate refresh that fails says nothing to any client: the only trace is
in TimescaleDB's catalog.  The daemon reads it every ``database.timescaledb_jobs_check`` (60 s by default; 0
turns it off) on a connection of its own and

* lists the failing jobs with their last error in ``/readyz`` (``timescaledb_jobs``; ``degraded`` names them).
  Readiness does not change: a failing job does not stop readings from being written, and a probe that failed
  on it would take a working daemon out of service, or restart it, for a problem in the server that neither
  cures;
* exports ``ingestor_timescaledb_job_failing{job_id,proc}`` (1 while the last run failed),
  ``ingestor_timescaledb_job_failures{job_id,proc}`` (the job's failed runs, as TimescaleDB counts them) and
  ``ingestor_timescaledb_jobs_failing`` (how many fail now), for alerts;
* logs a warning when a job starts failing (with its error) and an info line when it recovers: once per change,
  not at every check.

A job that the Apache edition refuses by its licence (:mod:`ingestor.database.jobs`) is no failure the operator
can act on: it is listed under ``unsupported`` in ``/readyz`` and logged once at info level, and neither makes
the daemon degraded nor sets ``ingestor_timescaledb_job_failing``.

On a database without TimescaleDB there is nothing to watch; it checks again at each interval, in case the
extension is created later.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg
from prometheus_client import Counter, Gauge

from ingestor.contract import get_logger
from ingestor.database.connection import connect
from ingestor.database.jobs import JobState, read_jobs

log = get_logger(__name__)

JOB_FAILING = Gauge("ingestor_timescaledb_job_failing",
                    "1 while the last run of a TimescaleDB background job failed, else 0", ["job_id", "proc"])
JOB_FAILURES = Gauge("ingestor_timescaledb_job_failures",
                     "Failed runs of a TimescaleDB background job (total_failures in job_stats)", ["job_id", "proc"])
JOBS_FAILING = Gauge("ingestor_timescaledb_jobs_failing", "TimescaleDB background jobs whose last run failed")
JOB_CHECK_ERRORS = Counter("ingestor_timescaledb_job_check_errors_total",
                           "Checks of TimescaleDB's job stats that could not read them")

MAX_ERROR_CHARS = 500  # an error text in /readyz and the log, cut to this length


def _when(value: datetime | None) -> str | None:
    """ISO 8601, or None for a missing or infinite time (TimescaleDB writes -infinity for "never")."""
    if value is None or value.year in (1, 9999):
        return None
    return value.astimezone(UTC).isoformat()


def _error(job: JobState) -> str | None:
    return None if job.last_error is None else job.last_error[:MAX_ERROR_CHARS]


class JobMonitor:
    """Reads TimescaleDB's job stats on a schedule; :meth:`status` is the ``/readyz`` part."""

    def __init__(self, url: str, *, interval: float, connect_timeout: float, schema_ready: asyncio.Event) -> None:
        self._url = url
        self._interval = interval
        self._connect_timeout = connect_timeout
        self._schema_ready = schema_ready
        self.jobs: dict[int, JobState] = {}
        self.timescaledb: bool | None = None  # None until the first check
        self.checked_at: float | None = None
        self.last_error: str | None = None

    @property
    def failing(self) -> list[JobState]:
        return [job for job in self.jobs.values() if job.failing]

    def status(self) -> dict[str, Any]:
        """What ``/readyz`` says about the jobs."""
        if self._interval <= 0:
            return {"checked": False, "reason": "database.timescaledb_jobs_check is 0"}
        status: dict[str, Any] = {
            "checked_at": None if self.checked_at is None else datetime.fromtimestamp(self.checked_at, UTC).isoformat(),
            "timescaledb": self.timescaledb,
        }
        if self.timescaledb:
            status["jobs"] = len(self.jobs)
            status["failing"] = [
                {"job_id": job.job_id, "proc": job.proc, "hypertable": job.hypertable,
                 "last_run_started_at": _when(job.last_run_started_at),
                 "last_successful_finish": _when(job.last_successful_finish),
                 "total_failures": job.total_failures, "last_error": _error(job),
                 "last_error_code": job.last_error_code}
                for job in self.failing]
            status["unsupported"] = [
                {"job_id": job.job_id, "proc": job.proc, "last_error": _error(job)}
                for job in self.jobs.values() if job.unsupported]
        if self.last_error is not None:
            status["last_error"] = self.last_error
        return status

    def degraded(self) -> list[str]:
        """Short reasons for ``/readyz``'s ``degraded`` list."""
        return [f"TimescaleDB job {job.job_id} ({job.proc}) failing: {_error(job) or 'no error recorded'}"
                for job in self.failing]

    def update(self, jobs: list[JobState] | None) -> None:
        """Take one reading of the stats: metrics, and a log line for each job whose state changed."""
        self.checked_at = time.time()
        self.last_error = None
        self.timescaledb = jobs is not None
        current = {job.job_id: job for job in jobs or []}
        for job_id, old in self.jobs.items():
            if job_id not in current:
                JOB_FAILING.remove(str(job_id), old.proc)
                JOB_FAILURES.remove(str(job_id), old.proc)
                if old.failing:
                    log.info("TimescaleDB background job removed", job_id=job_id, proc=old.proc)
        for job_id, job in current.items():
            old_job = self.jobs.get(job_id)
            was_failing = old_job is not None and old_job.failing
            if job.failing and not was_failing:
                log.warning("TimescaleDB background job failing", job_id=job_id, proc=job.proc,
                            hypertable=job.hypertable, error=_error(job), error_code=job.last_error_code,
                            failures=job.total_failures)
            elif was_failing and not job.failing:
                log.info("TimescaleDB background job recovered", job_id=job_id, proc=job.proc,
                         last_run_status=job.last_run_status)
            if job.unsupported and not (old_job is not None and old_job.unsupported):
                log.info("TimescaleDB background job refused by the Apache edition's licence", job_id=job_id,
                         proc=job.proc, error=_error(job))
            JOB_FAILING.labels(str(job_id), job.proc).set(1 if job.failing else 0)
            JOB_FAILURES.labels(str(job_id), job.proc).set(job.total_failures)
        self.jobs = current
        JOBS_FAILING.set(len(self.failing))

    async def run(self) -> None:
        if self._interval <= 0:
            return
        await self._schema_ready.wait()
        conn: asyncpg.Connection | None = None
        try:
            while True:
                try:
                    if conn is None or conn.is_closed():
                        conn = await connect(self._url, self._connect_timeout)
                    self.update(await read_jobs(conn))
                except Exception as exc:  # the check must never take the daemon down; say why it could not read
                    JOB_CHECK_ERRORS.inc()
                    self.last_error = f"{type(exc).__name__}: {str(exc)[:MAX_ERROR_CHARS]}"
                    log.debug("could not read TimescaleDB's job stats", error=self.last_error)
                    if conn is not None:
                        conn.terminate()
                    conn = None
                await asyncio.sleep(self._interval)
        finally:
            if conn is not None and not conn.is_closed():
                conn.terminate()
