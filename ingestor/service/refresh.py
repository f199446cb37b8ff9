"""Scheduled refreshes of the materialized views the database does not refresh by itself.

``view_oee_daily`` and ``view_reliability_summary`` always, ``sensor_5min_avg`` where it is an ordinary
materialized view (everywhere but full TimescaleDB, whose continuous aggregate has its own policy).  Each view
has its own interval; a refresh runs ``CONCURRENTLY`` so dashboards keep reading while it runs.  The
refresher has its own connection, so a long refresh never delays the writer.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg
from prometheus_client import Counter, Histogram

from ingestor.contract import get_logger
from ingestor.database.config import DatabaseConfig
from ingestor.database.connection import connect
from ingestor.database.schema import refresh_view, views_to_refresh

log = get_logger(__name__)

VIEW_REFRESH_SECONDS = Histogram(
    "ingestor_view_refresh_seconds", "Time to refresh a materialized view", ["view"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0))
VIEW_REFRESH_ERRORS = Counter("ingestor_view_refresh_errors_total", "Failed view refreshes", ["view"])


class ViewRefresher:
    """Refreshes each due view in turn; waits for the schema to exist before the first run."""

    def __init__(self, config: DatabaseConfig, url: str, schema_ready: asyncio.Event) -> None:
        self._config = config
        self._url = url
        self._schema_ready = schema_ready
        self.last_refresh: dict[str, float] = {}

    def _interval(self, view: str) -> float:
        return float(getattr(self._config.refresh, view, 0.0))

    async def run(self) -> None:
        await self._schema_ready.wait()
        conn: asyncpg.Connection | None = None
        due: dict[str, float] = {}
        try:
            while True:
                try:
                    if conn is None or conn.is_closed():
                        conn = await connect(self._url, self._config.connect_timeout)
                        views = [v for v in await views_to_refresh(conn) if self._interval(v) > 0]
                        now = time.monotonic()
                        due = {view: due.get(view, now) for view in views}
                    if not due:
                        return
                    view, at = min(due.items(), key=lambda item: item[1])
                    await asyncio.sleep(max(0.0, at - time.monotonic()))
                    started = time.monotonic()
                    try:
                        await refresh_view(conn, view)
                    except asyncpg.PostgresError as exc:
                        VIEW_REFRESH_ERRORS.labels(view).inc()
                        log.warning("view refresh failed", view=view, error=str(exc))
                    else:
                        elapsed = time.monotonic() - started
                        VIEW_REFRESH_SECONDS.labels(view).observe(elapsed)
                        self.last_refresh[view] = time.time()
                        log.debug("view refreshed", view=view, seconds=round(elapsed, 3))
                    due[view] = started + self._interval(view)
                except Exception as exc:  # connection trouble: reconnect after a pause
                    log.debug("view refresher lost its connection", error=str(exc))
                    if conn is not None:
                        conn.terminate()
                    conn = None
                    await asyncio.sleep(5)
        finally:
            if conn is not None and not conn.is_closed():
                conn.terminate()
