"""TimescaleDB's background jobs as the database reports them: each job, how its last run ended, and the
last error of the ones that failed.

TimescaleDB runs its policies (compression, the continuous aggregate's refresh, its own job-history retention)
as background jobs inside the server.  When one fails nothing reaches the client: the failure is only in
``timescaledb_information.job_stats`` (``last_run_status = 'Failed'``) and, from TimescaleDB 2.9 on, the error
text in ``timescaledb_information.job_errors``.  :func:`read_jobs` reads both; on a database without the
extension it returns None.

A job the Apache edition refuses by its licence (error ``0A000``, feature not supported, under
``timescaledb.license = 'apache'``) is marked ``unsupported`` rather than failing: TimescaleDB 2.19 schedules its
own job-history retention job (job 3) on that edition and refuses it at every run, and the operator can neither
fix nor unschedule it there (``alter_job`` and ``delete_job`` are refused too).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

_JOBS = """
SELECT j.job_id, j.proc_schema, j.proc_name, j.hypertable_name, j.scheduled,
       s.last_run_status, s.job_status, s.last_run_started_at, s.last_successful_finish, s.next_start,
       COALESCE(s.total_runs, 0) AS total_runs, COALESCE(s.total_failures, 0) AS total_failures
FROM timescaledb_information.jobs j
LEFT JOIN timescaledb_information.job_stats s ON s.job_id = j.job_id
ORDER BY j.job_id
"""

# The newest error of each job asked about (job_errors keeps a history: one row per failed run).
_ERRORS = """
SELECT DISTINCT ON (job_id) job_id, sqlerrcode, err_message, finish_time
FROM timescaledb_information.job_errors
WHERE job_id = ANY($1::int[])
ORDER BY job_id, start_time DESC NULLS LAST
"""


FEATURE_NOT_SUPPORTED = "0A000"  # the SQLSTATE of TimescaleDB's "not supported under the current license"


@dataclass(frozen=True)
class JobState:
    """One background job and how its last run ended."""

    job_id: int
    proc: str
    """``schema.procedure`` the job calls, e.g. ``_timescaledb_functions.policy_compression``"""
    hypertable: str | None
    scheduled: bool
    last_run_status: str | None
    """``Success``, ``Failed``, or None when it has not run yet"""
    job_status: str | None
    last_run_started_at: datetime | None
    last_successful_finish: datetime | None
    next_start: datetime | None
    total_runs: int
    total_failures: int
    last_error: str | None = None
    last_error_code: str | None = None
    last_error_at: datetime | None = None
    unsupported: bool = False
    """its last run failed because the Apache edition's licence refuses it"""

    @property
    def failing(self) -> bool:
        """Its last run failed, for a reason other than the edition's licence."""
        return self.last_run_status == "Failed" and not self.unsupported


async def read_jobs(conn: asyncpg.Connection) -> list[JobState] | None:
    """Every background job of this database with its stats (and the last error of each failing one), or None
    when the database has no timescaledb extension."""
    if await conn.fetchval("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'") is None:
        return None
    rows = await conn.fetch(_JOBS)
    failing = [r["job_id"] for r in rows if r["last_run_status"] == "Failed"]
    errors: dict[int, asyncpg.Record] = {}
    if failing and await conn.fetchval("SELECT to_regclass('timescaledb_information.job_errors') IS NOT NULL"):
        errors = {r["job_id"]: r for r in await conn.fetch(_ERRORS, failing)}
    apache = failing and await conn.fetchval("SELECT current_setting('timescaledb.license', true)") == "apache"
    jobs = []
    for r in rows:
        error = errors.get(r["job_id"])
        unsupported = bool(apache and error is not None and error["sqlerrcode"] == FEATURE_NOT_SUPPORTED)
        jobs.append(JobState(
            job_id=r["job_id"], proc=f"{r['proc_schema']}.{r['proc_name']}", hypertable=r["hypertable_name"],
            scheduled=r["scheduled"], last_run_status=r["last_run_status"], job_status=r["job_status"],
            last_run_started_at=r["last_run_started_at"], last_successful_finish=r["last_successful_finish"],
            next_start=r["next_start"], total_runs=r["total_runs"], total_failures=r["total_failures"],
            last_error=error["err_message"] if error else None, last_error_code=error["sqlerrcode"] if error else None,
            last_error_at=error["finish_time"] if error else None, unsupported=unsupported))
    return jobs
