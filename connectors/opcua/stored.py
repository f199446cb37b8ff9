"""Each tag's newest source timestamp stored, remembered across reconnects and restarts.

A new subscription reports every monitored item's current value at once, with the source timestamp it had,
whether it changed or not (the initial notification the specification requires), and a poll after a reconnect
reads it again.  Stored again, such a value is a duplicate row: same equipment, parameter, timestamp and value.
The connector therefore skips a value whose source timestamp is not newer than the newest it has handed to
the pipeline for that tag.

Within one process the connector remembers what it handed over.  Across restarts it remembers what was
*durable*: the pipeline acknowledges each put once its readings are in the spool (``on_durable``), from which
they reach the database exactly once, and only then does a timestamp go into a small JSON file in the
connector's state directory (``BuildContext.state_dir``, beside the spool).  The file is rewritten at most
once a second while the connector runs, and at every acknowledgment after it has closed (a shutdown: the
spooler acknowledges the last readings after the connectors stop).  Lost or unreadable, it costs at most one
repeated value per tag, never a value: a crash between an acknowledgment and the next write only leaves the
file older than the spool.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Iterable, Sequence
from enum import Enum
from pathlib import Path

from ingestor.contract import ProblemLog, Reading, ReadingSink, get_logger

log = get_logger(__name__)

Key = tuple[str, str]
"""(equipment, parameter): a tag as the database stores it."""


class Order(Enum):
    NEWER = "newer"
    SAME = "same"      # the timestamp stored last: the value did not change
    OLDER = "older"    # before it: a clock that went back, or a server that reordered


class StoredTimestamps:
    """The newest source timestamp per tag handed to the pipeline, and (in ``state_dir``) the newest durable."""

    FILE_NAME = "last_timestamps.json"
    SAVE_EVERY = 1.0

    def __init__(self, connector: str, state_dir: Path | None, tags: Iterable[Key]) -> None:
        self._connector = connector
        self.path = state_dir / self.FILE_NAME if state_dir is not None else None
        self._tags = set(tags)
        self._handed: dict[Key, int] = {}
        self._durable: dict[Key, int] = {}
        self._dirty = False
        self._keeping = False
        self._problems = ProblemLog(log)
        self._load()

    def order(self, reading: Reading) -> Order:
        """Where the reading's timestamp stands against the newest handed over for its tag."""
        last = self._handed.get((reading.equipment, reading.parameter))
        if last is None or reading.timestamp_us > last:
            return Order.NEWER
        return Order.SAME if reading.timestamp_us == last else Order.OLDER

    def handed(self, reading: Reading) -> None:
        """The reading goes to the pipeline."""
        self._handed[reading.equipment, reading.parameter] = reading.timestamp_us

    def on_durable(self, readings: Sequence[Reading]) -> Callable[[], None]:
        """The acknowledgment for a put of ``readings``: their timestamps become what the file keeps."""
        def durable() -> None:
            stored = self._durable
            for reading in readings:
                key = (reading.equipment, reading.parameter)
                if reading.timestamp_us > stored.get(key, -1):
                    stored[key] = reading.timestamp_us
            self._dirty = True
            if not self._keeping:  # closed: nobody writes the file later
                self._save()
        return durable

    async def keep(self) -> None:
        """Write the file whenever something became durable, at most every ``SAVE_EVERY`` (runs with the
        connector; cancelled when it stops)."""
        self._keeping = True
        try:
            while True:
                await asyncio.sleep(self.SAVE_EVERY)
                if self._dirty:
                    await asyncio.to_thread(self._save)
        finally:
            self._keeping = False
            if self._dirty:
                self._save()

    def _load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text())
            entries = [(str(e), str(p), int(t)) for e, p, t in data["tags"]]
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.warning("cannot read the last stored timestamps; values that did not change may be stored once "
                        "more", connector=self._connector, path=str(self.path), error=str(exc))
            return
        for equipment, parameter, stamp in entries:
            if (equipment, parameter) in self._tags:
                self._durable[equipment, parameter] = self._handed[equipment, parameter] = stamp

    def _save(self) -> None:
        if self.path is None:
            self._dirty = False
            return
        self._dirty = False
        data = {"connector": self._connector,
                "tags": sorted([e, p, t] for (e, p), t in self._durable.items())}
        temporary = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary.write_text(json.dumps(data, separators=(",", ":")))
            os.replace(temporary, self.path)
        except OSError as exc:
            self._dirty = True
            self._problems.failed("save", "cannot save the last stored timestamps", connector=self._connector,
                                  path=str(self.path), error=str(exc))
            return
        self._problems.recovered("save", "last stored timestamps saved again", connector=self._connector)


class AcknowledgedSink:
    """A sink that tells :class:`StoredTimestamps` what became durable (for the shared poller's puts)."""

    def __init__(self, sink: ReadingSink, stored: StoredTimestamps) -> None:
        self._sink = sink
        self._stored = stored

    async def put(self, readings: Sequence[Reading], on_durable: Callable[[], None] | None = None) -> None:
        durable = self._stored.on_durable(readings)
        if on_durable is None:
            await self._sink.put(readings, durable)
            return
        outer = on_durable

        def both() -> None:
            durable()
            outer()
        await self._sink.put(readings, both)
