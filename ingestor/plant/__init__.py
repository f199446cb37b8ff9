"""The plant model from the YAML tag map (:mod:`~ingestor.plant.model`: sites → areas → work centers →
equipment, products, downtime reasons, shifts, units) and the checks that look at the whole plant
(:mod:`~ingestor.plant.checks`).  It becomes the ``dim_*`` tables at startup (``ingestor.database.dimensions``).
"""

from ingestor.plant.model import (
    DEFAULT_SCRAP_REASONS,
    DEFAULT_UNITS,
    SEMI_E10_REASONS,
    AreaConfig,
    CodeMapRole,
    CounterRole,
    DowntimeReasonConfig,
    EquipmentConfig,
    EquipmentRoles,
    PlantConfig,
    ProductConfig,
    ScrapReasonConfig,
    ShiftConfig,
    SiteConfig,
    StateRole,
    UnitConfig,
    WorkCenterConfig,
)

__all__ = [
    "DEFAULT_SCRAP_REASONS",
    "DEFAULT_UNITS",
    "SEMI_E10_REASONS",
    "AreaConfig",
    "CodeMapRole",
    "CounterRole",
    "DowntimeReasonConfig",
    "EquipmentConfig",
    "EquipmentRoles",
    "PlantConfig",
    "ProductConfig",
    "ScrapReasonConfig",
    "ShiftConfig",
    "SiteConfig",
    "StateRole",
    "UnitConfig",
    "WorkCenterConfig",
]
