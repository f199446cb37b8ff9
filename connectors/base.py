"""The connector contract: what every protocol connector implements and what it may rely on.

A connector knows its protocol and nothing about databases.  It turns protocol traffic into
:class:`~ingestor.readings.Reading` records and hands them to a :class:`ReadingSink`.  The runtime owns the
connector's life: one supervisor task per connector runs ``connect`` then ``run``; when ``run`` raises
:class:`ConnectionLost` (or anything else) the supervisor calls ``close``, waits with capped exponential
backoff and jitter, and starts again.  A connector never reconnects on its own.

Each connector's configuration model subclasses :class:`ConnectorConfig` with ``type: Literal["…"]``; the
registry in ``connectors/__init__.py`` lists them, and the top-level configuration is a list discriminated on
``type``.  All validation happens when the configuration loads, before any socket opens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

from pydantic import Field

from ingestor.config_types import ReconnectConfig as ReconnectConfig  # re-exported: part of the contract
from ingestor.config_types import StrictModel
from ingestor.readings import Reading

Loc = tuple[str | int, ...]
"""A path into the configuration, relative to the connector (``("tags", 3, "equipment")``)."""


class ConnectionLost(Exception):
    """The link to the device, server or broker is gone; the supervisor will close and reconnect."""


class ReadingSink(Protocol):
    """Where a connector puts its readings: the pipeline's bounded queue."""

    async def put(self, readings: Sequence[Reading], on_durable: Callable[[], None] | None = None) -> None:
        """Accept readings; waits while the pipeline is full (backpressure).

        ``on_durable`` is called, from the event loop, once every reading of this call is durable
        (committed to the database, or to the local spool once there is one).  MQTT uses it to acknowledge a
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

    def create(self, **factories: Any) -> Connector:
        """Build the connector.  Keyword arguments inject protocol-client factories (tests pass fakes); the
        daemon also passes ``known_equipment`` and ``known_units`` (sets of codes from the plant model) for
        connectors that learn equipment from the traffic.  Ignore what you do not use."""
        raise NotImplementedError
