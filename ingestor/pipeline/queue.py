"""The first stage after a connector: a bounded in-memory queue of readings.

Connectors ``put`` readings (with an optional ``on_durable`` callback) into the queue.  When it holds
``queue_size`` readings, ``put`` waits: that is the backpressure a connector feels (MQTT stops acknowledging,
pollers slow down), and every wait is counted.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence

from ingestor.contract import Reading
from ingestor.contract.timeouts import wait_for
from ingestor.pipeline import metrics


class Entry:
    """One ``put``: its readings, its acknowledgment callback, and when it was accepted."""

    __slots__ = ("accepted_at", "on_durable", "readings")

    def __init__(self, readings: Sequence[Reading], on_durable: Callable[[], None] | None) -> None:
        self.readings = readings
        self.on_durable = on_durable
        self.accepted_at = time.monotonic()


class ReadingQueue:
    """A bounded FIFO of readings, counted in readings (not in calls)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: deque[Entry] = deque()
        self._size = 0
        self._changed = asyncio.Condition()
        self._closed = False
        self.accepted = 0
        self.received: dict[str, int] = {}
        """Readings accepted per connector (the operator page's rates; Prometheus has the same per label)."""
        self._last: dict[str, dict[tuple[str, str], Reading]] = {}

    def __len__(self) -> int:
        return self._size

    @property
    def oldest_age(self) -> float:
        """Seconds the oldest queued reading has waited (0 when empty)."""
        return time.monotonic() - self._entries[0].accepted_at if self._entries else 0.0

    def sink_for(self, connector: str) -> ConnectorSink:
        """The :class:`~ingestor.contract.ReadingSink` handed to one connector."""
        return ConnectorSink(self, connector, self._last.setdefault(connector, {}))

    def forget(self, connector: str, *, removed: bool) -> None:
        """A reload stopped the connector (``removed``) or restarts it, perhaps with other tags: its last readings
        leave the operator page; a restarted connector's come back with its next readings (its new sink shares
        the emptied record)."""
        if removed:
            self._last.pop(connector, None)
        elif connector in self._last:
            self._last[connector].clear()

    def last_readings(self) -> list[dict[str, object]]:
        """The last reading the pipeline accepted of each equipment parameter, per connector."""
        return [{"connector": connector, "equipment": r.equipment, "parameter": r.parameter, "value": r.value,
                 "unit": r.unit, "quality": int(r.quality), "timestamp_us": r.timestamp_us}
                for connector, last in self._last.items() for r in list(last.values())]

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
            self._entries.append(Entry(readings, on_durable))
            self._size += len(readings)
            self.accepted += len(readings)
            self.received[connector] = self.received.get(connector, 0) + len(readings)
            metrics.READINGS_RECEIVED.labels(connector).inc(len(readings))
            self._changed.notify_all()

    async def take(self, max_rows: int, max_age: float) -> list[Entry]:
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
                before = self._size
                try:
                    await wait_for(
                        self._changed.wait_for(lambda: self._size != before or self._closed), remaining)  # noqa: B023
                except TimeoutError:
                    break
            batch: list[Entry] = []
            rows = 0
            while self._entries and (not batch or rows + len(self._entries[0].readings) <= max_rows):
                entry = self._entries.popleft()
                batch.append(entry)
                rows += len(entry.readings)
            self._size -= rows
            self._changed.notify_all()
            return batch

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called (the daemon is shutting down)."""
        return self._closed

    async def close(self) -> None:
        """No more puts; ``take`` drains what is left and then returns empty."""
        async with self._changed:
            self._closed = True
            self._changed.notify_all()


MAX_TRACKED = 100_000
"""Most equipment parameters whose last reading one connector's sink remembers (for the operator page)."""


class ConnectorSink:
    """One connector's handle on the queue (so metrics know who sent what), remembering the last reading of
    each equipment parameter it accepted."""

    __slots__ = ("_connector", "_last", "_queue")

    def __init__(self, queue: ReadingQueue, connector: str, last: dict[tuple[str, str], Reading]) -> None:
        self._queue = queue
        self._connector = connector
        self._last = last

    async def put(self, readings: Sequence[Reading], on_durable: Callable[[], None] | None = None) -> None:
        await self._queue.put(readings, on_durable, self._connector)
        last = self._last
        if len(last) < MAX_TRACKED:
            for reading in readings:
                last[reading.equipment, reading.parameter] = reading
        else:  # full: only keep known ones fresh
            for reading in readings:
                key = (reading.equipment, reading.parameter)
                if key in last:
                    last[key] = reading


