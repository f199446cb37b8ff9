"""The daemon's life: signals → startup → run → graceful drain → exit.

Startup opens the spool (refusing to start when another process uses it), the HTTP endpoints, the spooler
(queue → spool), the writer (spool → database: it connects, applies the schema and syncs the plant dimensions
before its first commit, retrying while the database is down), one supervisor per enabled connector, the view
refresher, the derivation of production and downtime facts (with the data-quality checks), the live events
(woken by each commit of the writer) and the watch on TimescaleDB's background jobs.

The first SIGTERM or SIGINT stops the connectors, spools what is queued, keeps writing the spool to the
database for up to ``pipeline.shutdown_timeout`` (what is left stays in the spool for the next start), and
exits 0.  When the database is down at that moment (the writer's last attempt to connect failed), the writer
stops at once and says how many readings wait in the spool: it is durable, and waiting gains nothing.  A
second signal exits at once; the spool is consistent at any instant, so even then nothing acknowledged is
lost.

Under systemd (``Type=notify``) the daemon says READY=1 once the schema is ready, STATUS= every few seconds,
WATCHDOG=1 from its loop when ``WatchdogSec=`` is set and STOPPING=1 when the drain begins
(:mod:`ingestor.service.notify`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import sys
from contextlib import AsyncExitStack
from typing import Any

import asyncpg

from ingestor.api.auth import TokenError
from ingestor.api.server import ApiServer, ListenError
from ingestor.api.state import ApiState
from ingestor.config.model import IngestorConfig
from ingestor.config.registry import create_connector
from ingestor.contract import BuildContext, get_logger, now_us
from ingestor.daemon.supervisor import ConnectorSupervisor
from ingestor.database.dimensions import DimensionKeys
from ingestor.database.prepare import prepare_database
from ingestor.derive.live import LiveEvents
from ingestor.derive.task import DerivationTask, stop_task
from ingestor.pipeline import metrics
from ingestor.pipeline.queue import ReadingQueue
from ingestor.pipeline.spool import AsyncSpool, Spool, SpoolError, SpoolUnusable
from ingestor.pipeline.spooler import Spooler
from ingestor.pipeline.writer import SpoolWriter
from ingestor.service.jobs import JobMonitor
from ingestor.service.logs import configure_logging
from ingestor.service.notify import ReadingRate, SystemdNotifier
from ingestor.service.refresh import ViewRefresher

log = get_logger(__name__)

EXIT_FORCED = 130
EXIT_CONFIG = 2  # as ingestor.cli.common.EXIT_CONFIG: the configuration cannot work (here: its spool_dir)


class Daemon:
    """One running ingestor.  ``serve()`` returns the process exit code."""

    def __init__(self, config: IngestorConfig, *, url: str | None = None) -> None:
        self.config = config
        pipeline = config.pipeline
        self.url = url or config.database.effective_url()
        self.queue = ReadingQueue(pipeline.queue_size)
        self.spool = AsyncSpool(Spool(pipeline.spool_dir, config.instance_id, pipeline.durability))
        self.spooler = Spooler(self.queue, self.spool, pipeline)
        self.schema_ready = asyncio.Event()
        self.live = LiveEvents(config.plant, config.events, config.derivation, config.database, config.instance_id,
                               self.url, self.schema_ready)
        self.writer = SpoolWriter(self.spool, self.spooler, pipeline, url=self.url, instance_id=config.instance_id,
                                  prepare=self._prepare_database, connect_timeout=config.database.connect_timeout,
                                  retry=config.database.reconnect, on_connected=self.schema_ready.set,
                                  on_committed=self.live.wake)
        # What the plant has, for connectors that learn equipment from the traffic (MQTT topic templates): they
        # can refuse an unknown code at the source, counted, instead of passing it down to be dead-lettered.
        context = BuildContext(known_equipment=frozenset(e.code for *_, e in config.plant.equipment()),
                               known_units=frozenset(u.code for u in config.plant.units))
        # Each connector's state directory sits in the spool directory: what a connector remembers (the OPC UA
        # connector's last stored timestamp per tag) describes readings in that spool and goes with it.
        self.supervisors = [
            ConnectorSupervisor(
                create_connector(c, dataclasses.replace(context, state_dir=pipeline.spool_dir / "connectors" / c.name)),
                self.queue.sink_for(c.name), c.reconnect)
            for c in config.enabled_connectors()
        ]
        self.jobs = JobMonitor(self.url, interval=config.database.timescaledb_jobs_check,
                               connect_timeout=config.database.connect_timeout, schema_ready=self.schema_ready)
        metrics.OLDEST_UNWRITTEN_AGE.set_function(self.oldest_unwritten_age)
        metrics.QUEUE_READINGS.set_function(lambda: len(self.queue))
        self.health: ApiServer | None = None
        self.systemd = SystemdNotifier()
        self._stop = asyncio.Event()
        self._finishing = asyncio.Event()
        self._signals = 0

    def oldest_unwritten_age(self) -> float:
        """Seconds since the oldest reading not yet committed was accepted (0 when everything is written)."""
        oldest = self.spool.spool.oldest_created_us
        spooled = (now_us() - oldest) / 1e6 if oldest is not None else 0.0
        return max(spooled, self.queue.oldest_age)

    async def _prepare_database(self, conn: asyncpg.Connection) -> DimensionKeys:
        """What the writer's every new connection needs first: the schema (applied once per process, when
        ``database.apply_schema``) and the plant's dimensions synced."""
        prepared = await prepare_database(conn, self.config.database, self.config.plant,
                                          apply=not self.schema_ready.is_set())
        if prepared.schema is not None:
            report = prepared.schema
            log.info("schema ready", tier=str(report.tier), version=report.current_version,
                     applied=report.applied, skipped=[s.object for s in report.skipped])
        keys = prepared.keys
        changed = {table: n for table, n in keys.changed.items() if n}
        log.info("dimensions synced", equipment=len(keys.equipment), changed=changed or "nothing")
        return keys

    def stop(self) -> None:
        """Begin a graceful shutdown (what the first SIGTERM does)."""
        self._stop.set()

    def status(self) -> tuple[bool, dict[str, Any]]:
        spool = self.spool.spool
        ready = self.writer.connected and self.schema_ready.is_set()
        # Failing TimescaleDB jobs make the daemon degraded, not unready: readings are still written
        # (ingestor/service/jobs.py says why).
        return ready, {
            "instance_id": self.config.instance_id,
            "degraded": self.jobs.degraded(),
            "database": {"connected": self.writer.connected, "schema_ready": self.schema_ready.is_set(),
                         "watermark": self.writer.watermark, "last_error": self.writer.last_error},
            "queue": {"readings": len(self.queue), "capacity": self.queue.capacity},
            "oldest_unwritten_age_s": round(self.oldest_unwritten_age(), 3),
            "spool": {"readings": spool.readings, "batches": spool.batches, "bytes": spool.bytes_used,
                      "limit_bytes": self.config.pipeline.spool_max_bytes},
            "connectors": {s.name: {**s.status(), "readings_received": self.queue.received.get(s.name, 0)}
                           for s in self.supervisors},
            "timescaledb_jobs": self.jobs.status(),
        }

    def tags(self) -> list[dict[str, Any]]:
        """Each tag's last reading (the operator page)."""
        return self.queue.last_readings()

    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("shutting down", signal=signal.Signals(signum).name)
            self._stop.set()
        else:
            log.error("second signal: exiting now; the spool keeps what was acknowledged",
                      signal=signal.Signals(signum).name, readings_in_memory=len(self.queue))
            os._exit(EXIT_FORCED)

    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        installed = []
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signum, self._on_signal, signum)
                installed.append(signum)
        log.info("ingestor starting", instance_id=self.config.instance_id,
                 connectors=[s.name for s in self.supervisors], spool=str(self.spool.spool.path))
        metrics.DATABASE_UP.set(0)
        try:
            async with AsyncExitStack() as stack:
                try:
                    await self.spool.open()
                except SpoolUnusable as exc:  # one line naming the file and the problem, like check-config
                    log.error("cannot start", error=str(exc))
                    print(exc, file=sys.stderr)
                    return EXIT_CONFIG
                except SpoolError as exc:
                    log.error("cannot start", error=str(exc))
                    return 1
                stack.push_async_callback(self.spool.close)
                if self.spool.spool.readings:
                    log.info("spool holds readings from before; writing them first",
                             readings=self.spool.spool.readings, batches=self.spool.spool.batches)
                await self.spooler.load_keys()
                if self.config.http.enabled:
                    try:
                        api = ApiState(self.config.http, self.url, plant=self.config.plant, live=self,
                                   scrap_rate_alert=self.config.events.scrap_rate_alert,
                                   scrap_alert_min_parts=self.config.events.scrap_alert_min_parts)
                        self.health = await stack.enter_async_context(ApiServer(api))
                    except (ListenError, TokenError) as exc:
                        log.error("cannot start", error=str(exc))
                        return 1
                stack.push_async_callback(self.writer.close)
                spooler = asyncio.create_task(self.spooler.run(), name="spooler")
                writer = asyncio.create_task(self.writer.run(self._finishing), name="writer")
                refresher = asyncio.create_task(
                    ViewRefresher(self.config.database, self.url, self.schema_ready).run(), name="view-refresher")
                derivation = asyncio.create_task(
                    DerivationTask(self.config.plant, self.config.derivation, self.config.database,
                                   self.config.instance_id, self.url, self.schema_ready, on_derived=self.live.derived,
                                   on_quality=self.live.quality_checked).run(), name="derivation")
                stack.push_async_callback(stop_task, derivation)
                stack.push_async_callback(stop_task, asyncio.create_task(self.jobs.run(), name="timescaledb-jobs"))
                stack.push_async_callback(stop_task, asyncio.create_task(self.live.run(), name="live-events"))
                connectors = [asyncio.create_task(s.run(), name=f"connector-{s.name}") for s in self.supervisors]
                stack.callback(self.systemd.close)
                stack.push_async_callback(stop_task, asyncio.create_task(self._tell_systemd(), name="systemd"))
                stop = asyncio.create_task(self._stop.wait())
                done, _ = await asyncio.wait({stop, writer, spooler}, return_when=asyncio.FIRST_COMPLETED)
                if stop not in done:  # the pipeline never ends on its own: a bug, say so loudly
                    failed = writer if writer in done else spooler
                    log.error("pipeline task stopped unexpectedly", task=failed.get_name(),
                              error=repr(failed.exception()))
                    for task in (*connectors, refresher, writer, spooler, stop):
                        task.cancel()
                    await asyncio.gather(*connectors, refresher, writer, spooler, stop, return_exceptions=True)
                    return 1
                return await self._drain(connectors, spooler, writer, refresher)
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)

    async def _tell_systemd(self) -> None:
        """READY=1 once the schema is ready (the connectors are started by then), STATUS= and WATCHDOG=1 from
        this loop until the end (the drain included: it can take ``pipeline.shutdown_timeout``)."""
        rate = ReadingRate(lambda: self.queue.accepted)

        def status() -> str:
            database = "database connected" if self.writer.connected else "database down"
            return (f"{rate():.0f} readings/s, {self.spool.spool.readings} readings in the spool, {database}"
                    + ("" if self.schema_ready.is_set() else ", waiting for the schema"))

        pings = asyncio.create_task(self.systemd.run(status), name="systemd-status")
        try:
            await self.schema_ready.wait()
            self.systemd.notify("READY=1", f"STATUS={status()}")
            await pings
        finally:
            await stop_task(pings)

    async def _drain(self, connectors: list[asyncio.Task[None]], spooler: asyncio.Task[None],
                     writer: asyncio.Task[None], refresher: asyncio.Task[None]) -> int:
        self.systemd.notify("STOPPING=1", "STATUS=draining: stopping connectors, writing the spool")
        for task in connectors:
            task.cancel()
        await asyncio.gather(*connectors, return_exceptions=True)
        await self.queue.close()
        await spooler  # the rest of the queue goes into the spool: local, fast, needs no database
        self._finishing.set()
        timeout = self.config.pipeline.shutdown_timeout
        try:
            await asyncio.wait_for(asyncio.shield(writer), timeout)
        except TimeoutError:
            log.warning("the database did not take the whole spool before the shutdown timeout; the rest is "
                        "written at the next start", readings_in_spool=self.spool.spool.readings, timeout_s=timeout)
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
        refresher.cancel()
        await asyncio.gather(refresher, return_exceptions=True)
        log.info("ingestor stopped", readings_accepted=self.queue.accepted, readings_spooled=self.spooler.spooled,
                 readings_written=self.writer.written, readings_dead_lettered=self.writer.dead_lettered,
                 readings_dropped=sum(self.spooler.dropped.values()),
                 readings_left_in_spool=self.spool.spool.readings)
        return 0


def run_daemon(config: IngestorConfig) -> int:
    """Configure logging and run the daemon until it is told to stop."""
    configure_logging(config.logging)
    return asyncio.run(Daemon(config).serve())
