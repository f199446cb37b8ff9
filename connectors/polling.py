"""The shared poller: polled protocols implement only "poll this group once"; this owns the timing.

Each poll group has an interval.  Groups start at a random phase within their interval (so a hundred devices
configured alike do not all fire in the same millisecond), then tick on a fixed schedule: a poll that overruns
its interval skips the missed ticks instead of bursting to catch up, and each overrun is counted.  A poll that
takes longer than its timeout is cancelled and reported as :class:`TimeoutError` to the connector's
``on_error`` hook.  Readings go to the sink with ``await``, so a full pipeline slows polling down
(backpressure).  :class:`~ingestor.contract.ConnectionLost` from a poll ends ``run`` so the supervisor reconnects.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from prometheus_client import Counter

from ingestor.contract import ConnectionLost, Reading, ReadingSink

POLL_OVERRUNS = Counter(
    "ingestor_poll_overruns_total", "Polls that took longer than their interval (ticks were skipped)",
    ["connector", "group"])


@dataclass(frozen=True)
class PollSchedule:
    """One poll group's timing."""

    group: str
    interval: float
    timeout: float | None = None      # default: the interval


PollOnce = Callable[[str], Awaitable[Sequence[Reading]]]
"""Reads one group once and returns its readings; raises ConnectionLost when the link is gone."""


class Poller:
    """Runs ``poll(group)`` for every group on its schedule until cancelled or the link is lost."""

    def __init__(self, connector: str, schedules: Sequence[PollSchedule], poll: PollOnce, sink: ReadingSink,
                 *, on_error: Callable[[str, Exception], None] | None = None, rng: random.Random | None = None) -> None:
        self._connector = connector
        self._schedules = schedules
        self._poll = poll
        self._sink = sink
        self._on_error = on_error
        self._rng = rng or random.Random()

    async def run(self) -> None:
        # Plain tasks and asyncio.wait rather than a TaskGroup: on Python 3.11 a TaskGroup whose child raises
        # (ConnectionLost) just as the group is cancelled can drop the cancellation, and the supervisor would
        # reconnect instead of stopping.
        tasks = [asyncio.create_task(self._run_group(schedule), name=f"poll-{self._connector}-{schedule.group}")
                 for schedule in self._schedules]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                failure = task.exception()
                if failure is not None:
                    raise failure
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _run_group(self, schedule: PollSchedule) -> None:
        loop = asyncio.get_running_loop()
        timeout = schedule.timeout or schedule.interval
        next_at = loop.time() + self._rng.uniform(0, schedule.interval)
        while True:
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that arrives
                # as the poll finishes, and the group would keep polling through a shutdown
                async with asyncio.timeout(timeout):
                    readings = await self._poll(schedule.group)
            except (ConnectionLost, asyncio.CancelledError):
                raise
            except Exception as exc:  # a failed poll of one group never stops the others
                readings = ()
                if self._on_error is not None:
                    self._on_error(schedule.group, exc)
            if readings:
                await self._sink.put(readings)
            next_at += schedule.interval
            now = loop.time()
            if now > next_at:
                missed = int((now - next_at) // schedule.interval) + 1
                POLL_OVERRUNS.labels(self._connector, schedule.group).inc()
                next_at += missed * schedule.interval
