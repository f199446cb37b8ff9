"""The daemon's configuration: one YAML file, validated completely before anything connects.

Every problem is reported at once, each as ``FILE:LINE:COL: field.path: message``, sorted by position.
Unknown keys are errors.  After the structure is valid, cross-checks look at the whole file: duplicate codes,
tags naming equipment or units the plant does not have, overlapping shifts, reason or product codes that do
not exist.  Cross-checks run on every part that validated, so one typo does not hide the other mistakes.
"""

from __future__ import annotations

import difflib
import os
import socket
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from connectors import AnyConnectorConfig, connector_types
from connectors.base import ConnectorConfig
from ingestor.config_types import StrictModel
from ingestor.database import DATABASE_URL_ENV, DatabaseConfig, check_url
from ingestor.derive.config import DerivationConfig
from ingestor.health import HttpConfig
from ingestor.logs import LoggingConfig
from ingestor.pipeline import PipelineConfig
from ingestor.plant import PlantConfig, SiteConfig
from ingestor.yaml_source import Document, Mark, YamlError, load_yaml

Loc = tuple[str | int, ...]


class IngestorConfig(StrictModel):
    """The whole YAML file."""

    instance_id: str = Field(
        default_factory=socket.gethostname, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.\-]+$",
        description="names this daemon in the database; distinct per daemon sharing one database")
    database: DatabaseConfig = DatabaseConfig()
    plant: PlantConfig
    connectors: list[AnyConnectorConfig] = Field(default_factory=list)
    pipeline: PipelineConfig = PipelineConfig()
    derivation: DerivationConfig = DerivationConfig()
    http: HttpConfig = HttpConfig()
    logging: LoggingConfig = LoggingConfig()

    def enabled_connectors(self) -> list[ConnectorConfig]:
        return [c for c in self.connectors if c.enabled]


@dataclass(frozen=True, order=True)
class Problem:
    """One configuration error with where it is."""

    line: int
    column: int
    path: str
    message: str
    file: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` lists every error found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def load_config(path: str | Path, environ: dict[str, str] | None = None) -> IngestorConfig:
    """Read, validate and cross-check a configuration file.  Raises :class:`ConfigError`."""
    env = os.environ if environ is None else environ
    try:
        doc = load_yaml(path)
    except YamlError as exc:
        mark = exc.mark or Mark(0, 0)
        raise ConfigError([Problem(mark.line, mark.column, "", exc.message, exc.path)]) from None
    problems = [Problem(m.line, m.column, format_loc(loc), "duplicate key: the same key appears twice", doc.path)
                for loc, m in doc.duplicate_keys]
    if not isinstance(doc.data, dict):
        raise ConfigError([Problem(1, 1, "", "expected a mapping of sections (plant:, connectors:, …)", doc.path)])
    config: IngestorConfig | None = None
    try:
        config = IngestorConfig.model_validate(doc.data)
    except ValidationError as exc:
        problems.extend(_problems_from(exc, doc, IngestorConfig))
    problems.extend(Problem(*_position(doc, loc), format_loc(loc), message, doc.path)
                    for loc, message in _cross_check(doc.data, config))
    override = env.get(DATABASE_URL_ENV)
    if override:
        try:
            check_url(override)
        except ValueError as exc:
            problems.append(Problem(0, 0, "", f"{DATABASE_URL_ENV}: {exc}", DATABASE_URL_ENV))
    if problems:
        raise ConfigError(problems)
    assert config is not None
    return config


# --- turning pydantic errors into positioned, operator-friendly messages ------------------------------------

def format_loc(loc: Iterable[str | int]) -> str:
    """``("connectors", 0, "tags", 2, "unit")`` → ``connectors[0].tags[2].unit``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _position(doc: Document, loc: Loc, *, at_key: bool = False) -> tuple[int, int]:
    mark = doc.mark_for(loc, at_key=at_key)
    return mark.line, mark.column


def _data_loc(data: Any, loc: tuple[Any, ...], missing: bool) -> Loc:
    """Drop the parts of a pydantic error location that are not in the data (union tags, validator names);
    keep a trailing missing field name."""
    kept: list[str | int] = []
    node = data
    for index, part in enumerate(loc):
        if isinstance(node, dict) and part in node:
            kept.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            kept.append(part)
            node = node[part]
        elif missing and index == len(loc) - 1:
            kept.append(part)
    return tuple(kept)


def _problems_from(exc: ValidationError, doc: Document, root: type[BaseModel]) -> list[Problem]:
    problems = []
    for error in exc.errors(include_url=False):
        kind = error["type"]
        loc = _data_loc(doc.data, tuple(error["loc"]), missing=kind == "missing")
        if kind == "missing":
            line, column = _position(doc, loc[:-1], at_key=True)
            message = "required field is missing"
        elif kind == "extra_forbidden":
            line, column = _position(doc, loc, at_key=True)
            message = "unknown key" + _suggestion(root, tuple(error["loc"]))
        else:
            line, column = _position(doc, loc)
            message = _message(error)
        problems.append(Problem(line, column, format_loc(loc), message, doc.path))
    return problems


def _message(error: Any) -> str:
    kind, msg, ctx = error["type"], error["msg"], error.get("ctx") or {}
    if kind == "union_tag_invalid":
        return f"unknown connector type {ctx.get('tag')!r}; expected one of: {', '.join(connector_types())}"
    if kind == "union_tag_not_found":
        return f"missing 'type'; expected one of: {', '.join(connector_types())}"
    if kind == "value_error":
        return str(msg).removeprefix("Value error, ")
    if kind in ("model_type", "dict_type"):
        return "expected a mapping of keys and values"
    if kind == "list_type":
        return "expected a list (items starting with '- ')"
    return str(msg)[:1].lower() + str(msg)[1:]


def _suggestion(root: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """`` (did you mean 'host'?)`` when the unknown key is close to a field of the model it sits in."""
    model = _model_at(root, loc[:-1])
    if model is None:
        return ""
    names = [name for name, field in model.model_fields.items() if not field.exclude]
    close = difflib.get_close_matches(str(loc[-1]), names, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else f"; expected one of: {', '.join(names)}"


def _model_at(root: Any, loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """Follow a pydantic error location through the model's annotations to the model it ends in."""
    current: Any = root
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(part) if isinstance(part, str) else None
            if field is None:
                return None
            current = field.annotation
            continue
        origin, args = typing.get_origin(current), typing.get_args(current)
        if origin in (list, tuple) and args:
            current = args[0]
        elif origin is dict and len(args) == 2:
            current = args[1]
        elif origin in (typing.Union, types.UnionType):
            current = next((a for a in args if _tag_of(a) == part), None)
            if current is None:
                return None
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    while True:
        if typing.get_origin(annotation) is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
            continue
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
            annotation = args[0]
            continue
        return annotation


def _tag_of(model: Any) -> Any:
    if isinstance(model, type) and issubclass(model, BaseModel) and "type" in model.model_fields:
        args = typing.get_args(model.model_fields["type"].annotation)
        return args[0] if args else None
    return None


# --- cross-checks ------------------------------------------------------------------------------------------

def _validated(adapter: TypeAdapter[Any], value: Any) -> Any:
    try:
        return adapter.validate_python(value)
    except ValidationError:
        return None


_PLANT = TypeAdapter(PlantConfig)
_CONNECTOR: TypeAdapter[Any] = TypeAdapter(AnyConnectorConfig)


def _cross_check(data: dict[str, Any], config: IngestorConfig | None) -> list[tuple[Loc, str]]:
    """Whole-file checks, run on every section that validated on its own."""
    if config is not None:
        plant: PlantConfig | None = config.plant
        connectors: list[tuple[int, ConnectorConfig | None]] = list(enumerate(config.connectors))
    else:
        plant = _validated(_PLANT, data.get("plant"))
        raw = data.get("connectors")
        connectors = [(i, _validated(_CONNECTOR, c)) for i, c in enumerate(raw)] if isinstance(raw, list) else []
    found: list[tuple[Loc, str]] = []
    if plant is not None:
        found += _check_plant(plant)
    found += _check_connectors(plant, connectors)
    return found


def _duplicates(items: Iterable[tuple[Loc, str]], what: str) -> list[tuple[Loc, str]]:
    first: dict[str, Loc] = {}
    found = []
    for loc, code in items:
        if code in first:
            found.append((loc, f"duplicate {what} {code!r} (first defined at {format_loc(first[code])})"))
        else:
            first[code] = loc
    return found


def _check_plant(plant: PlantConfig) -> list[tuple[Loc, str]]:
    found: list[tuple[Loc, str]] = []
    sites, areas, centers, equipment = [], [], [], []
    for s, site in enumerate(plant.sites):
        s_loc: Loc = ("plant", "sites", s)
        sites.append(((*s_loc, "code"), site.code))
        found += _duplicates(
            (((*s_loc, "shifts", i, "code"), shift.code) for i, shift in enumerate(site.shifts)), "shift code")
        found += _shift_overlaps(s_loc, site)
        for a, area in enumerate(site.areas):
            a_loc = (*s_loc, "areas", a)
            areas.append(((*a_loc, "code"), area.code))
            for w, center in enumerate(area.work_centers):
                w_loc = (*a_loc, "work_centers", w)
                centers.append(((*w_loc, "code"), center.code))
                for e, item in enumerate(center.equipment):
                    equipment.append(((*w_loc, "equipment", e, "code"), item.code))
    found += _duplicates(sites, "site code") + _duplicates(areas, "area code")
    found += _duplicates(centers, "work center code") + _duplicates(equipment, "equipment code")
    found += _duplicates(((("plant", "products", i, "code"), p.code) for i, p in enumerate(plant.products)),
                         "product code")
    found += _duplicates(((("plant", "downtime_reasons", i, "code"), r.code)
                          for i, r in enumerate(plant.downtime_reasons)), "reason code")
    found += _duplicates(((("plant", "units", i, "code"), u.code) for i, u in enumerate(plant.units)), "unit code")
    found += _check_roles(plant, [loc[:-1] for loc, _ in equipment])
    return found


def _shift_overlaps(site_loc: Loc, site: SiteConfig) -> list[tuple[Loc, str]]:
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
                    found.append(((*state_loc, "reasons", value), _unknown("reason code", code, reasons)))
            for key in ("default_unplanned_reason", "default_planned_reason"):
                code = getattr(roles.state, key)
                if code is not None and code not in reasons:
                    found.append(((*state_loc, key), _unknown("reason code", code, reasons)))
        if roles.product is not None:
            for value, code in roles.product.codes.items():
                if code not in products:
                    found.append(((*loc, "roles", "product", "codes", value), _unknown("product code", code, products)))
    return found


def _unknown(what: str, code: str, known: Iterable[str]) -> str:
    known = sorted(known)
    close = difflib.get_close_matches(code, known, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else (
        f"; known: {', '.join(known[:12])}{', …' if len(known) > 12 else ''}" if known else "; none are defined")
    return f"unknown {what} {code!r}{hint}"


def _check_connectors(plant: PlantConfig | None,
                      connectors: list[tuple[int, ConnectorConfig | None]]) -> list[tuple[Loc, str]]:
    found: list[tuple[Loc, str]] = []
    found += _duplicates(((("connectors", i, "name"), c.name) for i, c in connectors if c is not None),
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
                found.append(((*loc, "equipment"), _unknown("equipment", ref.equipment, equipment)))
            if ref.unit is not None and ref.unit not in units:
                found.append(((*loc, "unit"), _unknown("unit", ref.unit, units)))
            key = (ref.equipment, ref.parameter)
            if key in mapped:
                found.append(((*loc, "parameter"), f"{ref.equipment} {ref.parameter!r} is already mapped at "
                                                    f"{format_loc(mapped[key])}"))
            else:
                mapped[key] = loc
    return found
