"""The whole YAML file: the root model that composes every section from the package it configures.

Each section's model lives beside the code it configures (``database:`` in :mod:`ingestor.database.config`,
``pipeline:`` in :mod:`ingestor.pipeline.config`, …); each item of ``connectors:`` is the model of an installed
connector type (:mod:`ingestor.config.registry`).  That is why this module sits above those packages.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from pydantic import Field

from ingestor.api.config import HttpConfig
from ingestor.config.registry import config_union
from ingestor.contract import ConnectorConfig, StrictModel
from ingestor.database.config import DatabaseConfig
from ingestor.derive.config import DerivationConfig, EventsConfig
from ingestor.pipeline.config import PipelineConfig
from ingestor.plant import PlantConfig
from ingestor.service.logs import LoggingConfig
from ingestor.service.watch import ReloadConfig

if TYPE_CHECKING:  # for the type checker, any connector's configuration is a ConnectorConfig
    AnyConnectorConfig = ConnectorConfig
else:
    AnyConnectorConfig = config_union()


class IngestorConfig(StrictModel):
    """The whole YAML file."""

    instance_id: str = Field(
        default_factory=socket.gethostname, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.\-]+$",
        description="names this daemon in the database; distinct per daemon sharing one database")
    database: DatabaseConfig = DatabaseConfig()
    plant: PlantConfig
    connectors: list[AnyConnectorConfig] = Field(default_factory=list)
    pipeline: PipelineConfig = PipelineConfig()
    derivation: DerivationConfig = DerivationConfig()
    events: EventsConfig = EventsConfig()
    http: HttpConfig = HttpConfig()
    logging: LoggingConfig = LoggingConfig()
    reload: ReloadConfig = ReloadConfig()

    def enabled_connectors(self) -> list[ConnectorConfig]:
        return [c for c in self.connectors if c.enabled]
