"""The daemon's life: signals → startup → run → graceful drain → exit.

Startup opens the spool (refusing to start when another process uses it), the HTTP endpoints, the spooler
(queue → spool), the writer (spool → database: it connects, applies the schema and syncs the plant dimensions
before its first commit, retrying while the database is down), one supervisor per enabled connector, the view
refresher, the derivation of production and downtime facts (with the data-quality checks), the live events
(woken by each commit of the writer), the retention job (``database.retention``) and the watch on
TimescaleDB's background jobs.

The first SIGTERM or SIGINT stops the connectors, spools what is queued, keeps writing the spool to the
database for up to ``pipeline.shutdown_timeout`` (what is left stays in the spool for the next start), and
exits 0.  When the database is down at that moment (the writer's last attempt to connect failed), the writer
stops at once and says how many readings wait in the spool: it is durable, and waiting gains nothing.  A
second signal exits at once; the spool is consistent at any instant, so even then nothing acknowledged is
lost.

SIGHUP (and, with ``reload.watch``, an edit of the file) reloads the configuration: the file is validated first
(a bad file changes nothing; each problem is logged as ``check-config`` prints it), then the difference is
applied (:mod:`ingestor.daemon.reload`): only the connectors whose configuration changed are stopped (as the
drain stops them: an MQTT connector waits for its readings to be durable) and started again, new ones started,
removed ones stopped; a changed plant is synced to the database by the writer; the queue, the spool and the
writer are never touched.  Settings that need a restart are named in the log and kept.

Under systemd (``Type=notify``) the daemon says READY=1 once the schema is ready, STATUS= every few seconds,
WATCHDOG=1 from its loop when ``WatchdogSec=`` is set, RELOADING=1 and READY=1 around a reload, and STOPPING=1
when the drain begins (:mod:`ingestor.service.notify`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import asyncpg

from ingestor.api.auth import TokenError
from ingestor.api.server import ApiServer, ListenError
from ingestor.api.state import ApiState
from ingestor.config.loader import load_config
from ingestor.config.model import IngestorConfig
from ingestor.config.problems import ConfigError
from ingestor.config.registry import create_connector
from ingestor.contract import BuildContext, ConnectorConfig, get_logger, now_us
from ingestor.contract.timeouts import wait_for
from ingestor.daemon.reload import LAST_RELOAD_SUCCESS, RELOADS, ReloadPlan, plan_reload
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
from ingestor.service.retention import RetentionTask
from ingestor.service.watch import FileWatcher, signature

log = get_logger(__name__)

EXIT_FORCED = 130
EXIT_CONFIG = 2  # as ingestor.cli.common.EXIT_CONFIG: the configuration cannot work (here: its spool_dir)


class Daemon:
    """One running ingestor.  ``serve()`` returns the process exit code."""

    def __init__(self, config: IngestorConfig, *, url: str | None = None, config_path: Path | None = None) -> None:
        self.config = config
        self.config_path = config_path
        """The file a SIGHUP (or ``reload.watch``) reloads; None: the daemon was given a model, nothing to reload."""
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
                                  on_committed=lambda: self.live.wake())  # a reload may replace self.live
        self.supervisors = [self._supervisor(c, config) for c in config.enabled_connectors()]
        self._connectors: dict[str, tuple[ConnectorSupervisor, asyncio.Task[None]]] = {}
        """The running connectors by name: their supervisor and its task (a reload stops and starts them)."""
        self._api: ApiState | None = None
        self._derivation: asyncio.Task[None] | None = None
        self._live: asyncio.Task[None] | None = None
        self._reload_wanted = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._watcher = FileWatcher(config_path) if config_path is not None else None
        self.jobs = JobMonitor(self.url, interval=config.database.timescaledb_jobs_check,
                               connect_timeout=config.database.connect_timeout, schema_ready=self.schema_ready)
        metrics.OLDEST_UNWRITTEN_AGE.set_function(self.oldest_unwritten_age)
        metrics.QUEUE_READINGS.set_function(lambda: len(self.queue))
        self.health: ApiServer | None = None
        self.retention: RetentionTask | None = None
        self.systemd = SystemdNotifier()
        self._stop = asyncio.Event()
        self._finishing = asyncio.Event()
        self._signals = 0

    def _supervisor(self, connector: ConnectorConfig, config: IngestorConfig) -> ConnectorSupervisor:
        # What the plant has, for connectors that learn equipment from the traffic (MQTT topic templates): they
        # can refuse an unknown code at the source, counted, instead of passing it down to be dead-lettered.
        # Each connector's state directory sits in the spool directory: what a connector remembers (the OPC UA
        # connector's last stored timestamp per tag) describes readings in that spool and goes with it.
        context = BuildContext(known_equipment=frozenset(e.code for *_, e in config.plant.equipment()),
                               known_units=frozenset(u.code for u in config.plant.units),
                               state_dir=config.pipeline.spool_dir / "connectors" / connector.name)
        return ConnectorSupervisor(create_connector(connector, context), self.queue.sink_for(connector.name),
                                   connector.reconnect)

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

    def _on_hangup(self) -> None:
        log.info("reload requested", signal="SIGHUP", file=str(self.config_path) if self.config_path else None)
        self._reload_wanted.set()

    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        installed = []
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signum, self._on_signal, signum)
                installed.append(signum)
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGHUP, self._on_hangup)
            installed.append(signal.SIGHUP)
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
                        self._api = api
                    except (ListenError, TokenError) as exc:
                        log.error("cannot start", error=str(exc))
                        return 1
                stack.push_async_callback(self.writer.close)
                spooler = asyncio.create_task(self.spooler.run(), name="spooler")
                writer = asyncio.create_task(self.writer.run(self._finishing), name="writer")
                refresher = asyncio.create_task(
                    ViewRefresher(self.config.database, self.url, self.schema_ready).run(), name="view-refresher")
                self._start_derived()
                stack.push_async_callback(self._stop_derived)
                stack.push_async_callback(stop_task, asyncio.create_task(self.jobs.run(), name="timescaledb-jobs"))
                for supervisor in self.supervisors:
                    self._start_connector(supervisor)
                self.retention = RetentionTask(self.config.database, self.url, self.schema_ready)
                stack.push_async_callback(stop_task, asyncio.create_task(self.retention.run(), name="retention"))
                stack.callback(self.systemd.close)
                stack.push_async_callback(stop_task, asyncio.create_task(self._tell_systemd(), name="systemd"))
                reloads = [asyncio.create_task(self._reloads(), name="reloads"),
                           asyncio.create_task(self._watch(), name="config-watch")]
                stop = asyncio.create_task(self._stop.wait())
                done, _ = await asyncio.wait({stop, writer, spooler}, return_when=asyncio.FIRST_COMPLETED)
                if stop not in done:  # the pipeline never ends on its own: a bug, say so loudly
                    failed = writer if writer in done else spooler
                    log.error("pipeline task stopped unexpectedly", task=failed.get_name(),
                              error=repr(failed.exception()))
                    for reload_task in reloads:
                        await stop_task(reload_task)
                    connectors = [task for _, task in self._connectors.values()]
                    for task in (*connectors, refresher, writer, spooler):
                        task.cancel()
                    stop.cancel()
                    await asyncio.gather(*connectors, refresher, writer, spooler, stop, return_exceptions=True)
                    return 1
                for task in reloads:  # a reload in progress ends here; the drain stops what is running now
                    await stop_task(task)
                return await self._drain([task for _, task in self._connectors.values()], spooler, writer, refresher)
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)

    # --- the parts a reload starts and stops ----------------------------------------------------------------------

    def _start_connector(self, supervisor: ConnectorSupervisor) -> None:
        task = asyncio.create_task(supervisor.run(), name=f"connector-{supervisor.name}")
        self._connectors[supervisor.name] = (supervisor, task)

    async def _stop_connectors(self, names: list[str]) -> list[ConnectorSupervisor]:
        """Stop connectors as the drain does: each closes gracefully (an MQTT connector waits for what it
        handed to the pipeline to be durable and acknowledged); the queue, spooler and writer go on."""
        stopping = [self._connectors.pop(name) for name in names if name in self._connectors]
        for _, task in stopping:
            task.cancel()
        await asyncio.gather(*(task for _, task in stopping), return_exceptions=True)
        return [supervisor for supervisor, _ in stopping]

    def _start_derived(self) -> None:
        """The derivation and the live events, with the plant and settings of ``self.config``."""
        config = self.config
        self.live = LiveEvents(config.plant, config.events, config.derivation, config.database, config.instance_id,
                               self.url, self.schema_ready)
        self._derivation = asyncio.create_task(
            DerivationTask(config.plant, config.derivation, config.database, config.instance_id, self.url,
                           self.schema_ready, on_derived=self.live.derived,
                           on_quality=self.live.quality_checked).run(), name="derivation")
        self._live = asyncio.create_task(self.live.run(), name="live-events")

    async def _stop_derived(self) -> None:
        for task in (self._derivation, self._live):
            if task is not None:
                await stop_task(task)
        self._derivation = self._live = None

    # --- reload --------------------------------------------------------------------------------------------------

    async def _reloads(self) -> None:
        """One reload per request (SIGHUP, the watcher); requests during a reload make one more after it."""
        while True:
            await self._reload_wanted.wait()
            self._reload_wanted.clear()
            await self.reload()

    async def _watch(self) -> None:
        """``reload.watch``: look at the file every ``reload.interval`` and reload when its content changed."""
        watcher = self._watcher
        if watcher is None:
            return
        while True:
            await asyncio.sleep(self.config.reload.interval)
            if self.config.reload.watch and watcher.changed():
                log.info("configuration file changed; reloading", file=str(watcher.path))
                self._reload_wanted.set()

    async def reload(self) -> str:
        """Load and validate the file again and apply the difference; returns the result (``applied``,
        ``rejected`` or ``no_change``).  Under systemd: RELOADING=1 before, READY=1 after."""
        async with self._reload_lock:
            told = self.schema_ready.is_set()  # READY=1 was sent: systemd may be told of the reload
            if told:
                now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
                self.systemd.notify("RELOADING=1", f"MONOTONIC_USEC={now_usec}", "STATUS=reloading the configuration")
            try:
                result = await self._reload()
            except Exception as exc:  # a bug: the daemon goes on with what runs now
                log.error("reload failed", error=repr(exc), exc_info=True)
                result = "rejected"
            finally:
                if told:
                    self.systemd.notify("READY=1", "STATUS=configuration reloaded")
            RELOADS.labels(result).inc()
            return result

    async def _reload(self) -> str:
        path = self.config_path
        if path is None:
            log.warning("reload requested, but the daemon was not started from a file; nothing to reload")
            return "no_change"
        seen = signature(path)
        if self._watcher is not None:
            self._watcher.remember(seen)
        try:
            new = load_config(path)
        except ConfigError as exc:
            # each problem exactly as `ingestor check-config` prints it (FILE:LINE:COL: field: message)
            for problem in exc.problems:
                log.error("configuration problem", problem=str(problem))
            log.error("reload rejected: the file is invalid; the running configuration stays", file=str(path),
                      errors=len(exc.problems))
            return "rejected"
        plan = plan_reload(self.config, new)
        if plan.needs_restart:
            log.warning("needs a restart: " + ", ".join(plan.needs_restart) + "; these keep their running values",
                        settings=plan.needs_restart)
        if not plan.applies_something:
            log.info("reload: nothing to apply", file=str(path))
            return "no_change"
        wanted = {c.name: c for c in plan.config.enabled_connectors()}
        try:  # every new connector is built before anything stops, so a connector that cannot be built changes nothing
            built = [self._supervisor(wanted[name], plan.config) for name in (*plan.restart, *plan.start)]
        except Exception as exc:
            log.error("reload rejected: a connector cannot be built; the running configuration stays",
                      error=str(exc))
            return "rejected"
        await self._apply(plan, built)
        log.info("reload applied", file=str(path), restarted=plan.restart, started=plan.start, stopped=plan.stop,
                 changed=plan.changed_sections(), unchanged=[name for name in self._connectors
                                                             if name not in plan.restart and name not in plan.start])
        LAST_RELOAD_SUCCESS.set(time.time())
        return "applied"

    async def _apply(self, plan: ReloadPlan, built: list[ConnectorSupervisor]) -> None:
        self.config = plan.config
        for removed in await self._stop_connectors([*plan.stop, *plan.restart]):
            if removed.name in plan.stop:
                removed.forget()
        for name in plan.stop:
            self.queue.forget(name, removed=True)
        for name in plan.restart:
            self.queue.forget(name, removed=False)
        for supervisor in built:
            self._start_connector(supervisor)
        self.supervisors = [supervisor for supervisor, _ in self._connectors.values()]
        if plan.plant:
            self.writer.resync_dimensions()
            if self._api is not None:
                self._api.plant = plan.config.plant
        if plan.plant or plan.derivation:
            await self._stop_derived()
            self._start_derived()
        if plan.logging:
            configure_logging(plan.config.logging)

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
            await wait_for(asyncio.shield(writer), timeout)
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


def run_daemon(config: IngestorConfig, path: Path | None = None) -> int:
    """Configure logging and run the daemon until it is told to stop; SIGHUP reloads ``path``."""
    configure_logging(config.logging)
    return asyncio.run(Daemon(config, config_path=path).serve())
