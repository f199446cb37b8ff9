"""``ingestor check-config FILE``: validate a configuration and print what it describes."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from ingestor.cli.common import EXIT_CONFIG, EXIT_OK, load_or_report
from ingestor.config import IngestorConfig
from ingestor.database.connection import redact


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = commands.add_parser("check-config", help="validate a configuration file and summarise it")
    check.add_argument("config", type=Path)
    check.set_defaults(command_main=lambda args: check_config(args.config))


def check_config(path: Path) -> int:
    config = load_or_report(path)
    if config is None:
        return EXIT_CONFIG
    print("\n".join(summary(config, path)))
    return EXIT_OK


def summary(config: IngestorConfig, path: Path) -> list[str]:
    """A short human-readable description of a valid configuration."""
    plant = config.plant
    areas = [a for s in plant.sites for a in s.areas]
    centers = [w for a in areas for w in a.work_centers]
    equipment = [e for _, _, _, e in plant.equipment()]
    shifts = sum(len(s.calendar()) for s in plant.sites)

    def n(count: int, word: str) -> str:
        return f"{count} {word}" + ("" if count == 1 or word.endswith("equipment") else "s")

    lines = [
        f"{path}: OK",
        f"  instance:   {config.instance_id}",
        f"  database:   {redact(config.database.effective_url())} (timescaledb: {config.database.timescaledb})",
        "  plant:      " + ", ".join([
            n(len(plant.sites), "site"), n(len(areas), "area"), n(len(centers), "work center"),
            n(len(equipment), "equipment"), n(len(plant.products), "product"),
            n(len(plant.downtime_reasons), "downtime reason"), n(shifts, "shift"), n(len(plant.units), "unit")]),
    ]
    kinds = Counter(c.type for c in config.connectors)
    tags = sum(len(list(c.tag_refs())) for c in config.connectors)
    by_type = ", ".join(f"{kind}: {count}" for kind, count in sorted(kinds.items()))
    lines.append(f"  connectors: {len(config.connectors)}" + (f" ({by_type}), {n(tags, 'tag')}" if kinds else ""))
    for connector in config.connectors:
        state = "" if connector.enabled else ", disabled"
        lines.append(f"    - {connector.name} ({connector.type}): {n(len(list(connector.tag_refs())), 'tag')}{state}")
    for site, area, center, item in plant.equipment():
        roles = item.roles
        role_names = [k for k, v in (roles.model_dump(exclude_none=True).items() if roles else []) if v]
        lines.append(f"    equipment {item.code}: {site.code}/{area.code}/{center.code}"
                     + (f", roles: {', '.join(role_names)}" if role_names else ""))
    lines.append(f"  pipeline:   batches of {config.pipeline.batch_rows} rows or {config.pipeline.batch_age:g} s, "
                 f"queue {config.pipeline.queue_size} readings")
    retention = config.database.retention
    if retention.raw is None:
        lines.append("  retention:  off (every reading stays in fact_sensor_event)")
    else:
        kept = f", deleted at {retention.archive / 86400:g} days" if retention.archive is not None else ", kept"
        lines.append(f"  retention:  readings archived at {retention.raw / 86400:g} days{kept}; "
                     f"a run every {retention.interval:g} s")
    lines.append(f"  http:       {config.http.listen if config.http.enabled else 'off'}")
    return lines
