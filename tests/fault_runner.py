"""A daemon for the fault tests: the real :class:`~ingestor.daemon.runtime.Daemon` with a numbered source.

``python -m tests.fault_runner CONFIG LEDGER FIRST COUNT RATE`` runs the daemon from CONFIG plus a source that
emits readings of equipment M1, parameter ``seq``, with the values FIRST … FIRST+COUNT-1 at RATE readings per
second, then goes quiet.  Whenever a batch of them is acknowledged (durable in the spool) it appends
"first last" to LEDGER, so a test can tell exactly which readings the pipeline accepted, even after the process
was killed with SIGKILL.

To kill the process at an exact point, set ``FAULT_KILL=after_commit:N`` (SIGKILL right after the N-th
database commit returns, before the spool forgets the batch) or ``FAULT_KILL=after_spool_append:N`` (right
after the N-th batch is stored in the spool, before it is acknowledged).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import ingestor.pipeline.writer as writer_module
from ingestor.config import load_config
from ingestor.contract import Reading, ReadingSink, ReconnectConfig, now_us
from ingestor.daemon.runtime import Daemon
from ingestor.daemon.supervisor import ConnectorSupervisor
from ingestor.pipeline.spool import Spool
from ingestor.service.logs import configure_logging


class NumberedSource:
    """Emits consecutive numbers once; records acknowledged ranges in a ledger file."""

    name = "numbered"

    def __init__(self, ledger: Path, first: int, count: int, rate: float, chunk: int = 50) -> None:
        self._ledger = ledger.open("a", buffering=1)
        self._next = first
        self._end = first + count
        self._rate = rate
        self._chunk = chunk

    async def connect(self) -> None:
        return None

    async def run(self, sink: ReadingSink) -> None:
        loop = asyncio.get_running_loop()
        started, sent = loop.time(), 0
        while self._next < self._end:
            n = min(self._chunk, self._end - self._next)
            first = self._next
            stamp = now_us()
            batch = [Reading("M1", "seq", float(first + i), stamp + i, "pcs") for i in range(n)]
            self._next += n
            await sink.put(batch, self._acknowledger(first, first + n - 1))
            sent += n
            delay = started + sent / self._rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        await asyncio.Event().wait()

    def _acknowledger(self, first: int, last: int) -> Callable[[], None]:
        return lambda: self._ledger.write(f"{first} {last}\n")

    async def close(self) -> None:
        return None


def _kill_after(owner: object, method: str, calls: int) -> None:
    """Wrap ``owner.method`` (a class's method or a module's function) so that the process SIGKILLs itself
    right after the ``calls``-th call returns."""
    original = getattr(owner, method)
    seen = 0

    def check() -> None:
        nonlocal seen
        seen += 1
        if seen == calls:
            os.kill(os.getpid(), signal.SIGKILL)

    if asyncio.iscoroutinefunction(original):
        async def wrapped_async(*args: object, **kwargs: object) -> object:
            result = await original(*args, **kwargs)
            check()
            return result
        setattr(owner, method, wrapped_async)
    else:
        def wrapped(*args: object, **kwargs: object) -> object:
            result = original(*args, **kwargs)
            check()
            return result
        setattr(owner, method, wrapped)


def main(argv: list[str]) -> int:
    fault = os.environ.get("FAULT_KILL")
    if fault:
        point, _, calls = fault.partition(":")
        owner, method = {"after_commit": (writer_module, "commit_batches"),
                         "after_spool_append": (Spool, "append")}[point]
        _kill_after(owner, method, int(calls))
    config_path, ledger, first, count, rate = argv
    config = load_config(config_path)
    configure_logging(config.logging)
    daemon = Daemon(config)
    source = NumberedSource(Path(ledger), int(first), int(count), float(rate))
    daemon.supervisors.append(ConnectorSupervisor(source, daemon.queue.sink_for(source.name), ReconnectConfig()))
    return asyncio.run(daemon.serve())


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
