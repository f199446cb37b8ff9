"""The contract between the daemon and its connectors: the only part of ``ingestor`` a connector imports.

* :mod:`~ingestor.contract.reading`      the reading, the record that flows from a connector to the database
* :mod:`~ingestor.contract.connector`    the connector protocol, its configuration base and its registration
* :mod:`~ingestor.contract.config_base`  building blocks of every configuration model (strict models, durations)
* :mod:`~ingestor.contract.reconnect`    the backoff settings and delays every link uses
* :mod:`~ingestor.contract.logs`         a logger per module, and logging a problem that repeats

It depends on nothing else in ``ingestor``; everything else in ``ingestor`` may depend on it.
"""

from ingestor.contract.config_base import ByteSize, Duration, StrictModel
from ingestor.contract.connector import (
    ENTRY_POINT_GROUP,
    BuildContext,
    ConnectionLost,
    Connector,
    ConnectorConfig,
    ConnectorType,
    DiscoverCommand,
    Loc,
    ReadingSink,
    TagConfig,
    TagRef,
)
from ingestor.contract.logs import ProblemLog, get_logger
from ingestor.contract.reading import Quality, Reading, from_timestamp_us, now_us, to_timestamp_us
from ingestor.contract.reconnect import ReconnectConfig, backoff_delays

__all__ = [
    "ENTRY_POINT_GROUP",
    "BuildContext",
    "ByteSize",
    "ConnectionLost",
    "Connector",
    "ConnectorConfig",
    "ConnectorType",
    "DiscoverCommand",
    "Duration",
    "Loc",
    "ProblemLog",
    "Quality",
    "Reading",
    "ReadingSink",
    "ReconnectConfig",
    "StrictModel",
    "TagConfig",
    "TagRef",
    "backoff_delays",
    "from_timestamp_us",
    "get_logger",
    "now_us",
    "to_timestamp_us",
]
