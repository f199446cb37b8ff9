"""What the application serves from: its settings, the database, the tokens, and (inside the daemon) the
daemon's live view of its connectors and pipeline."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Protocol

import asyncpg

from ingestor.api.auth import Tokens, load_tokens
from ingestor.api.config import HttpConfig
from ingestor.contract import get_logger
from ingestor.contract.timeouts import wait_for
from ingestor.database.connection import CONNECTION_ERRORS, DatabaseUnavailable
from ingestor.plant import PlantConfig

log = get_logger(__name__)


class LiveSource(Protocol):
    """The daemon's view of itself, for /readyz and the operator page.  ``ingestor api`` has none."""

    def status(self) -> tuple[bool, dict[str, Any]]:
        """(ready, details): the body of /readyz."""
        ...

    def tags(self) -> list[dict[str, Any]]:
        """Each tag's last reading: connector, equipment, parameter, value, unit, quality, timestamp_us."""
        ...


class ApiState:
    """Shared by every request of one application (``app.state.api``)."""

    def __init__(self, config: HttpConfig, url: str, *, plant: PlantConfig | None = None,
                 live: LiveSource | None = None, tokens: Tokens | None = None,
                 environ: Mapping[str, str] | None = None, scrap_rate_alert: float | None = 0.05,
                 scrap_alert_min_parts: int = 20) -> None:
        self.config = config
        self.scrap_rate_alert = scrap_rate_alert
        """``events.scrap_rate_alert``: the scrap rate above which a scrap record posted raises a quality alert"""
        self.scrap_alert_min_parts = scrap_alert_min_parts
        self.url = url
        self.plant = plant
        self.live = live
        self.tokens = tokens if tokens is not None else load_tokens(config, environ)
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        self.services: dict[str, Any] = {}  # what routers keep per application (the event hub, …)

    async def pool(self) -> asyncpg.Pool:
        """The API's connection pool, opened on first use; :class:`DatabaseUnavailable` while it cannot be."""
        if self._pool is not None:
            return self._pool
        async with self._pool_lock:
            if self._pool is None:
                try:
                    self._pool = await asyncpg.create_pool(
                        self.url, min_size=0, max_size=self.config.pool_size,
                        command_timeout=self.config.query_timeout, timeout=10,
                        max_inactive_connection_lifetime=60)
                except (*CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
                    raise DatabaseUnavailable(f"the API cannot connect: {type(exc).__name__}") from None
        return self._pool

    async def close(self) -> None:
        for service in list(self.services.values()):
            closer = getattr(service, "close", None)
            if closer is not None:
                await closer()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await wait_for(pool.close(), 5)
            except CONNECTION_ERRORS:
                pool.terminate()
