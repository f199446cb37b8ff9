"""The path of a reading after its connector: a bounded in-memory queue, batches by size and age, a writer.

Connectors ``put`` readings (with an optional ``on_durable`` callback) into :class:`ReadingQueue`.  When the
queue holds ``queue_size`` readings, ``put`` waits: that is the backpressure a connector feels (MQTT stops
acknowledging, pollers slow down), and every wait is counted.  :class:`BatchWriter` takes batches of up to
``batch_rows`` readings, or whatever arrived within ``batch_age`` of the first, and hands them to the sink; a
batch is retried, in order, until the sink commits it, and only then are its ``on_durable`` callbacks called.

The durable local spool (store-and-forward across outages and crashes) slots in between the queue and the
writer; until it exists, readings wait in memory while the database is down.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from pydantic import Field

from ingestor import metrics
from ingestor.config_types import Duration, StrictModel
from ingestor.logs import get_logger
from ingestor.readings import Reading

log = get_logger(__name__)


class PipelineConfig(StrictModel):
    """``pipeline:`` batching, memory bound, spool location."""

    batch_rows: int = Field(default=5000, ge=1, le=1_000_000, description="most readings in one COPY")
    batch_age: Duration = Field(default=1.0, gt=0, description="longest a reading waits for its batch to fill")
    queue_size: int = Field(default=100_000, ge=1, description="most readings held in memory")
    spool_dir: Path = Field(default=Path("/var/lib/ingestor/spool"), description="local store-and-forward spool")
    shutdown_timeout: Duration = Field(
        default=30.0, ge=0, description="how long a shutdown waits for the database to take what is queued")


class Sink(Protocol):
    """Where batches go; the PostgreSQL sink implements this."""

    async def write(self, readings: Sequence[Reading]) -> None:
        """Commit the readings, or raise (the writer retries the same batch)."""
        ...


class _Entry:
    __slots__ = ("accepted_at", "on_durable", "readings")

    def __init__(self, readings: Sequence[Reading], on_durable: Callable[[], None] | None) -> None:
        self.readings = readings
        self.on_durable = on_durable
        self.accepted_at = time.monotonic()


class ReadingQueue:
    """A bounded FIFO of readings, counted in readings (not in calls)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: deque[_Entry] = deque()
        self._size = 0
        self._changed = asyncio.Condition()
        self._closed = False

    def __len__(self) -> int:
        return self._size

    @property
    def oldest_age(self) -> float:
        """Seconds the oldest queued reading has waited (0 when empty)."""
        return time.monotonic() - self._entries[0].accepted_at if self._entries else 0.0

    def sink_for(self, connector: str) -> ConnectorSink:
        """The :class:`~connectors.base.ReadingSink` handed to one connector."""
        return ConnectorSink(self, connector)

    async def put(self, readings: Sequence[Reading], on_durable: Callable[[], None] | None, connector: str) -> None:
        if not readings:
            if on_durable is not None:
                on_durable()
            return
        if self._closed:
            raise RuntimeError("the pipeline is shut down")
        async with self._changed:
            # An entry bigger than the whole queue is still let in once the queue is empty.
            if self._size and self._size + len(readings) > self.capacity:
                metrics.QUEUE_FULL_WAITS.labels(connector).inc()
                await self._changed.wait_for(
                    lambda: self._closed or not self._size or self._size + len(readings) <= self.capacity)
                if self._closed:
                    raise RuntimeError("the pipeline is shut down")
            self._entries.append(_Entry(readings, on_durable))
            self._size += len(readings)
            metrics.READINGS_RECEIVED.labels(connector).inc(len(readings))
            metrics.QUEUE_READINGS.set(self._size)
            self._changed.notify_all()

    async def take(self, max_rows: int, max_age: float) -> list[_Entry]:
        """Wait for readings, then return entries totalling up to ``max_rows`` readings, waiting at most
        ``max_age`` after the first for more.  Entries are never split.  Empty only once closed and drained."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._entries or self._closed)
            if not self._entries:
                return []
            deadline = self._entries[0].accepted_at + max_age
            while self._size < max_rows and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                size = self._size
                try:
                    await asyncio.wait_for(self._changed.wait_for(lambda: self._size != size or self._closed),
                                           remaining)
                except TimeoutError:
                    break
            batch: list[_Entry] = []
            rows = 0
            while self._entries and (not batch or rows + len(self._entries[0].readings) <= max_rows):
                entry = self._entries.popleft()
                batch.append(entry)
                rows += len(entry.readings)
            self._size -= rows
            metrics.QUEUE_READINGS.set(self._size)
            self._changed.notify_all()
            return batch

    async def close(self) -> None:
        """No more puts; ``take`` drains what is left and then returns empty."""
        async with self._changed:
            self._closed = True
            self._changed.notify_all()


class ConnectorSink:
    """One connector's handle on the queue (so metrics know who sent what)."""

    __slots__ = ("_connector", "_queue")

    def __init__(self, queue: ReadingQueue, connector: str) -> None:
        self._queue = queue
        self._connector = connector

    async def put(self, readings: Sequence[Reading], on_durable: Callable[[], None] | None = None) -> None:
        await self._queue.put(readings, on_durable, self._connector)


class BatchWriter:
    """Moves batches from the queue to the sink, retrying each until it commits."""

    def __init__(self, queue: ReadingQueue, sink: Sink, config: PipelineConfig,
                 retry_initial: float = 0.5, retry_max: float = 30.0) -> None:
        self._queue = queue
        self._sink = sink
        self._config = config
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self.pending: list[_Entry] = []

    async def run(self) -> None:
        """Until the queue is closed and empty."""
        while True:
            self.pending = await self._queue.take(self._config.batch_rows, self._config.batch_age)
            if not self.pending:
                return
            readings = [r for entry in self.pending for r in entry.readings]
            await self._write(readings)
            for entry in self.pending:
                if entry.on_durable is not None:
                    entry.on_durable()
            self.pending = []
            metrics.OLDEST_UNWRITTEN_AGE.set(self._queue.oldest_age)

    def unwritten(self) -> int:
        """Readings in memory that are not committed (lost if the process stops now)."""
        return len(self._queue) + sum(len(entry.readings) for entry in self.pending)

    async def _write(self, readings: list[Reading]) -> None:
        delay = self._retry_initial
        failures = 0
        while True:
            started = time.monotonic()
            try:
                await self._sink.write(readings)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                metrics.COPY_ERRORS.labels(type(exc).__name__).inc()
                (log.error if failures == 1 else log.debug)(
                    "batch not written; will retry", rows=len(readings), attempt=failures, error=str(exc))
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, self._retry_max)
                continue
            if failures:
                log.info("batch written after retries", rows=len(readings), attempts=failures + 1)
            metrics.BATCH_SECONDS.observe(time.monotonic() - started)
            return
