"""Protocol connectors and their registry.

Adding a connector: write its module (a ``ConnectorConfig`` subclass with ``type: Literal[...]`` and a class
implementing :class:`connectors.base.Connector`), add one line to ``CONNECTOR_CONFIGS`` below, and add a
runnable example to ``config/``.  The configuration loader builds its discriminated union from this tuple.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Union

from pydantic import Field

from connectors.base import ConnectorConfig
from connectors.generate import GenerateConfig
from connectors.modbus import ModbusConfig
from connectors.mqtt import MqttConfig
from connectors.opcua import OpcUaConfig

CONNECTOR_CONFIGS: tuple[type[ConnectorConfig], ...] = (
    OpcUaConfig,
    MqttConfig,
    GenerateConfig,
    ModbusConfig,
)

if TYPE_CHECKING:  # for the type checker, any connector's configuration is a ConnectorConfig
    AnyConnectorConfig = ConnectorConfig
else:
    AnyConnectorConfig = Annotated[Union[CONNECTOR_CONFIGS], Field(discriminator="type")]  # noqa: UP007


def connector_types() -> list[str]:
    """The ``type`` values the registry knows."""
    return sorted(model.model_fields["type"].annotation.__args__[0] for model in CONNECTOR_CONFIGS)  # type: ignore[union-attr]
