"""The plant model from the YAML tag map (:mod:`~ingestor.plant.model`: sites → areas → work centers →
equipment, products, downtime reasons, shifts, units) and the checks that look at the whole plant
(:mod:`~ingestor.plant.checks`).  It becomes the ``dim_*`` tables at startup (``ingestor.database.dimensions``).
"""

from ingestor.plant.model import (
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
    ShiftConfig,
    SiteConfig,
    StateRole,
    UnitConfig,
    WorkCenterConfig,
)

__all__ = [
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
    "ShiftConfig",
    "SiteConfig",
    "StateRole",
    "UnitConfig",
    "WorkCenterConfig",
]
