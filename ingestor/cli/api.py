"""``ingestor api -c FILE``: serve the API, the live events and the operator page of everything in the database,
without connectors, so one central process can serve every edge daemon writing into a shared database."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from pathlib import Path
from typing import Any

from ingestor.api.auth import TokenError
from ingestor.api.server import ApiServer, ListenError
from ingestor.api.state import ApiState
from ingestor.cli.common import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, database_url, load_or_report
from ingestor.config import IngestorConfig
from ingestor.contract import get_logger
from ingestor.service.logs import configure_logging

log = get_logger(__name__)


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("api", help="serve the API and live events without connectors",
                                 description=__doc__)
    parser.add_argument("-c", "--config", required=True, type=Path,
                        help="YAML configuration (database:, http:, plant:, logging:; connectors are ignored)")
    parser.add_argument("--dsn", help="database URL (default: INGESTOR_DATABASE_URL, then database.url)")
    parser.set_defaults(command_main=_main)


def _main(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return EXIT_CONFIG
    configure_logging(config.logging)
    url = database_url(args.dsn, config) or config.database.effective_url()
    return asyncio.run(serve_api(config, url))


async def serve_api(config: IngestorConfig, url: str) -> int:
    """Serve until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)
    try:
        state = ApiState(config.http, url, plant=config.plant, scrap_rate_alert=config.events.scrap_rate_alert,
                         scrap_alert_min_parts=config.events.scrap_alert_min_parts)
        async with ApiServer(state):
            await stop.wait()
    except (ListenError, TokenError) as exc:
        log.error("cannot start", error=str(exc))
        return EXIT_FAILURE
    log.info("api stopped")
    return EXIT_OK
