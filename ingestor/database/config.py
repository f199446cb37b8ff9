"""The ``database:`` section of the YAML: where readings and facts go, and how the daemon treats the database.

The URL comes from ``database.url``, overridden by the ``INGESTOR_DATABASE_URL`` environment variable so that
a password need never be written in a tag map (asyncpg also honours ``PGPASSWORD`` and ``~/.pgpass``).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from pydantic import Field, field_validator, model_validator

from ingestor.contract import Duration, ReconnectConfig, StrictModel

DATABASE_URL_ENV = "INGESTOR_DATABASE_URL"
SSL_PASSWORD_ENV = "INGESTOR_DATABASE_SSLPASSWORD"
"""The passphrase of ``database.sslkey``: a secret, so only from the environment (never in the YAML or a log)."""

SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
VERIFIED_MODES = frozenset({"verify-ca", "verify-full"})


def url_hosts(url: str) -> list[str]:
    """Every host a URL names (``host1,host2`` and a ``?host=`` parameter included); ``""`` for none."""
    parts = urlsplit(url)
    hosts: list[str] = []
    for item in parts.netloc.rpartition("@")[2].split(","):
        host = item.rpartition("]")[0].lstrip("[") if item.startswith("[") else item.rpartition(":")[0] or item
        hosts.append(host)
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "host":
            hosts.extend(value.split(","))
    return hosts


def is_loopback(host: str) -> bool:
    """A Unix socket directory, ``localhost`` or a loopback address: traffic that never leaves the machine."""
    host = unquote(host)
    if not host or host.startswith("/") or host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_sslmode(url: str) -> str | None:
    """The ``?sslmode=`` a URL carries, if any."""
    for key, value in parse_qsl(urlsplit(url).query, keep_blank_values=True):
        if key == "sslmode":
            return value
    return None


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
    sslmode: SslMode | None = Field(
        default=None,
        description="TLS to the database; verify-full off loopback (default: the URL's ?sslmode=, else prefer)")
    sslrootcert: str | None = Field(
        default=None, description="CA certificate(s) the server's certificate must chain to")
    sslcert: str | None = Field(default=None, description="client certificate (PEM), for certificate authentication")
    sslkey: str | None = Field(
        default=None, description=f"the client certificate's key (PEM); its passphrase from ${SSL_PASSWORD_ENV}")
    allow_insecure: bool = Field(
        default=False,
        description="allow a plain-text or unverified (below verify-ca) connection to a host that is not loopback")
    timescaledb_jobs_check: Duration = Field(
        default=60.0, ge=0,
        description="how often to read TimescaleDB's background job stats (failing jobs in /readyz); 0 turns it off")

    _check_url = field_validator("url")(classmethod(lambda cls, value: check_url(value)))

    @model_validator(mode="after")
    def _check_transport(self) -> DatabaseConfig:
        if self.sslcert is None and self.sslkey is not None:
            raise ValueError("database.sslkey is set without database.sslcert")
        problem = self.transport_problem(self.with_tls(self.url, {}))  # INGESTOR_DATABASE_URL: by the loader
        if problem:
            raise ValueError(problem)
        return self

    def transport_problem(self, url: str) -> str | None:
        """Why the connection to ``url`` would be plain-text or unverified off loopback (None: it is fine)."""
        if self.allow_insecure:
            return None
        remote = [host for host in url_hosts(url) if not is_loopback(host)]
        mode = url_sslmode(url) or "prefer"
        if not remote or mode in VERIFIED_MODES:
            return None
        return (f"the database host {remote[0]!r} is not loopback and sslmode is {mode!r}: the connection could be "
                "read or redirected on the way; set database.sslmode: verify-full with database.sslrootcert "
                "(the CA that signed the server's certificate), or database.allow_insecure: true to accept it")

    def with_tls(self, url: str, environ: Mapping[str, str] | None = None) -> str:
        """``url`` with the TLS settings of this section as libpq parameters (they win over the URL's own)."""
        env = os.environ if environ is None else environ
        settings = {"sslmode": self.sslmode, "sslrootcert": self.sslrootcert, "sslcert": self.sslcert,
                    "sslkey": self.sslkey, "sslpassword": (env.get(SSL_PASSWORD_ENV) or None) if self.sslkey else None}
        if not any(settings.values()) or "://" not in url:
            return url
        parts = urlsplit(url)
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                 if not (settings.get(k))]
        query += [(k, v) for k, v in settings.items() if v]
        return urlunsplit(parts._replace(query=urlencode(query)))

    def effective_url(self, environ: dict[str, str] | None = None) -> str:
        """``INGESTOR_DATABASE_URL`` when set, else ``url``; with the TLS settings of this section."""
        env = os.environ if environ is None else environ
        return self.with_tls(env.get(DATABASE_URL_ENV) or self.url, env)
