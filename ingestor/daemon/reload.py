"""What a reload changes: the difference between the running configuration and a new, valid file.

:func:`plan_reload` compares the two section by section and says what the daemon must do:

* ``connectors:`` by name: a connector whose configuration differs in any way is restarted, a new (or newly
  enabled) one started, a removed (or disabled) one stopped; the others are not touched, except a connector
  that learns equipment from the traffic (an MQTT subscription with a topic template): it checks codes against
  the plant it was built with, so a change of the plant's equipment or unit codes restarts it.
* ``plant:`` changed: the dimensions are synced to the database (by the writer, between two commits) and the
  derivation and live events start again with the new plant (both rebuild their state from the database).
* ``derivation:`` / ``events:`` changed: those two tasks start again with the new settings.
* ``logging:`` and ``reload:`` apply at once.
* ``instance_id``, ``database:``, ``pipeline:`` and ``http:`` cannot change under a running daemon: the
  database connection, the spool (its directory, its identity in the database), the queue and the writer's
  batches, the listening socket and its tokens are what the running pipeline *is*.  Changed fields there are
  named (``database.url``, ``pipeline.spool_dir``, …) and keep their running values until the next restart.

Nothing here touches a socket or a task: the daemon (:mod:`ingestor.daemon.runtime`) carries the plan out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter, Gauge

from ingestor.config.model import IngestorConfig
from ingestor.contract import ConnectorConfig

RELOADS = Counter("ingestor_config_reloads_total",
                  "Configuration reloads (SIGHUP or a watched file change) by result: applied, rejected (the file "
                  "was invalid; nothing changed), no_change (valid, nothing to apply live)", ["result"])
LAST_RELOAD_SUCCESS = Gauge("ingestor_config_last_reload_success_timestamp_seconds",
                            "When a reload was last applied (Unix time; 0: never since the start)")
for _result in ("applied", "rejected", "no_change"):
    RELOADS.labels(_result)

RESTART_ONLY = ("instance_id", "database", "pipeline", "http")
"""Top-level settings a running daemon keeps until it is restarted."""


def changed_fields(old: Any, new: Any, path: str) -> list[str]:
    """Dotted paths of the leaves that differ between two dumped values (a list is one leaf)."""
    if isinstance(old, dict) and isinstance(new, dict):
        found: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            found += changed_fields(old.get(key), new.get(key), f"{path}.{key}" if path else str(key))
        return found
    return [] if old == new else [path]


def _codes(config: IngestorConfig) -> tuple[set[str], set[str]]:
    """The plant's equipment and unit codes: what connectors that learn equipment from the traffic check."""
    return {e.code for *_, e in config.plant.equipment()}, {u.code for u in config.plant.units}


def _by_name(config: IngestorConfig) -> dict[str, ConnectorConfig]:
    return {c.name: c for c in config.enabled_connectors()}


@dataclass
class ReloadPlan:
    """What a reload will do; ``config`` is the configuration to run with (restart-only settings kept)."""

    config: IngestorConfig
    needs_restart: list[str] = field(default_factory=list)
    restart: list[str] = field(default_factory=list)
    start: list[str] = field(default_factory=list)
    stop: list[str] = field(default_factory=list)
    plant: bool = False
    derivation: bool = False
    logging: bool = False
    reload: bool = False

    @property
    def applies_something(self) -> bool:
        return bool(self.restart or self.start or self.stop or self.plant or self.derivation or self.logging
                    or self.reload)

    def changed_sections(self) -> list[str]:
        return [name for name, changed in (("plant", self.plant), ("derivation/events", self.derivation),
                                           ("logging", self.logging), ("reload", self.reload)) if changed]


def plan_reload(running: IngestorConfig, new: IngestorConfig) -> ReloadPlan:
    """The difference between the running configuration and a new valid one, as steps."""
    old_dump, new_dump = running.model_dump(mode="json"), new.model_dump(mode="json")
    needs_restart = [path for section in RESTART_ONLY
                     for path in changed_fields(old_dump.get(section), new_dump.get(section), section)]
    effective = new.model_copy(update={section: getattr(running, section) for section in RESTART_ONLY})
    before, after = _by_name(running), _by_name(new)
    codes_changed = _codes(running) != _codes(new)
    return ReloadPlan(
        config=effective,
        needs_restart=needs_restart,
        restart=[name for name in after if name in before and (
            after[name].model_dump(mode="json") != before[name].model_dump(mode="json")
            or (codes_changed and after[name].learns_equipment()))],
        start=[name for name in after if name not in before],
        stop=[name for name in before if name not in after],
        plant=old_dump["plant"] != new_dump["plant"],
        derivation=(old_dump["derivation"], old_dump["events"]) != (new_dump["derivation"], new_dump["events"]),
        logging=old_dump["logging"] != new_dump["logging"],
        reload=old_dump["reload"] != new_dump["reload"],
    )
