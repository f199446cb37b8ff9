"""Whole-file checks of the connectors against the plant: tags naming equipment or units the plant does not
have, one equipment parameter mapped by two tags, duplicate connector names.  The plant's own checks are in
:mod:`ingestor.plant.checks`."""

from __future__ import annotations

from ingestor.contract import ConnectorConfig, Loc
from ingestor.contract.config_base import duplicates, format_loc, unknown
from ingestor.plant import PlantConfig


def check_connectors(plant: PlantConfig | None,
                     connectors: list[tuple[int, ConnectorConfig | None]]) -> list[tuple[Loc, str]]:
    found: list[tuple[Loc, str]] = []
    found += duplicates(((("connectors", i, "name"), c.name) for i, c in connectors if c is not None),
                        "connector name")
    if plant is None:
        return found
    equipment = {item.code for _, _, _, item in plant.equipment()}
    units = {u.code for u in plant.units}
    mapped: dict[tuple[str, str], Loc] = {}
    for index, connector in connectors:
        if connector is None:
            continue
        for ref in connector.tag_refs():
            loc: Loc = ("connectors", index, *ref.loc)
            if ref.equipment not in equipment:
                found.append(((*loc, "equipment"), unknown("equipment", ref.equipment, equipment)))
            if ref.unit is not None and ref.unit not in units:
                found.append(((*loc, "unit"), unknown("unit", ref.unit, units)))
            key = (ref.equipment, ref.parameter)
            if key in mapped:
                found.append(((*loc, "parameter"), f"{ref.equipment} {ref.parameter!r} is already mapped at "
                                                    f"{format_loc(mapped[key])}"))
            else:
                mapped[key] = loc
    return found
