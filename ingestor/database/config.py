"""The ``database:`` section of the YAML: where readings and facts go, and how the daemon treats the database.

The URL comes from ``database.url``, overridden by the ``INGESTOR_DATABASE_URL`` environment variable so that
a password need never be written in a tag map (asyncpg also honours ``PGPASSWORD`` and ``~/.pgpass``).
"""

from __future__ import annotations

import os
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from ingestor.contract import Duration, ReconnectConfig, StrictModel

DATABASE_URL_ENV = "INGESTOR_DATABASE_URL"


def check_url(value: str) -> str:
    """Accept postgresql:// and postgres:// URLs; anything else is an error with a hint."""
    scheme = value.split("://", 1)[0] if "://" in value else ""
    if scheme not in ("postgresql", "postgres"):
        raise ValueError("expected a PostgreSQL URL such as postgresql://user@host:5432/dbname")
    try:
        for host in urlsplit(value).netloc.rpartition("@")[2].split(","):  # libpq allows host1:5432,host2:5433
            port = host.rpartition("]")[2].rpartition(":")[2] if ":" in host.rpartition("]")[2] else ""
            if port and not (port.isdigit() and 0 < int(port) < 65536):
                raise ValueError(f"the port of {host.rpartition(':')[0] or host!r} must be a number 1..65535")
    except ValueError as exc:
        if "port of" in str(exc):
            raise
        raise ValueError("not a valid URL (check the brackets around an IPv6 address)") from None
    return value


class ViewRefreshConfig(StrictModel):
    """How often the daemon refreshes each materialized view; 0 turns a refresh off."""

    view_oee_daily: Duration = Field(default=300.0, ge=0)
    view_reliability_summary: Duration = Field(default=900.0, ge=0)
    sensor_5min_avg: Duration = Field(
        default=60.0, ge=0, description="ignored where sensor_5min_avg is a continuous aggregate")


DAY = 86400.0


def _days(seconds: float) -> str:
    return f"{seconds / DAY:g}d" if seconds >= DAY else f"{seconds:g}s"


class RetentionConfig(StrictModel):
    """``database.retention``: how long readings stay in ``fact_sensor_event``, then in the archive.

    Ages are measured from the reading's own timestamp (``event_ts``), not from when it was archived: with
    ``raw: 90d`` and ``archive: 2y`` a reading lives 90 days in the hot table and is deleted when it is two years
    old.  Leaving ``raw`` out keeps every reading in the hot table (nothing is archived or deleted).
    """

    raw: Duration | None = Field(
        default=None, description="readings older than this move from fact_sensor_event to the archive; "
        "unset: never")
    archive: Duration | None = Field(
        default=None, description="archived readings older than this (by their own timestamp) are deleted; "
        "unset: kept for ever")
    interval: Duration = Field(default=3600.0, ge=60, description="how often a run starts")
    batch_rows: int = Field(
        default=50_000, ge=100, le=10_000_000,
        description="plain PostgreSQL: rows moved or deleted per transaction")
    lock_timeout: Duration = Field(
        default=2.0, gt=0, le=600, description="a batch or chunk gives up (and the run ends) when it waits "
        "longer than this for a lock")
    statement_timeout: Duration = Field(
        default=1800.0, gt=0, description="a single statement of a run (a batch, 1/24 of a chunk) is cancelled "
        "after this")

    @model_validator(mode="after")
    def _ages_make_sense(self) -> RetentionConfig:
        # A bare number is seconds: "raw: 90" would archive everything older than a minute and a half.
        if self.raw is not None and self.raw < DAY:
            raise ValueError(
                f"raw is {_days(self.raw)} but must be at least 1d (a bare number is seconds: "
                "write 90d for 90 days)")
        if self.archive is not None:
            if self.raw is None:
                raise ValueError("archive needs raw: without it nothing is ever archived")
            if self.archive <= self.raw:
                raise ValueError(
                    f"archive ({_days(self.archive)}) must be longer than raw "
                    f"({_days(self.raw)}): both are ages of the reading, and the archive holds the readings "
                    "between the two")
        return self

    @property
    def enabled(self) -> bool:
        return self.raw is not None


class DatabaseConfig(StrictModel):
    """``database:`` where readings and facts go."""

    url: str = Field(default="postgresql://postgres@127.0.0.1:5432/ingestor", repr=False)
    timescaledb: Literal["auto", "require", "off"] = Field(
        default="auto", description="auto: use TimescaleDB when the server has it; require: refuse to start without")
    apply_schema: bool = Field(default=True, description="apply the analytics schema at startup")
    connect_timeout: Duration = Field(default=10.0, gt=0)
    # A short maximum: while the database is down the durable spool holds the backlog, and an attempt to
    # connect costs the server next to nothing, so the writer is back within seconds of the database instead
    # of sleeping out a half-minute back-off while the backlog grows (and the operator wonders).
    reconnect: ReconnectConfig = Field(
        default=ReconnectConfig(initial=0.5, max=5.0), description="backoff while the database is unreachable")
    refresh: ViewRefreshConfig = ViewRefreshConfig()
    retention: RetentionConfig = RetentionConfig()
    timescaledb_jobs_check: Duration = Field(
        default=60.0, ge=0,
        description="how often to read TimescaleDB's background job stats (failing jobs in /readyz); 0 turns it off")

    _check_url = field_validator("url")(classmethod(lambda cls, value: check_url(value)))

    def effective_url(self, environ: dict[str, str] | None = None) -> str:
        """``INGESTOR_DATABASE_URL`` when set, else ``url``."""
        env = os.environ if environ is None else environ
        return env.get(DATABASE_URL_ENV) or self.url
