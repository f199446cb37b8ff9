"""The connector contract: what a protocol connector implements, and how a package registers one.

A connector knows its protocol and nothing about databases.  It turns protocol traffic into
:class:`~ingestor.contract.reading.Reading` records and hands them to a :class:`ReadingSink`.  The daemon
owns the connector's life: one supervisor task per connector runs ``connect`` then ``run``; when ``run``
raises :class:`ConnectionLost` (or anything else) the supervisor calls ``close``, waits with capped
exponential backoff and jitter, and starts again.  A connector never reconnects on its own.

A package adds a connector type by exposing a :class:`ConnectorType` under the entry-point group
``ingestor.connectors`` (the entry point's name is the ``type:`` operators write), for instance in its
``pyproject.toml``::

    [project.entry-points."ingestor.connectors"]
    s7 = "ingestor_s7:CONNECTOR"

Its configuration model subclasses :class:`ConnectorConfig` with ``type: Literal["s7"]``; the daemon's
configuration is a list of every installed type's model, discriminated on ``type``, validated completely
before any socket opens.  docs/architecture.md, "Adding a connector", walks through it.
"""

from __future__ import annotations

import argparse
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

from pydantic import Field

from ingestor.contract.config_base import StrictModel
from ingestor.contract.reading import Reading
from ingestor.contract.reconnect import ReconnectConfig

Loc = tuple[str | int, ...]
"""A path into the configuration, relative to the connector (``("tags", 3, "equipment")``)."""

ENTRY_POINT_GROUP = "ingestor.connectors"


class ConnectionLost(Exception):
    """The link to the device, server or broker is gone; the supervisor will close and reconnect."""


class ReadingSink(Protocol):
    """Where a connector puts its readings: the pipeline's bounded queue."""

    async def put(self, readings: Sequence[Reading], on_durable: Callable[[], None] | None = None) -> None:
        """Accept readings; waits while the pipeline is full (backpressure).

        ``on_durable`` is called, from the event loop, once every reading of this call is durable (stored in
        the local spool, from which it will reach the database exactly once).  MQTT uses it to acknowledge a
        QoS 1/2 message only after its readings can no longer be lost.
        """
        ...


@runtime_checkable
class Connector(Protocol):
    """One protocol link: open it, stream readings until it breaks, close it."""

    name: str

    async def connect(self) -> None:
        """Open the link.  Raises :class:`ConnectionLost` (or an OSError) when the peer is unreachable."""
        ...

    async def run(self, sink: ReadingSink) -> None:
        """Stream readings into ``sink`` until cancelled; raise :class:`ConnectionLost` when the link breaks."""
        ...

    async def close(self) -> None:
        """Release the link; safe to call after a failed or partial ``connect``."""
        ...

    # Optional: ``def status(self) -> dict[str, Any]`` adds connector detail (devices, subscriptions) to
    # /readyz; the supervisor calls it when present.


class TagRef(NamedTuple):
    """A tag's reference to the plant model, so the loader can check it before anything connects."""

    loc: Loc
    equipment: str
    parameter: str
    unit: str | None


class TagConfig(StrictModel):
    """What every tag maps to: a parameter of a piece of equipment, in a unit."""

    equipment: str = Field(min_length=1, description="equipment code from plant.sites[].areas[]…equipment[]")
    parameter: str = Field(min_length=1, max_length=100, description="parameter name stored with each reading")
    unit: str | None = Field(default=None, description="unit code from plant.units (or a built-in unit)")


class ConnectorConfig(StrictModel):
    """Fields every connector has; subclasses add ``type: Literal[...]`` and their own settings."""

    type: str
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.\-]+$")
    enabled: bool = True
    reconnect: ReconnectConfig = ReconnectConfig()

    def tag_refs(self) -> Iterable[TagRef]:
        """Every tag's equipment, parameter and unit, with where it sits in this connector's config."""
        raise NotImplementedError

    def for_test_mode(self) -> ConnectorConfig:
        """This configuration as ``ingestor read`` uses it, beside a daemon that may be running with the same file:
        a connector overrides it where the original would take something from that daemon (an MQTT client id
        and its persistent session, a shared subscription's messages)."""
        return self

    def learns_equipment(self) -> bool:
        """True when the connector takes equipment or unit codes from the traffic and checks them against the
        plant's codes it was built with (``BuildContext.known_equipment``): a reload that changes those codes
        restarts it, so that it knows the new ones.  Connectors whose tags name their equipment do not."""
        return False


@dataclass(frozen=True)
class BuildContext:
    """What the daemon tells a connector when it builds one.

    ``known_equipment`` and ``known_units`` are the plant model's codes, for connectors that learn equipment
    from the traffic (MQTT topic templates) and can refuse an unknown code at the source.  ``state_dir`` is a
    directory of this connector's own (it may not exist yet) for the little it must remember across restarts,
    next to the spool whose readings that state describes (``PIPELINE.spool_dir/connectors/NAME``); None
    where there is nothing to remember for (``ingestor discover``, most tests).  ``clients`` holds
    protocol-client factories by name (``"mqtt_client"``, ``"modbus_client"``, …): tests hand in fakes where
    no real peer can exist; the daemon passes none.
    """

    known_equipment: frozenset[str] | None = None
    known_units: frozenset[str] | None = None
    state_dir: Path | None = None
    clients: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DiscoverCommand:
    """An optional ``ingestor discover <type> …`` command: browse a server, print a tag-map skeleton.

    ``add_arguments`` fills the command's argument parser; ``run(args, known_units)`` does the work and
    returns the exit code (``known_units``: the unit codes a skeleton may use without a ``units:`` list).
    """

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, frozenset[str]], int]
    description: str | None = None


@dataclass(frozen=True)
class ConnectorType:
    """What a connector package registers under the entry-point group ``ingestor.connectors``.

    ``config`` is the configuration model (a :class:`ConnectorConfig` subclass whose ``type`` is a
    ``Literal`` of one name); ``build(config, context)`` makes the connector from a validated configuration,
    and is the place to import the protocol library, so that loading configurations stays fast.
    """

    config: type[ConnectorConfig]
    build: Callable[[Any, BuildContext], Connector]
    discover: DiscoverCommand | None = None

    @property
    def name(self) -> str:
        """The ``type:`` value of this connector, from the configuration model's ``Literal``."""
        args = typing.get_args(self.config.model_fields["type"].annotation)
        if len(args) != 1 or not isinstance(args[0], str):
            raise TypeError(f"{self.config.__name__}.type must be a Literal of one name, such as Literal['s7']")
        return args[0]
