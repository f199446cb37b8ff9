"""Errors of the schema manager, worded for the operator who reads them in the daemon's log."""

from __future__ import annotations


class SchemaError(Exception):
    """The analytics schema cannot be applied or inspected; the message says why and what to do."""


class SchemaTooNew(SchemaError):
    """The database holds a schema version newer than any migration this ingestor knows."""

    def __init__(self, database_version: str, latest_known: str) -> None:
        self.database_version = database_version
        self.latest_known = latest_known
        super().__init__(
            f"database schema is at version {int(database_version)} but this ingestor knows versions up to "
            f"{int(latest_known)}; upgrade the ingestor (or point it at another database)")
