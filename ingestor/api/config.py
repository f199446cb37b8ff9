"""The ``http:`` section: where the API, the operator page, metrics and health are served, who may call them
(bearer tokens), and which browser origins may (CORS).

Tokens are secrets: they come only from the environment (``INGESTOR_API_READ_TOKEN``,
``INGESTOR_API_WRITE_TOKEN``) or from a credentials file whose path the configuration names, never from the
configuration itself, and they are held as :class:`pydantic.SecretStr` so no rendering of the configuration
shows them.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import Field, field_validator

from ingestor.contract import Duration, StrictModel

READ_TOKEN_ENV = "INGESTOR_API_READ_TOKEN"
WRITE_TOKEN_ENV = "INGESTOR_API_WRITE_TOKEN"


class HttpConfig(StrictModel):
    """``http:`` settings."""

    enabled: bool = True
    listen: str = Field(default="127.0.0.1:9108",
                        description="host:port; off loopback (0.0.0.0:9108, say) the API needs a read token")
    credentials_file: Path | None = Field(
        default=None,
        description="a file of 'read_token: …' and 'write_token: …' lines (mode 0600); the environment's "
                    f"{READ_TOKEN_ENV} / {WRITE_TOKEN_ENV} take precedence")
    cors_origins: list[str] = Field(
        default_factory=list,
        description="browser origins allowed to call the API (https://dashboard.plant.example); none by default")
    pool_size: int = Field(default=10, ge=1, le=100, description="database connections the API may hold")
    query_timeout: Duration = Field(default=30.0, gt=0, description="longest an API query may run")

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"expected host:port such as 127.0.0.1:9108, got {value!r}")
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(f"a CORS origin is scheme://host[:port], got {origin!r}")
        return value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def loopback_only(self) -> bool:
        """True when only this machine can reach the listener."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False
