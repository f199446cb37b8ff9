"""Configuration of the MQTT connector: broker, session, security, and what each topic means.

Two ways to say what a topic means, usable together:

* ``subscriptions``: a topic *template* with named levels, ``plant/{site}/{equipment}/{parameter}``.  The
  subscription filter is the template with every ``{name}`` replaced by ``+``; a received topic's levels fill
  the names, and ``equipment`` / ``parameter`` (format strings over those names, ``"{equipment}"`` by default)
  say which reading it is.  Equipment named by a topic is only known when the message arrives.
* ``tags``: an explicit map from one exact topic to one equipment parameter, checked against the plant when
  the configuration loads, like every other connector's tags.

Everything is validated at load: template syntax, names used but not captured, filters that overlap (the
broker would deliver one message twice), and secrets, which are never written in the YAML: the password (and
optionally the user name) come from environment variables the YAML names.
"""

from __future__ import annotations

import os
import re
import socket
import string
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from ingestor.contract import ByteSize, ConnectorConfig, Duration, StrictModel, TagConfig, TagRef

SPARKPLUG_NAMESPACE = "spBv1.0"
SPARKPLUG_NAMES = ("group", "edge_node", "device", "metric")
TIMESTAMP_FORMATS = ("auto", "iso8601", "epoch_s", "epoch_ms", "epoch_us", "epoch_ns")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PATH = re.compile(r"^[^.\s]+(\.[^.\s]+)*$")


def _protocol(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = {5: "5", 3.1: "3.1.1", 311: "3.1.1"}.get(value, str(value))  # YAML reads `5` as a number
    if isinstance(value, str):
        value = value.strip().lower().removeprefix("v").removeprefix("mqtt")
        value = {"5.0": "5", "311": "3.1.1", "3": "3.1.1"}.get(value, value)
    return value


def _path(value: str | None, what: str) -> str | None:
    if value is not None and not _PATH.match(value):
        raise ValueError(f"{what} path {value!r}: write keys separated by dots, such as data.value or readings.0.v")
    return value


def split_levels(topic: str) -> list[str]:
    return topic.split("/")


def template_levels(template: str) -> list[tuple[str, str]]:
    """Parse a topic template into levels: ``("literal", text)``, ``("name", name)``, ``("+", "")``,
    ``("#", "")``.  Raises ValueError with an operator-readable message."""
    if not template:
        raise ValueError("the topic must not be empty")
    if template.startswith("$share/"):
        raise ValueError("write the shared-subscription group in shared_group, not in the topic")
    levels: list[tuple[str, str]] = []
    names: set[str] = set()
    parts = split_levels(template)
    for index, part in enumerate(parts):
        if part.startswith("{") and part.endswith("}"):
            name = part[1:-1]
            if not _NAME.match(name):
                raise ValueError(f"{part!r} is not a valid placeholder: use {{letters_digits_underscore}}")
            if name in names:
                raise ValueError(f"placeholder {part} appears twice")
            names.add(name)
            levels.append(("name", name))
        elif part == "+":
            levels.append(("+", ""))
        elif part == "#":
            if index != len(parts) - 1:
                raise ValueError("'#' may only be the last level of a topic")
            levels.append(("#", ""))
        elif any(c in part for c in "{}+#"):
            raise ValueError(f"level {part!r}: a placeholder, + or # must be a whole topic level")
        else:
            levels.append(("literal", part))
    return levels


def filter_of(template: str) -> str:
    """The MQTT subscription filter of a template: every ``{name}`` becomes ``+``."""
    return "/".join("+" if kind == "name" else ("#" if kind == "#" else ("+" if kind == "+" else text))
                    for kind, text in template_levels(template))


def filters_overlap(first: str, second: str) -> bool:
    """Whether some topic matches both filters (the broker would then deliver it once per subscription)."""
    a, b = split_levels(first), split_levels(second)
    for index in range(max(len(a), len(b))):
        x = a[index] if index < len(a) else None
        y = b[index] if index < len(b) else None
        if x == "#" or y == "#":
            return True
        if x is None or y is None:
            return False
        if x != "+" and y != "+" and x != y:
            return False
    return True


def format_names(expression: str) -> list[str]:
    """The ``{names}`` a format expression such as ``"PRESS-{number}"`` uses; ValueError if malformed."""
    try:
        fields = list(string.Formatter().parse(expression))
    except ValueError as exc:
        raise ValueError(f"{expression!r}: {exc}") from None
    names = []
    for _, name, spec, conversion in fields:
        if name is None:
            continue
        if not _NAME.match(name) or spec or conversion:
            raise ValueError(f"{expression!r}: placeholders are plain {{names}} of topic levels")
        names.append(name)
    return names


class PayloadConfig(StrictModel):
    """How to read a message body.  Paths are keys separated by dots (``data.value``, ``readings.0.v``).

    ``auto`` takes a bare number (``21.5``) or JSON: a number, an object, or an array of readings (numbers or
    objects).  For an object, ``value`` is required; ``timestamp`` and ``unit`` are used when present (else the
    receive time and the subscription's unit); ``parameter`` and ``equipment`` paths, when configured, take
    those from the payload instead of the topic.
    """

    format: Literal["auto", "number", "json", "sparkplug_b"] = Field(
        default="auto", description="sparkplug_b: Eclipse Sparkplug B protobuf on spBv1.0/... (see sparkplug.md)")
    value: str = Field(default="value", description="path of the value in a JSON object")
    timestamp: str | None = Field(default="timestamp", description="path of the source timestamp (null: none)")
    timestamp_format: Literal["auto", "iso8601", "epoch_s", "epoch_ms", "epoch_us", "epoch_ns"] = Field(
        default="auto", description="auto: ISO 8601 text, or epoch seconds/ms/µs/ns told apart by magnitude")
    unit: str | None = Field(default="unit", description="path of the unit code (null: none)")
    parameter: str | None = Field(
        default=None, description="path of the parameter name (null: from the topic); wins over the topic")
    equipment: str | None = Field(
        default=None, description="path of the equipment code (null: from the topic); wins over the topic")
    items: str | None = Field(
        default=None, description="path of an array of readings inside an object (a top-level array needs none)")

    @field_validator("value", "timestamp", "unit", "parameter", "equipment", "items")
    @classmethod
    def _paths(cls, value: str | None) -> str | None:
        return _path(value, "field")


class Route(StrictModel):
    """What a topic maps to; shared by template subscriptions and exact-topic tags."""

    qos: Literal[0, 1, 2] = 1
    payload: PayloadConfig = PayloadConfig()


class SubscriptionConfig(Route):
    """A topic template: ``plant/{site}/{equipment}/{parameter}`` (``+`` and a final ``#`` are allowed too)."""

    topic: str = Field(min_length=1, max_length=1000)
    equipment: str | None = Field(
        default=None, description='equipment code or format over topic levels ("{equipment}", "PRESS-{n}")')
    parameter: str | None = Field(default=None, description='parameter or format over topic levels ("{parameter}")')
    unit: str | None = Field(default=None, description="unit when the payload carries none")

    @model_validator(mode="after")
    def _consistent(self) -> SubscriptionConfig:
        levels = template_levels(self.topic)
        if self.payload.format == "sparkplug_b":
            return self._sparkplug(levels)
        captured = {text for kind, text in levels if kind == "name"}
        for field in ("equipment", "parameter"):
            expression = getattr(self, field)
            if expression is None:
                continue
            if not expression.strip():
                raise ValueError(f"{field} must not be empty")
            for name in format_names(expression):
                if name not in captured:
                    raise ValueError(f"{field} {expression!r} uses {{{name}}}, which the topic "
                                     f"{self.topic!r} does not capture")
        if self.equipment is None and "equipment" not in captured and self.payload.equipment is None:
            raise ValueError("no equipment: capture {equipment} in the topic, set equipment, or give "
                             "payload.equipment")
        if self.parameter is None and "parameter" not in captured and self.payload.parameter is None:
            raise ValueError("no parameter: capture {parameter} in the topic, set parameter, or give "
                             "payload.parameter")
        return self

    def _sparkplug(self, levels: list[tuple[str, str]]) -> SubscriptionConfig:
        """A Sparkplug subscription is ``spBv1.0/GROUP/#``: the message type, edge node and device levels are
        Sparkplug's own, so the template may only name (or fix) the group; equipment and parameter are formats
        over ``group``, ``edge_node``, ``device`` (the edge node for node-level metrics) and ``metric``."""
        if len(levels) != 3 or levels[0] != ("literal", SPARKPLUG_NAMESPACE) or levels[2][0] != "#" \
                or levels[1][0] == "#":
            raise ValueError(f"a sparkplug_b subscription is {SPARKPLUG_NAMESPACE}/GROUP/# (GROUP literal, + or "
                             f"{{group}}), not {self.topic!r}")
        if levels[1] == ("literal", "STATE"):
            raise ValueError("STATE is the host applications' level, not an edge node group")
        for field in ("equipment", "parameter"):
            expression = getattr(self, field)
            if expression is None:
                continue
            if not expression.strip():
                raise ValueError(f"{field} must not be empty")
            for name in format_names(expression):
                if name not in SPARKPLUG_NAMES:
                    raise ValueError(f"{field} {expression!r} uses {{{name}}}; a sparkplug_b subscription offers "
                                     f"{', '.join('{' + n + '}' for n in SPARKPLUG_NAMES)}")
        return self

    def filter(self) -> str:
        return filter_of(self.topic)

    def equipment_expression(self) -> str | None:
        if self.payload.format == "sparkplug_b":
            return self.equipment or "{device}"
        if self.equipment is not None:
            return self.equipment
        return "{equipment}" if "equipment" in self._captured() else None

    def parameter_expression(self) -> str | None:
        if self.payload.format == "sparkplug_b":
            return self.parameter or "{metric}"
        if self.parameter is not None:
            return self.parameter
        return "{parameter}" if "parameter" in self._captured() else None

    def _captured(self) -> set[str]:
        return {text for kind, text in template_levels(self.topic) if kind == "name"}


class TopicTag(TagConfig, Route):
    """One exact topic (no wildcards) mapped to one equipment parameter."""

    topic: str = Field(min_length=1, max_length=1000)

    @field_validator("topic")
    @classmethod
    def _exact(cls, value: str) -> str:
        if any(c in value for c in "+#{}") or value.startswith("$"):
            raise ValueError("a tag's topic is one exact topic: no +, #, {placeholders} or $ prefix "
                             "(use subscriptions for templates)")
        return value


class TlsConfig(StrictModel):
    """TLS to the broker.  Without ``ca_file`` the system's trusted CAs verify the broker."""

    ca_file: Path | None = None
    cert_file: Path | None = Field(default=None, description="client certificate (mutual TLS)")
    key_file: Path | None = Field(default=None, description="client private key (mutual TLS)")
    key_password_env: str | None = Field(default=None, description="environment variable with the key's password")
    insecure: bool = Field(default=False, description="skip checking the broker's host name (testing only)")

    @model_validator(mode="after")
    def _files(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("give cert_file and key_file together")
        for name in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name} {str(path)!r} is not a readable file")
        if self.key_password_env is not None and not _ENV.match(self.key_password_env):
            raise ValueError("key_password_env must be an environment variable name")
        return self


class DeadLetterConfig(StrictModel):
    """Where rejected messages are kept, one JSON object per line (topic, payload, reason, time)."""

    path: Path
    max_size: ByteSize = Field(default=ByteSize(100 * 2**20), ge=1024, description="rotated to PATH.1 beyond this size")


class SparkplugConfig(StrictModel):
    """Sparkplug B host behaviour, used by ``payload: {format: sparkplug_b}`` subscriptions."""

    host_id: str | None = Field(
        default=None, pattern=r"^[^/+#\s]+$", max_length=100,
        description="act as this primary host application: publish spBv1.0/STATE/HOST_ID birth and death")
    rebirth_interval: Duration = Field(
        default=10.0, ge=0.1, description="at most one rebirth request per edge node in this many seconds")
    request_rebirth: bool = Field(
        default=True, description="ask an edge node to rebirth (NCMD) on a sequence gap or data before birth")


EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=200)]


class MqttConfig(ConnectorConfig):
    """``type: mqtt``: subscribe to a broker; each message becomes one or more readings."""

    type: Literal["mqtt"]
    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=1883, ge=1, le=65535)
    protocol: Annotated[Literal["5", "3.1.1"], BeforeValidator(_protocol)] = "5"
    client_id: str | None = Field(
        default=None, min_length=1, max_length=200,
        description="stable session id; default ingestor-HOSTNAME-NAME; distinct per daemon")
    clean_start: bool = Field(default=False, description="false: a persistent session (offline QoS 1/2 delivery)")
    session_expiry: Duration = Field(
        default=86400.0, ge=0, le=4294967295, description="MQTT 5: how long the broker keeps the session offline")
    receive_maximum: int = Field(
        default=10000, ge=1, le=65535, description="MQTT 5: most unacknowledged QoS 1/2 messages in flight")
    keepalive: Duration = Field(default=30.0, ge=1, le=65535)
    connect_timeout: Duration = Field(default=10.0, gt=0)
    username: str | None = Field(default=None, min_length=1)
    username_env: EnvName | None = Field(default=None, description="environment variable holding the user name")
    password_env: EnvName | None = Field(default=None, description="environment variable holding the password")
    tls: TlsConfig | None = None
    shared_group: str | None = Field(
        default=None, pattern=r"^[^/+#\s]+$", max_length=100,
        description="subscribe as $share/GROUP/…: daemons in one group split the messages")
    ingest_retained: bool = Field(default=True, description="take retained messages (old last values) too")
    max_payload: ByteSize = Field(default=ByteSize(256 * 1024), ge=16, description="bigger messages are rejected")
    max_buffered: int = Field(
        default=10000, ge=2, description="most messages received and waiting for the pipeline; at this many the "
                                         "connector stops reading from the broker until half are handed over")
    drain_timeout: Duration = Field(
        default=3.0, ge=0, le=4.5, description="on stop, how long to wait for in-flight acknowledgments")
    dead_letter: DeadLetterConfig | None = None
    sparkplug: SparkplugConfig = SparkplugConfig()
    subscriptions: list[SubscriptionConfig] = []
    tags: list[TopicTag] = []

    @model_validator(mode="after")
    def _consistent(self) -> MqttConfig:
        if not self.subscriptions and not self.tags:
            raise ValueError("give subscriptions (topic templates) or tags (exact topics), or both")
        if self.username is not None and self.username_env is not None:
            raise ValueError("give username or username_env, not both")
        if self.sparkplug.host_id is not None and not any(
                s.payload.format == "sparkplug_b" for s in self.subscriptions):
            raise ValueError("sparkplug.host_id needs a subscription with payload: {format: sparkplug_b}")
        if self.shared_group is not None and any(s.payload.format == "sparkplug_b" for s in self.subscriptions):
            raise ValueError("sparkplug_b needs every message of an edge node in one daemon (sequence numbers, "
                             "aliases): it cannot be combined with shared_group")
        for index, tag in enumerate(self.tags):
            if tag.payload.format == "sparkplug_b":
                raise ValueError(f"tags[{index}]: sparkplug_b is read through a subscription to spBv1.0/GROUP/#")
        filters = [(f"subscriptions[{i}]", s.filter()) for i, s in enumerate(self.subscriptions)]
        for j, (where_j, filter_j) in enumerate(filters):
            for where_i, filter_i in filters[:j]:
                if filters_overlap(filter_i, filter_j):
                    raise ValueError(f"{where_j} ({filter_j}) overlaps {where_i} ({filter_i}): the broker "
                                     "would deliver a message matching both twice")
        seen: dict[str, int] = {}
        for index, tag in enumerate(self.tags):
            if tag.topic in seen:
                raise ValueError(f"tags[{index}]: topic {tag.topic!r} is already mapped by tags[{seen[tag.topic]}]")
            seen[tag.topic] = index
            for where, filter_ in filters:
                if filters_overlap(filter_, tag.topic):
                    raise ValueError(f"tags[{index}] topic {tag.topic!r} also matches {where} ({filter_}): the "
                                     "broker would deliver it twice")
        return self

    def effective_client_id(self) -> str:
        return self.client_id or f"ingestor-{socket.gethostname()}-{self.name}"

    def for_test_mode(self) -> MqttConfig:
        """Own client id, a clean session that ends with the connection, no shared group: the daemon's
        session (its queued QoS 1/2 messages), its group's share of the messages and its Sparkplug STATE stay
        the daemon's."""
        client_id = f"{self.client_id or self.name}-read-{os.getpid()}"[:200]
        # no Sparkplug host_id either: our STATE death would tell edge nodes the daemon's primary host is gone
        return self.model_copy(update={"client_id": client_id, "clean_start": True, "session_expiry": 0.0,
                                       "shared_group": None,
                                       "sparkplug": self.sparkplug.model_copy(update={"host_id": None})})

    def learns_equipment(self) -> bool:
        return bool(self.subscriptions)  # a subscription's payload or topic template may name any equipment

    def tag_refs(self) -> Iterable[TagRef]:
        for index, tag in enumerate(self.tags):
            yield TagRef(("tags", index), tag.equipment, tag.parameter, tag.unit)
        for index, sub in enumerate(self.subscriptions):
            # A subscription naming one literal equipment and parameter can be checked now; templates cannot.
            if sub.equipment and sub.parameter and not format_names(sub.equipment) \
                    and not format_names(sub.parameter):
                yield TagRef(("subscriptions", index), sub.equipment, sub.parameter, sub.unit)

