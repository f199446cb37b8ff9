"""Small helpers shared by tests: free loopback ports, HTTP GETs, waiting for a condition, building a connector."""

from __future__ import annotations

import asyncio
import inspect
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from ingestor.config.registry import create_connector
from ingestor.contract import BuildContext, Connector, ConnectorConfig
from ingestor.database.schema import refresh_view, views_to_refresh

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str, timeout: float = 3.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_until(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
            if value:
                return value
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


async def async_wait_until(condition: Callable[[], T | Awaitable[T]], timeout: float, what: str,
                           interval: float = 0.1) -> T:
    """Wait until ``condition()`` (a plain function, or one returning an awaitable) is truthy; its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


def build_connector(config: ConnectorConfig, *, known_equipment: Collection[str] | None = None,
                    known_units: Collection[str] | None = None, state_dir: Path | None = None,
                    **clients: Any) -> Connector:
    """The connector of a validated configuration, built through the registry as the daemon builds it;
    ``state_dir`` is where it keeps what must survive a restart (the daemon's is in the spool directory);
    ``clients`` are protocol-client factories (``mqtt_client=…``) for the few tests that need a fake."""
    return create_connector(config, BuildContext(
        known_equipment=frozenset(known_equipment) if known_equipment is not None else None,
        known_units=frozenset(known_units) if known_units is not None else None, state_dir=state_dir,
        clients=clients))


DEMO_CONFIG = Path(__file__).resolve().parents[1] / "config" / "demo.yaml"


def run_on(dsn: str, work: Callable[[asyncpg.Connection], Awaitable[object]]) -> None:
    """Run ``work`` on a connection of its own to the database, from synchronous code (the module-scoped
    fixtures that fill a module's database once)."""
    async def run() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await work(conn)
        finally:
            await conn.close()
    asyncio.run(run())


async def demo_plant(conn: asyncpg.Connection) -> None:
    """The schema and the plant of config/demo.yaml (the plant the example records of config/records/ use)."""
    from ingestor.config import load_config
    from ingestor.database.dimensions import sync_dimensions
    from ingestor.database.schema import apply_schema

    await apply_schema(conn)
    await sync_dimensions(conn, load_config(DEMO_CONFIG).plant)


async def refresh(conn: asyncpg.Connection, view: str) -> None:
    """Bring one of the refreshable views up to date on any tier: a materialized view through the daemon's own
    ``refresh_view``; ``sensor_5min_avg`` on full TimescaleDB is a continuous aggregate, materialized over its
    whole range by ``refresh_continuous_aggregate`` (what its policy does in the background)."""
    if view in await views_to_refresh(conn):
        await refresh_view(conn, view)
    else:
        await conn.execute(f"CALL refresh_continuous_aggregate('{view}', NULL, NULL)")
