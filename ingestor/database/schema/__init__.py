"""The analytics schema: versioned migrations applied at startup on plain PostgreSQL, TimescaleDB Apache
edition or full TimescaleDB, its status, and refreshing the materialized views.

See docs/schema.md for the tables, the tiers, the migration mechanism and the measurements behind the types.
"""

from __future__ import annotations

from ingestor.database.schema.errors import SchemaError, SchemaTooNew
from ingestor.database.schema.migrations import Migration, Skipped, load_migrations
from ingestor.database.schema.runner import ApplyReport, SchemaStatus, apply_schema, schema_status
from ingestor.database.schema.tiers import Tier, detect_tier
from ingestor.database.schema.views import REFRESHABLE_VIEWS, refresh_view, views_to_refresh

__all__ = [
    "REFRESHABLE_VIEWS",
    "ApplyReport",
    "Migration",
    "SchemaError",
    "SchemaStatus",
    "SchemaTooNew",
    "Skipped",
    "Tier",
    "apply_schema",
    "detect_tier",
    "load_migrations",
    "refresh_view",
    "schema_status",
    "views_to_refresh",
]
