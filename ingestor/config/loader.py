"""Loading the configuration: one YAML file, validated completely before anything connects.

Every problem is reported at once, each as ``FILE:LINE:COL: field.path: message``, sorted by position.
Unknown keys are errors.  After the structure is valid, cross-checks look at the whole file: duplicate codes,
tags naming equipment or units the plant does not have, overlapping shifts, reason or product codes that do
not exist.  Cross-checks run on every part that validated, so one typo does not hide the other mistakes.
"""

from __future__ import annotations

import difflib
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from ingestor.api.auth import tokens_problem
from ingestor.config.checks import check_connectors
from ingestor.config.model import AnyConnectorConfig, IngestorConfig
from ingestor.config.problems import ConfigError, Problem
from ingestor.config.registry import connector_types, problem_with
from ingestor.config.yaml_source import Document, Mark, YamlError, collector_paused, load_yaml
from ingestor.contract import ConnectorConfig, Loc
from ingestor.contract.config_base import format_loc
from ingestor.database.config import DATABASE_URL_ENV, check_url
from ingestor.plant import PlantConfig
from ingestor.plant.checks import check_plant


def load_config(path: str | Path, environ: dict[str, str] | None = None) -> IngestorConfig:
    """Read, validate and cross-check a configuration file.  Raises :class:`ConfigError`."""
    with collector_paused():
        return _load(path, os.environ if environ is None else environ)


def _load(path: str | Path, env: Mapping[str, str]) -> IngestorConfig:
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
    if config is not None:
        tokens = tokens_problem(config.http, env)
        if tokens is not None:
            loc: Loc = ("http", "credentials_file") if config.http.credentials_file else ("http", "listen")
            problems.append(Problem(*_position(doc, loc), format_loc(loc), tokens, doc.path))
    override = env.get(DATABASE_URL_ENV)
    if override:
        try:
            check_url(override)
        except ValueError as exc:
            problems.append(Problem(0, 0, "", f"{DATABASE_URL_ENV}: {exc}", DATABASE_URL_ENV))
        else:
            insecure = config.database.transport_problem(config.database.with_tls(override, {})) if config else None
            if insecure:
                problems.append(Problem(0, 0, "", f"{DATABASE_URL_ENV}: {insecure}", DATABASE_URL_ENV))
    if problems:
        raise ConfigError(problems)
    assert config is not None
    return config


# --- turning pydantic errors into positioned, operator-friendly messages ------------------------------------

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
        tag = str(ctx.get("tag"))
        broken = problem_with(tag)
        if broken:
            return f"connector type {tag!r} is installed but cannot be used: {broken}"
        return f"unknown connector type {tag!r}; expected one of: {', '.join(connector_types())}"
    if kind == "union_tag_not_found":
        return f"missing 'type'; expected one of: {', '.join(connector_types())}"
    if kind == "byte_size":
        return "expected a size such as 64KiB, 512MiB or 2GB"
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
        found += check_plant(plant)
    found += check_connectors(plant, connectors)
    return found
