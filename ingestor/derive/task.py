"""The daemon's periodic derivation, and ``check_data_quality()`` exported as metrics.

One task with its own database connection (like the view refresher), so a long derivation never delays the
writer.  Every ``derivation.interval`` it reads the readings inserted since the last run and derives every
machine up to ``now - settle``; while a machine is behind (a backlog, a first start on old data) it goes on
without waiting.  After a run that changed facts it refreshes ``view_oee_daily`` at once (the refresher's own
schedule still runs), so a live OEE dashboard is at most one interval behind.  Every
``derivation.check_data_quality`` it runs ``check_data_quality()`` and sets
``ingestor_data_quality_check_passed{check}`` (1 passed, 0 failed, NaN could not run) and
``ingestor_data_quality_violations{check}`` (the count the check reports).

Two optional callbacks tell the live events (:mod:`ingestor.derive.live`) what happened, without waiting for
them: ``on_derived(report)`` after each run (its ``production_changed`` names the machines whose production
records were written) and ``on_quality(findings)`` after each ``check_data_quality()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
from prometheus_client import Counter, Gauge, Histogram

from ingestor.contract import ProblemLog, backoff_delays, get_logger
from ingestor.database.config import DatabaseConfig
from ingestor.database.connection import CONNECTION_ERRORS, DatabaseUnavailable, connect
from ingestor.database.schema import refresh_view
from ingestor.derive.config import DerivationConfig
from ingestor.derive.engine import Deriver, DeriveReport
from ingestor.derive.segments import US
from ingestor.plant import PlantConfig

log = get_logger(__name__)

_OUTAGE: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, DatabaseUnavailable)
"""The database is unreachable or the connection is gone: wait and reconnect, nothing is wrong with the data."""

DERIVE_RUNS = Counter("ingestor_derive_runs_total", "Derivation runs of production and downtime facts", ["result"])
DERIVE_SECONDS = Histogram(
    "ingestor_derive_seconds", "Time of one derivation run", buckets=(0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0))
DERIVE_ROWS = Counter(
    "ingestor_derive_rows_total", "Fact rows the derivation inserted, updated or deleted", ["table", "action"])
DERIVE_LAG = Gauge(
    "ingestor_derive_lag_seconds",
    "How far the furthest-behind machine's derived facts are from now (includes the settle delay)")
STOPS_WITHOUT_REASON = Counter(
    "ingestor_derive_stops_without_reason_total",
    "Stops that got no fact_downtime row because no reason applied (configure default reasons)")
QUALITY_PASSED = Gauge(
    "ingestor_data_quality_check_passed", "check_data_quality(): 1 passed, 0 failed, NaN could not run", ["check"])
QUALITY_VIOLATIONS = Gauge(
    "ingestor_data_quality_violations", "check_data_quality(): the number of offending rows a check found", ["check"])
QUALITY_RUNS = Counter("ingestor_data_quality_runs_total", "Runs of check_data_quality()", ["result"])


@dataclass(frozen=True)
class QualityFinding:
    """One row of ``check_data_quality()``: ``passed`` None when the check could not run."""

    check: str
    table: str
    passed: bool | None
    details: Any
    violations: float


async def data_quality_findings(conn: asyncpg.Connection) -> list[QualityFinding]:
    """Run ``check_data_quality()`` and set the metrics; returns every check's row."""
    findings = []
    for row in await conn.fetch("SELECT check_name, table_name, passed, details FROM check_data_quality()"):
        details = json.loads(row["details"]) if isinstance(row["details"], str) else row["details"]
        finding = QualityFinding(row["check_name"], row["table_name"], row["passed"], details,
                                 _violations(details))
        QUALITY_PASSED.labels(finding.check).set(math.nan if finding.passed is None else float(finding.passed))
        QUALITY_VIOLATIONS.labels(finding.check).set(finding.violations)
        findings.append(finding)
    return findings


async def export_data_quality(conn: asyncpg.Connection) -> dict[str, bool | None]:
    """Run ``check_data_quality()`` and set the metrics; returns ``check -> passed``."""
    return {finding.check: finding.passed for finding in await data_quality_findings(conn)}


def _violations(details: Any) -> float:
    data = json.loads(details) if isinstance(details, str) else details
    if isinstance(data, dict):
        for key, value in data.items():
            if key.endswith("_count") and isinstance(value, int | float):
                return float(value)
    return math.nan


def record(report: DeriveReport, now_us: int) -> None:
    """Move the derivation metrics by what a run did."""
    for action, counts in (("insert", report.writes.inserted), ("update", report.writes.updated),
                           ("delete", report.writes.deleted)):
        for table, count in counts.items():
            if count:
                DERIVE_ROWS.labels(table, action).inc(count)
    if report.stops_without_reason:
        STOPS_WITHOUT_REASON.inc(report.stops_without_reason)
    if report.oldest_derived_until is not None:
        DERIVE_LAG.set(max(0.0, (now_us - report.oldest_derived_until) / US))


class DerivationTask:
    """Runs the derivation and the data-quality export on their schedules until cancelled."""

    def __init__(self, plant: PlantConfig, settings: DerivationConfig, database: DatabaseConfig, instance_id: str,
                 url: str, schema_ready: asyncio.Event, *,
                 on_derived: Callable[[DeriveReport], None] | None = None,
                 on_quality: Callable[[list[QualityFinding]], None] | None = None) -> None:
        self._settings = settings
        self._on_derived = on_derived
        self._on_quality = on_quality
        self._database = database
        self._url = url
        self._schema_ready = schema_ready
        self.deriver = Deriver(plant, settings, instance_id)
        self.runs = 0
        self.last_report: DeriveReport | None = None
        self.failures = 0
        """Consecutive attempts that found the database unavailable (reset when a connection opens)."""
        self._problems = ProblemLog(log, repeats_at_debug=True)

    async def run(self) -> None:
        settings = self._settings
        derive_every = settings.interval if settings.enabled else 0.0
        check_every = settings.check_data_quality
        if derive_every <= 0 and check_every <= 0:
            return
        await self._schema_ready.wait()
        conn: asyncpg.Connection | None = None
        next_derive = next_check = time.monotonic()
        prepared = False
        delays = backoff_delays(self._database.reconnect)
        try:
            while True:
                try:
                    if conn is None or conn.is_closed():
                        conn = await connect(self._url, self._database.connect_timeout)
                        prepared = False
                        self._problems.recovered("database", "derivation reconnected", after_failures=self.failures)
                        self.failures = 0
                        delays = backoff_delays(self._database.reconnect)
                    if derive_every > 0 and not prepared:
                        plans = await self.deriver.prepare(conn)
                        prepared = True
                        log.info("derivation ready", machines=[p.code for p in plans])
                        for plan in plans:
                            if plan.state_parameter and (plan.default_unplanned_reason is None or (
                                    plan.planned_stop and plan.default_planned_reason is None)):
                                log.warning("stops without a reason code will get no downtime row: set "
                                            "default_unplanned_reason and default_planned_reason", equipment=plan.code)
                    now = time.monotonic()
                    behind = False
                    if derive_every > 0 and now >= next_derive:
                        behind = await self._derive(conn)
                        next_derive = now + derive_every
                    if check_every > 0 and now >= next_check:
                        await self._check(conn)
                        next_check = now + check_every
                    if behind:
                        await asyncio.sleep(0)  # a backlog: go on at once, but let the daemon breathe
                        next_derive = time.monotonic()
                        continue
                    due = min(t for t, every in ((next_derive, derive_every), (next_check, check_every)) if every > 0)
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                except _OUTAGE as exc:
                    # an outage, not a bug: one line when it starts (the writer reports it as an error), a
                    # "still" line now and then, one when it is over; retried with the database's backoff
                    self.failures += 1
                    delay = next(delays)
                    self._problems.failed("database", "derivation waits for the database", error=str(exc),
                                          attempt=self.failures, retry_in_s=round(delay, 2))
                    if conn is not None:
                        conn.terminate()
                    conn = None
                    await asyncio.sleep(delay)
                except KeyError as exc:  # dimensions not synced yet (another daemon's YAML, …)
                    log.error("derivation cannot start", error=str(exc.args[0]) if exc.args else str(exc))
                    await asyncio.sleep(max(derive_every, 5.0))
                except Exception as exc:  # a bug: say so, keep the daemon running, try again later
                    DERIVE_RUNS.labels("error").inc()
                    log.error("derivation failed", error=repr(exc), exc_info=True)
                    await asyncio.sleep(max(derive_every, 5.0))
        finally:
            if conn is not None and not conn.is_closed():
                conn.terminate()

    async def _derive(self, conn: asyncpg.Connection) -> bool:
        started = time.monotonic()
        now_us = time.time_ns() // 1000
        try:
            report = await self.deriver.run_once(conn, now_us)
        except asyncpg.PostgresError as exc:
            DERIVE_RUNS.labels("error").inc()
            log.warning("derivation failed; retried next interval", error=str(exc))
            return False
        DERIVE_RUNS.labels("ok").inc()
        DERIVE_SECONDS.observe(time.monotonic() - started)
        record(report, now_us)
        self.runs += 1
        self.last_report = report
        if self._on_derived is not None:
            self._on_derived(report)
        if report.changed and self._settings.refresh_oee_after_change:
            with contextlib.suppress(asyncpg.PostgresError):
                await refresh_view(conn, "view_oee_daily")
        if report.changed:
            log.info("facts derived", windows=report.windows, inserted=report.writes.inserted,
                     updated=report.writes.updated, deleted=report.writes.deleted)
        return report.behind

    async def _check(self, conn: asyncpg.Connection) -> None:
        try:
            findings = await data_quality_findings(conn)
        except asyncpg.PostgresError as exc:
            QUALITY_RUNS.labels("error").inc()
            log.warning("check_data_quality() failed", error=str(exc))
            return
        QUALITY_RUNS.labels("ok").inc()
        if self._on_quality is not None:
            self._on_quality(findings)
        failed = sorted(f.check for f in findings if f.passed is False)
        if failed:
            log.warning("data quality checks failed", checks=failed)


async def stop_task(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait for it (its transaction, if any, rolls back with its connection)."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
