"""``wait_for``: await with a deadline, without Python 3.11's lost cancellation.

On Python 3.11 ``asyncio.wait_for`` returns normally when the task that awaits it is cancelled in the same loop
iteration as the awaited thing finishes: a close with nothing to await, an event set at shutdown.  The cancel
is gone, so a loop that awaits it (a supervisor backing off, a writer waiting for work) goes on and whoever
stops it waits for ever.  Python 3.12 rebuilt ``wait_for`` on ``asyncio.timeout``; this is that behaviour on 3.11
too: a cancel always raises, a deadline raises ``TimeoutError``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def wait_for(awaitable: Awaitable[T], timeout: float | None) -> T:
    """Await ``awaitable``; ``TimeoutError`` after ``timeout`` seconds (``None``: no deadline)."""
    async with asyncio.timeout(timeout):
        return await awaitable
