"""What every command shares: exit codes, loading a configuration with every error printed, the database URL."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ingestor.config import ConfigError, IngestorConfig, load_config
from ingestor.database.config import DATABASE_URL_ENV

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2
"""0 success, 1 runtime failure (database unreachable, …), 2 invalid configuration or usage."""


def load_or_report(path: Path) -> IngestorConfig | None:
    """The configuration, or None after printing every problem of it to stderr."""
    try:
        return load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        count = len(exc.problems)
        print(f"{path}: {count} error{'s' if count != 1 else ''}; nothing was started", file=sys.stderr)
        return None


def database_url(dsn: str | None, config: IngestorConfig | None) -> str | None:
    """``--dsn``, then ``INGESTOR_DATABASE_URL``, then ``database.url`` of the configuration (with the TLS
    settings of the configuration's ``database:`` section)."""
    url = dsn or os.environ.get(DATABASE_URL_ENV) or (config.database.url if config is not None else None)
    return config.database.with_tls(url) if config is not None and url else url
