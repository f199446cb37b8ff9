"""The installed connector types, found through the entry-point group ``ingestor.connectors``.

Every package installed next to the daemon can add connector types: the four of this repository (``opcua``,
``modbus``, ``mqtt``, ``generate``) are registered the same way as a separately installed plugin, in their
``pyproject.toml``.  An entry point's name is the ``type:`` operators write and its object is a
:class:`~ingestor.contract.ConnectorType`.

A plugin that cannot be loaded (an import error, a wrong object, two packages claiming one type) does not
stop the daemon from running configurations that do not use it; a configuration that does use it is refused
with the reason (see :func:`problem_with`).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Union

from pydantic import Field

from ingestor.contract import ENTRY_POINT_GROUP, BuildContext, Connector, ConnectorConfig, ConnectorType


@dataclass(frozen=True)
class Registry:
    """Connector types by name, and the entry points that failed to load (name → why)."""

    types: dict[str, ConnectorType] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)


def _origin(entry: EntryPoint) -> str:
    dist = entry.dist
    where = f"{dist.name} {dist.version}" if dist is not None else "an unknown package"
    return f"{entry.value} (from {where})"


def load_registry(entries: typing.Iterable[EntryPoint] | None = None) -> Registry:
    """Load every entry point of the group (or ``entries``); never raises for a broken plugin."""
    registry = Registry()
    claimed: dict[str, list[str]] = {}
    for entry in sorted(entry_points(group=ENTRY_POINT_GROUP) if entries is None else entries,
                        key=lambda e: (e.name, e.value)):
        values = claimed.setdefault(entry.name, [])
        if entry.value in values:  # the same registration seen twice (one package found on two paths)
            continue
        values.append(entry.value)
        if len(values) > 1:
            registry.types.pop(entry.name, None)
            registry.broken[entry.name] = ("more than one installed package registers this connector type: "
                                           + ", ".join(values))
            continue
        try:
            found = entry.load()
        except Exception as exc:  # a plugin's import error must not take the daemon down
            registry.broken[entry.name] = f"{_origin(entry)} failed to load: {type(exc).__name__}: {exc}"
            continue
        problem = _check(entry.name, found)
        if problem:
            registry.broken[entry.name] = f"{_origin(entry)} {problem}"
        else:
            registry.types[entry.name] = found
    return registry


def _check(name: str, found: Any) -> str | None:
    if not isinstance(found, ConnectorType):
        return f"is a {type(found).__name__}, not an ingestor.contract.ConnectorType"
    if not (isinstance(found.config, type) and issubclass(found.config, ConnectorConfig)):
        return "has a configuration model that does not subclass ingestor.contract.ConnectorConfig"
    try:
        declared = found.name
    except TypeError as exc:
        return str(exc)
    if declared != name:
        return f"is registered as {name!r} but its configuration says type: {declared!r}"
    return None


@cache
def installed() -> Registry:
    """The connector types of this environment, loaded once per process."""
    return load_registry()


def connector_types() -> list[str]:
    """The ``type`` values that can be used, sorted."""
    return sorted(installed().types)


def problem_with(name: str) -> str | None:
    """Why an installed connector type cannot be used, or None."""
    return installed().broken.get(name)


def config_union() -> Any:
    """The annotation of one item of ``connectors:``: every installed type's model, discriminated on ``type``."""
    models = tuple(kind.config for kind in installed().types.values())
    if not models:
        raise RuntimeError(f"no connector types are installed (entry-point group {ENTRY_POINT_GROUP!r} is empty): "
                           "install the package, for instance with deploy/dev/setup.sh or pip install .")
    if len(models) == 1:
        return models[0]
    return typing.Annotated[Union[models], Field(discriminator="type")]  # noqa: UP007


def create_connector(config: ConnectorConfig, context: BuildContext | None = None) -> Connector:
    """Build the connector a validated configuration describes."""
    kind = installed().types.get(config.type)
    if kind is None:
        raise KeyError(f"no connector type {config.type!r} is installed")
    return kind.build(config, context or BuildContext())
