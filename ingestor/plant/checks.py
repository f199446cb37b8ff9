"""Whole-plant checks the models cannot make one field at a time: duplicate codes anywhere in the tree,
overlapping shifts, and reason or product codes in equipment roles that the plant does not define.

Each problem is a location in the YAML (``("plant", "sites", 0, "shifts", 2)``) and a message; the
configuration loader turns them into ``FILE:LINE:COL`` lines.
"""

from __future__ import annotations

from ingestor.contract.config_base import duplicates, unknown
from ingestor.contract.connector import Loc
from ingestor.plant.model import PlantConfig, SiteConfig


def check_plant(plant: PlantConfig) -> list[tuple[Loc, str]]:
    found: list[tuple[Loc, str]] = []
    sites, areas, centers, equipment = [], [], [], []
    for s, site in enumerate(plant.sites):
        s_loc: Loc = ("plant", "sites", s)
        sites.append(((*s_loc, "code"), site.code))
        found += duplicates(
            (((*s_loc, "shifts", i, "code"), shift.code) for i, shift in enumerate(site.shifts)), "shift code")
        found += shift_overlaps(s_loc, site)
        for a, area in enumerate(site.areas):
            a_loc = (*s_loc, "areas", a)
            areas.append(((*a_loc, "code"), area.code))
            for w, center in enumerate(area.work_centers):
                w_loc = (*a_loc, "work_centers", w)
                centers.append(((*w_loc, "code"), center.code))
                for e, item in enumerate(center.equipment):
                    equipment.append(((*w_loc, "equipment", e, "code"), item.code))
    found += duplicates(sites, "site code") + duplicates(areas, "area code")
    found += duplicates(centers, "work center code") + duplicates(equipment, "equipment code")
    found += duplicates(((("plant", "products", i, "code"), p.code) for i, p in enumerate(plant.products)),
                        "product code")
    found += duplicates(((("plant", "downtime_reasons", i, "code"), r.code)
                         for i, r in enumerate(plant.downtime_reasons)), "reason code")
    found += duplicates(((("plant", "scrap_reasons", i, "code"), r.code)
                         for i, r in enumerate(plant.scrap_reasons)), "scrap reason code")
    found += duplicates(((("plant", "units", i, "code"), u.code) for i, u in enumerate(plant.units)), "unit code")
    found += _check_roles(plant, [loc[:-1] for loc, _ in equipment])
    return found


def shift_overlaps(site_loc: Loc, site: SiteConfig) -> list[tuple[Loc, str]]:
    """Shifts are intervals on the 24-hour clock (a night shift wraps past midnight); none may overlap."""
    found = []
    spans = [shift.minutes() for shift in site.shifts]
    for j, (start_j, end_j) in enumerate(spans):
        for i in range(j):
            start_i, end_i = spans[i]
            # compare on a circle: shift one interval by a day either way
            if any(start_j + k < end_i and start_i < end_j + k for k in (-1440, 0, 1440)):
                first, second = site.shifts[i], site.shifts[j]
                found.append(((*site_loc, "shifts", j),
                              f"shift {second.code} ({second.start:%H:%M}-{second.end:%H:%M}) overlaps shift "
                              f"{first.code} ({first.start:%H:%M}-{first.end:%H:%M})"))
    return found


def _check_roles(plant: PlantConfig, equipment_locs: list[Loc]) -> list[tuple[Loc, str]]:
    reasons = {r.code: r for r in plant.downtime_reasons}
    products = {p.code for p in plant.products}
    found: list[tuple[Loc, str]] = []
    for loc, (_, _, _, item) in zip(equipment_locs, plant.equipment(), strict=True):
        roles = item.roles
        if roles is None:
            continue
        if roles.state is not None:
            state_loc = (*loc, "roles", "state")
            for value, code in roles.state.reasons.items():
                if code not in reasons:
                    found.append(((*state_loc, "reasons", value), unknown("reason code", code, reasons)))
            for key in ("default_unplanned_reason", "default_planned_reason"):
                code = getattr(roles.state, key)
                if code is not None and code not in reasons:
                    found.append(((*state_loc, key), unknown("reason code", code, reasons)))
        if roles.product is not None:
            for value, code in roles.product.codes.items():
                if code not in products:
                    found.append(((*loc, "roles", "product", "codes", value), unknown("product code", code, products)))
    return found
