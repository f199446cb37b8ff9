"""The ``type: opcua`` configuration: one endpoint, its security, and groups of tags.

A tag names its node by node id (``ns=2;s=PRESS-01.temperature``, ``nsu=urn:vendor:plc;s=Line1.Speed``,
``i=2258``) or by a browse path from the Objects folder (``Plant/PRESS-01/temperature``, or with namespace
indexes ``2:Plant/2:PRESS-01/2:temperature``), and maps it to a parameter of a piece of equipment, in a unit.
Tags sit in groups: a group is either one subscription (publishing and sampling interval, queue size,
deadband) or, for servers that subscribe badly, a poll at a fixed interval.

Nothing here imports asyncua: loading and checking a configuration stays fast, and the protocol code is
imported only when a connector is built.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from ingestor.contract import ConnectorConfig, Duration, ReconnectConfig, StrictModel, TagConfig, TagRef

_NODE_ID = re.compile(
    r"^(?:(?:ns=\d+|nsu=[^;]+);)?(?:i=\d+|s=.+|g=[0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}|b=.+)$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NAME = r"^[A-Za-z0-9_.\-]+$"

POLICIES = ("None", "Basic256Sha256", "Aes128Sha256RsaOaep", "Aes256Sha256RsaPss", "Basic256", "Basic128Rsa15")
"""Security policies asyncua implements (Basic256 and Basic128Rsa15 are deprecated by the OPC Foundation)."""


def parse_browse_path(path: str) -> list[tuple[int | None, str]]:
    """``2:Plant/PRESS-01/temperature`` → ``[(2, "Plant"), (None, "PRESS-01"), (None, "temperature")]``.

    A segment is a browse name, optionally prefixed with its namespace index; ``/`` inside a name is written
    ``\\/``.  Raises ValueError on an empty path or segment.
    """
    parts = [p.replace("\\/", "/") for p in re.split(r"(?<!\\)/", path.strip().strip("/"))]
    segments: list[tuple[int | None, str]] = []
    for part in parts:
        match = re.fullmatch(r"(\d+):(.+)", part)
        namespace, name = (int(match.group(1)), match.group(2)) if match else (None, part)
        if not name.strip():
            raise ValueError(f"browse path {path!r} has an empty segment")
        segments.append((namespace, name))
    if not segments:
        raise ValueError("browse path is empty")
    return segments


def default_connector_name(endpoint: str) -> str:
    """A connector name made from an endpoint: ``opc.tcp://plc-7:4840`` → ``opcua-plc-7-4840``."""
    host = re.sub(r"[^A-Za-z0-9_.\-]+", "-", endpoint.removeprefix("opc.tcp://")).strip("-.")
    return f"opcua-{host}"[:100]


class Deadband(StrictModel):
    """Report a change only when it exceeds this much: an absolute amount, or a percent of the node's
    EURange (the server must know the range for ``percent``)."""

    type: Literal["absolute", "percent"]
    value: float = Field(gt=0)

    @model_validator(mode="after")
    def _percent_range(self) -> Deadband:
        if self.type == "percent" and self.value > 100:
            raise ValueError("a percent deadband is at most 100")
        return self


class OpcUaTag(TagConfig):
    """One OPC UA variable mapped to an equipment parameter."""

    node: str | None = Field(default=None, description="node id: ns=2;s=…, nsu=URI;s=…, i=…, g=…, b=…")
    path: str | None = Field(default=None, description="browse path from Objects: Plant/PRESS-01/temperature")
    deadband: Deadband | None = Field(default=None, description="overrides the group's deadband")
    values: dict[str, float] = Field(
        default_factory=dict, description="text value → number, for string and enumeration-text state tags")

    @field_validator("node")
    @classmethod
    def _node_syntax(cls, value: str | None) -> str | None:
        if value is not None and not _NODE_ID.match(value):
            raise ValueError(f"{value!r} is not an OPC UA node id (expected e.g. ns=2;s=Line1.Speed, "
                             "nsu=urn:vendor;s=Line1.Speed or i=2258)")
        return value

    @field_validator("path")
    @classmethod
    def _path_syntax(cls, value: str | None) -> str | None:
        if value is not None:
            parse_browse_path(value)
        return value

    @model_validator(mode="after")
    def _one_address(self) -> OpcUaTag:
        if (self.node is None) == (self.path is None):
            raise ValueError("give either node or path (exactly one)")
        return self

    @property
    def address(self) -> str:
        return self.node if self.node is not None else f"path {self.path}"


class TagGroup(StrictModel):
    """Tags read together: one subscription, or one poll."""

    name: str = Field(min_length=1, max_length=100, pattern=_NAME)
    mode: Literal["subscribe", "poll"] = "subscribe"
    publishing_interval: Duration = Field(default=1.0, gt=0, description="subscribe: how often the server reports")
    sampling_interval: Duration | None = Field(
        default=None, ge=0, description="subscribe: how often the server samples (default: the publishing interval; "
        "0: as fast as it can)")
    queue_size: int = Field(default=1, ge=1, le=65535,
                            description="subscribe: samples the server keeps per tag between two reports")
    deadband: Deadband | None = Field(default=None, description="subscribe: default deadband of the group's tags")
    interval: Duration = Field(default=1.0, gt=0, description="poll: time between reads")
    timeout: Duration | None = Field(default=None, gt=0, description="poll: longest a read may take (default: "
                                     "the interval)")
    tags: list[OpcUaTag] = Field(min_length=1)

    @model_validator(mode="after")
    def _settings_match_mode(self) -> TagGroup:
        wrong = {"subscribe": ("interval", "timeout"),
                 "poll": ("publishing_interval", "sampling_interval", "queue_size", "deadband")}[self.mode]
        given = sorted(set(wrong) & self.model_fields_set)
        if given:
            raise ValueError(f"{', '.join(given)} do{'es' if len(given) == 1 else ''} not apply to mode: {self.mode}")
        if self.mode == "poll" and any(tag.deadband for tag in self.tags):
            raise ValueError("deadbands apply to subscriptions only (mode: subscribe)")
        return self


class SecurityConfig(StrictModel):
    """Message security and the certificates that go with it."""

    policy: Literal["None", "Basic256Sha256", "Aes128Sha256RsaOaep", "Aes256Sha256RsaPss", "Basic256",
                    "Basic128Rsa15"] = "None"
    mode: Literal["None", "Sign", "SignAndEncrypt"] | None = Field(
        default=None, description="default: SignAndEncrypt with a policy, None without")
    pki_dir: Path = Field(default=Path("/var/lib/ingestor/pki"),
                          description="home of the generated client certificate, trusted/ and rejected/")
    certificate: Path | None = Field(default=None, description="client certificate (DER or PEM); default "
                                     "PKI_DIR/own/CONNECTOR.der, generated on first start when absent")
    private_key: Path | None = Field(default=None, description="client private key (PEM or DER); default "
                                     "PKI_DIR/own/private/CONNECTOR.pem")
    private_key_password_env: str | None = Field(default=None, pattern=_ENV_NAME.pattern)
    server_certificate: Path | None = Field(default=None, description="pin: accept exactly this server certificate")
    trust_dir: Path | None = Field(default=None, description="trusted server certificates and CAs (default "
                                   "PKI_DIR/trusted)")
    application_uri: str | None = Field(default=None, description="our ApplicationUri (default: the certificate's, "
                                        "or urn:HOST:ingestor for a generated one)")

    @model_validator(mode="after")
    def _consistent(self) -> SecurityConfig:
        if self.policy == "None" and self.mode not in (None, "None"):
            raise ValueError(f"mode {self.mode} needs a security policy (e.g. policy: Basic256Sha256)")
        if self.policy != "None" and self.mode == "None":
            raise ValueError(f"policy {self.policy} needs mode Sign or SignAndEncrypt")
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("give both certificate and private_key, or neither (then they are generated)")
        if self.server_certificate is not None and self.trust_dir is not None:
            raise ValueError("give either server_certificate (a pin) or trust_dir, not both")
        return self

    @property
    def enabled(self) -> bool:
        return self.policy != "None"

    @property
    def effective_mode(self) -> str:
        return self.mode or ("SignAndEncrypt" if self.enabled else "None")

    def certificate_paths(self, connector: str) -> tuple[Path, Path]:
        if self.certificate is not None and self.private_key is not None:
            return self.certificate, self.private_key
        return self.pki_dir / "own" / f"{connector}.der", self.pki_dir / "own" / "private" / f"{connector}.pem"

    def trust_directory(self) -> Path:
        return self.trust_dir if self.trust_dir is not None else self.pki_dir / "trusted"

    def rejected_directory(self) -> Path:
        return self.trust_directory().parent / "rejected"

    def default_application_uri(self) -> str:
        return self.application_uri or f"urn:{socket.gethostname()}:ingestor"


class OpcUaConfig(ConnectorConfig):
    """``type: opcua``: one OPC UA server."""

    type: Literal["opcua"]
    endpoint: str = Field(pattern=r"^opc\.tcp://[^/\s]+", description="opc.tcp://HOST:PORT[/path]")
    security: SecurityConfig = SecurityConfig()
    username_env: str | None = Field(default=None, pattern=_ENV_NAME.pattern,
                                     description="environment variable holding the user name")
    password_env: str | None = Field(default=None, pattern=_ENV_NAME.pattern,
                                     description="environment variable holding the password")
    timeout: Duration = Field(default=5.0, gt=0, description="longest wait for one request")
    session_timeout: Duration = Field(default=60.0, ge=1, description="how long the server keeps a silent session")
    watchdog_interval: Duration = Field(
        default=5.0, gt=0, description="how often the server's status is read to detect a dead link")
    not_good: Literal["store", "drop"] = Field(
        default="store", description="uncertain and bad values: store them with their quality, or drop them")
    buffer_size: int = Field(default=100_000, ge=100, description="readings held while the pipeline is full")
    max_items_per_call: int = Field(default=1000, ge=1, le=100_000,
                                    description="monitored items per CreateMonitoredItems, nodes per Read")
    reconnect: ReconnectConfig = ReconnectConfig(initial=1.0, max=5.0)
    groups: list[TagGroup] = Field(min_length=1)

    @model_validator(mode="after")
    def _checks(self) -> OpcUaConfig:
        names = [group.name for group in self.groups]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"duplicate group name {duplicates[0]!r}")
        if self.password_env is not None and self.username_env is None:
            raise ValueError("password_env needs username_env")
        return self

    def tags(self) -> Iterable[tuple[int, int, TagGroup, OpcUaTag]]:
        for g, group in enumerate(self.groups):
            for t, tag in enumerate(group.tags):
                yield g, t, group, tag

    def tag_refs(self) -> Iterable[TagRef]:
        for g, t, _, tag in self.tags():
            yield TagRef(("groups", g, "tags", t), tag.equipment, tag.parameter, tag.unit)

