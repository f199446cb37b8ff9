"""Log output: JSON lines for machines (the default off a terminal), readable lines on a terminal.

Code logs through :func:`ingestor.contract.get_logger`; this module decides how the lines are rendered.

Library loggers (asyncua, pymodbus, asyncpg) go through the same renderer, so one service produces one
log format.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal

import structlog
from pydantic import Field

from ingestor.contract import StrictModel

Level = Literal["debug", "info", "warning", "error"]


class LoggingConfig(StrictModel):
    """``logging:`` level and format."""

    level: Level = "info"
    format: Literal["auto", "json", "console"] = Field(
        default="auto", description="auto: console on a terminal, JSON lines otherwise")
    library_level: Level = Field(default="warning", description="level for protocol libraries' own loggers")


def configure_logging(config: LoggingConfig | None = None, stream: Any = None) -> None:
    """Set up structlog and the standard library's logging to render through one formatter."""
    config = config or LoggingConfig()
    stream = stream or sys.stderr
    use_console = config.format == "console" or (config.format == "auto" and stream.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=stream.isatty())
        if use_console
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *([] if use_console else [structlog.processors.format_exc_info]),
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.library_level.upper())
    for name in ("ingestor", "connectors"):
        logging.getLogger(name).setLevel(config.level.upper())
