"""The three kinds of plant record, their columns (with the names CMMS, MES and spreadsheet exports give them)
and how one row becomes one staged record or a list of problems.

Kinds and their natural keys:

- ``maintenance``: a work order (key: the work order number) → ``fact_maintenance``
- ``scrap``: scrapped parts (key: the record's own id, else equipment + time + reason) → ``fact_scrap``
- ``equipment``: a machine from a legacy system (key: its code, by default the legacy id) → ``dim_equipment``
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from operator import itemgetter
from typing import Any, Literal
from zoneinfo import ZoneInfo

from ingestor.records.values import DateOrder, fast_local_time, parse_decimal, parse_int, parse_time

Kind = Literal["maintenance", "scrap", "equipment"]
KINDS: tuple[Kind, ...] = ("maintenance", "scrap", "equipment")


@dataclass(frozen=True)
class Column:
    name: str
    aliases: tuple[str, ...]
    required: bool = False
    help: str = ""


EQUIPMENT_ALIASES = ("equipment", "equipment_code", "asset", "asset_code", "assetnum", "asset_number", "equnr",
                     "machine", "machine_code")

COLUMNS: dict[Kind, tuple[Column, ...]] = {
    "maintenance": (
        Column("work_order", ("work_order", "work_order_number", "work_order_no", "workorder", "wo", "wo_number",
                              "wonum", "order", "order_number", "aufnr"), True, "the work order number (key)"),
        Column("equipment", EQUIPMENT_ALIASES, True, "equipment code"),
        Column("type", ("type", "maintenance_type", "work_type", "worktype", "order_type", "activity_type"), True,
               "preventive, corrective, predictive or calibration (also PM, CM, PdM, CAL)"),
        Column("start", ("start", "start_time", "actual_start", "actstart", "started", "begin"), True,
               "when the work began"),
        Column("end", ("end", "end_time", "actual_end", "actfinish", "finished", "finish", "completed"), True,
               "when it ended"),
        Column("labor_hours", ("labor_hours", "labour_hours", "hours", "actlabhrs", "work_hours", "man_hours")),
        Column("parts_cost", ("parts_cost", "material_cost", "actmatcost", "spare_parts_cost", "parts")),
        Column("labor_cost", ("labor_cost", "labour_cost", "actlabcost")),
        Column("failure_code", ("failure_code", "failurecode", "problem_code", "problemcode", "cause_code",
                                "damage_code"), help="a downtime reason code (MECH_FAIL, …)"),
        Column("technician", ("technician", "tech", "performed_by", "assigned_to", "lead")),
        Column("description", ("description", "short_text", "ktext", "text", "notes")),
    ),
    "scrap": (
        Column("scrap_id", ("scrap_id", "id", "record_id", "nc_number", "defect_id"),
               help="the record's own id (key); without it the key is equipment + time + reason"),
        Column("equipment", EQUIPMENT_ALIASES, True, "equipment code"),
        Column("time", ("time", "recorded_at", "timestamp", "date", "scrap_time", "datetime"), True,
               "when the parts were scrapped"),
        Column("product", ("product", "product_code", "material", "part", "part_number", "item")),
        Column("quantity", ("quantity", "qty", "scrap_qty", "count", "pieces"), True, "parts scrapped"),
        Column("reason", ("reason", "reason_code", "scrap_code", "defect_code", "scrap_reason"), True,
               "scrap reason code (plant.scrap_reasons)"),
        Column("cost", ("cost", "scrap_cost", "value")),
        Column("comments", ("comments", "comment", "note", "notes", "remark", "remarks")),
    ),
    "equipment": (
        Column("legacy_id", ("legacy_id", "id", "old_id", "asset_id", "equipment_number", "equnr", "assetnum"),
               True, "the id in the legacy system, kept in attributes.legacy_id"),
        Column("code", ("code", "equipment_code", "new_code"), help="equipment code (default: the legacy id)"),
        Column("name", ("name", "equipment_name", "description"), True),
        Column("type", ("type", "equipment_type", "class", "category")),
        Column("location", ("location", "work_center", "workcenter", "work_center_code", "line"), True,
               "work center code or name"),
        Column("manufacturer", ("manufacturer", "vendor", "make")),
        Column("model", ("model",)),
        Column("serial_number", ("serial_number", "serial", "serialnum", "serial_no")),
        Column("criticality", ("criticality", "criticality_level")),
    ),
}

_PLAIN_AMOUNT = re.compile(r"(\d{1,10})(?:[.,](\d{1,2}))?")
"""a cost as most files write one: up to ten digits, a decimal point or comma and at most two decimals"""
_CENT = Decimal("0.01")

KEY_COLUMNS: dict[Kind, str] = {"maintenance": "work_order", "scrap": "scrap_id", "equipment": "legacy_id"}

MAINTENANCE_TYPES = {
    "preventive": "Preventive", "pm": "Preventive", "prev": "Preventive", "planned": "Preventive",
    "corrective": "Corrective", "cm": "Corrective", "corr": "Corrective", "repair": "Corrective",
    "breakdown": "Corrective", "predictive": "Predictive", "pdm": "Predictive", "cbm": "Predictive",
    "condition_based": "Predictive", "calibration": "Calibration", "cal": "Calibration",
}
CRITICALITY = {"critical": "Critical", "high": "High", "medium": "Medium", "low": "Low"}


def normalise(name: str) -> str:
    """A column name as compared: lower case, runs of anything but letters and digits as one ``_``."""
    return re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a file: ``FILE:LINE: column: message``."""

    line: int
    column: str
    message: str

    def render(self, source: str) -> str:
        return f"{source}:{self.line}: {self.column}: {self.message}"


@dataclass
class Plant:
    """What the rows are checked against, read from the database's dimensions."""

    equipment: dict[str, int]
    equipment_zone: dict[str, ZoneInfo]
    work_centers: dict[str, int]
    """by code and by name"""
    work_center_zone: dict[int, ZoneInfo]
    products: dict[str, int]
    downtime_reasons: set[str]
    scrap_reasons: set[str]
    default_zone: ZoneInfo | None = None
    """the time zone of every site when they share one: times of rows whose equipment is unknown are checked too"""
    _suggest: dict[tuple[str, ...], Callable[[str], str]] = field(default_factory=dict, repr=False)

    def suggest(self, value: str, choices: Sequence[str]) -> str:
        """``; did you mean X?`` for the closest of ``choices``, or nothing."""
        # keyed by the choices themselves: callers pass a fresh list each time, and the id() of a list gone
        # is soon another list's (equipment typos were answered from the cache of the product codes)
        frozen = tuple(sorted(choices))
        if frozen not in self._suggest:

            @lru_cache(maxsize=1024)
            def closest(v: str) -> str:
                found = difflib.get_close_matches(v, frozen, n=1, cutoff=0.6) or \
                    [c for c in frozen if c.casefold() == v.casefold()]
                return f"; did you mean {found[0]}?" if found else ""
            self._suggest[frozen] = closest
        return self._suggest[frozen](value)


class Header:
    """Which field of a row holds which column of the kind."""

    def __init__(self, kind: Kind, names: list[str]) -> None:
        self.kind = kind
        self.names = names
        self.index: dict[str, int] = {}
        self.problems: list[Problem] = []
        self.ignored: list[str] = []
        lookup = {alias: column.name for column in COLUMNS[kind] for alias in column.aliases}
        for i, raw in enumerate(names):
            found = lookup.get(normalise(raw))
            if found is None:
                if raw.strip():
                    self.ignored.append(raw)
            elif found in self.index:
                self.problems.append(Problem(1, raw, f"a second {found} column (the first is "
                                                     f"{names[self.index[found]]!r})"))
            else:
                self.index[found] = i
        for column in COLUMNS[kind]:
            if column.required and column.name not in self.index:
                others = ", ".join(a for a in column.aliases if a != column.name)
                self.problems.append(Problem(1, "header", f"no {column.name} column ({column.help or column.name};"
                                                          f" also accepted: {others})"))

    def label(self, column: str) -> str:
        """The column as the file names it."""
        return self.names[self.index[column]] if column in self.index else column


Staged = tuple[Any, ...]
"""One record as staged: ``(line, record_key, …)`` in the order of the kind's staging table."""


class RowParser:
    """Turns one row of fields into a staged record, or appends its problems."""

    def __init__(self, header: Header, plant: Plant, date_order: DateOrder | None = None) -> None:
        self.header = header
        self.plant = plant
        self.date_order = date_order
        self._get = {name: header.index.get(name) for name in (c.name for c in COLUMNS[header.kind])}
        self.parse: Callable[[int, list[str], list[Problem]], Staged | None] = {
            "maintenance": self._maintenance, "scrap": self._scrap, "equipment": self._equipment_row}[header.kind]
        if header.kind == "scrap":
            # the fields of the scrap columns in one call; a column the file lacks reads the "" appended
            self._width = len(header.names)
            self._scrap_fields = itemgetter(*(-1 if self._get[c.name] is None else self._get[c.name]
                                              for c in COLUMNS["scrap"]))
            self.parse = self._scrap_fast

    def _field(self, fields: list[str], column: str) -> str:
        i = self._get[column]
        return fields[i].strip() if i is not None and i < len(fields) else ""

    def _need(self, fields: list[str], column: str, line: int, problems: list[Problem]) -> str | None:
        value = self._field(fields, column)
        if not value:
            problems.append(Problem(line, self.header.label(column), "missing"))
            return None
        return value

    def _equipment(self, fields: list[str], line: int, problems: list[Problem]) -> tuple[str, int] | None:
        code = self._need(fields, "equipment", line, problems)
        if code is None:
            return None
        ident = self.plant.equipment.get(code)
        if ident is None:
            problems.append(Problem(line, self.header.label("equipment"), f"unknown equipment {code!r}"
                                    + self.plant.suggest(code, list(self.plant.equipment))))
            return None
        return code, ident

    def _time(self, fields: list[str], column: str, zone: ZoneInfo | None, line: int,
              problems: list[Problem]) -> datetime | None:
        text = self._need(fields, column, line, problems)
        if text is None or zone is None:
            return None
        try:
            return parse_time(text, zone, self.date_order)
        except ValueError as exc:
            problems.append(Problem(line, self.header.label(column), str(exc)))
            return None

    def _amount(self, fields: list[str], column: str, line: int, problems: list[Problem],
                limit: Decimal) -> Decimal | None:
        text = self._field(fields, column)
        if not text:
            return None
        try:
            value = parse_decimal(text)
        except ValueError as exc:
            problems.append(Problem(line, self.header.label(column), str(exc)))
            return None
        if value < 0:
            problems.append(Problem(line, self.header.label(column), f"must not be negative, got {text}"))
            return None
        if value >= limit:
            problems.append(Problem(line, self.header.label(column), f"{text} is too large (at most {limit - 1})"))
            return None
        return value.quantize(Decimal("0.01"))

    def _text(self, fields: list[str], column: str, line: int, problems: list[Problem],
              limit: int | None) -> str | None:
        value = self._field(fields, column)
        if limit is not None and len(value) > limit:
            problems.append(Problem(line, self.header.label(column), f"longer than {limit} characters"))
        return value or None

    def _maintenance(self, line: int, fields: list[str], problems: list[Problem]) -> Staged | None:
        before = len(problems)
        order = self._need(fields, "work_order", line, problems)
        if order is not None and len(order) > 50:
            problems.append(Problem(line, self.header.label("work_order"), "longer than 50 characters"))
        machine = self._equipment(fields, line, problems)
        zone = self.plant.equipment_zone[machine[0]] if machine else self.plant.default_zone
        kind_text = self._need(fields, "type", line, problems)
        kind = None
        if kind_text is not None:
            kind = MAINTENANCE_TYPES.get(normalise(kind_text))
            if kind is None:
                problems.append(Problem(line, self.header.label("type"), f"unknown maintenance type {kind_text!r}"
                                        + self.plant.suggest(kind_text.lower(), list(MAINTENANCE_TYPES))
                                        + " (preventive, corrective, predictive or calibration)"))
        start = self._time(fields, "start", zone, line, problems)
        end = self._time(fields, "end", zone, line, problems)
        if start is not None and end is not None and end < start:
            problems.append(Problem(line, self.header.label("end"),
                                    f"{self._field(fields, 'end')} is before the start "
                                    f"{self._field(fields, 'start')}"))
        hours = self._amount(fields, "labor_hours", line, problems, Decimal(10) ** 8)
        parts = self._amount(fields, "parts_cost", line, problems, Decimal(10) ** 10)
        labor = self._amount(fields, "labor_cost", line, problems, Decimal(10) ** 10)
        failure = self._field(fields, "failure_code") or None
        if failure is not None and failure not in self.plant.downtime_reasons:
            problems.append(Problem(line, self.header.label("failure_code"), f"unknown reason code {failure!r}"
                                    + self.plant.suggest(failure, list(self.plant.downtime_reasons))))
        technician = self._text(fields, "technician", line, problems, 100)
        description = self._text(fields, "description", line, problems, None)
        if len(problems) > before:
            return None
        assert machine is not None
        return (line, order, machine[1], order, kind, start, end, hours, parts, labor, failure, technician,
                description)

    def _scrap_fast(self, line: int, fields: list[str], problems: list[Problem]) -> Staged | None:
        """A scrap row the common way, a few microseconds: a complete row of known codes, a plain whole
        quantity and a cost like ``12,50``.  Anything else (and so every problem) goes the long way,
        :meth:`_scrap`, which says what is wrong exactly as it always did."""
        if len(fields) != self._width:
            return self._scrap(line, fields, problems)
        own_id, code, when, product, qty, reason, cost, comments = self._scrap_fields([*fields, ""])
        plant = self.plant
        code = code.strip()
        ident = plant.equipment.get(code)
        reason = reason.strip()
        qty = qty.strip()
        if ident is None or reason not in plant.scrap_reasons or not when or not qty.isdigit() \
                or not qty.isascii() or len(qty) > 9:
            return self._scrap(line, fields, problems)
        product = product.strip()
        product_id = None
        if product:
            product_id = plant.products.get(product)
            if product_id is None:
                return self._scrap(line, fields, problems)
        cost = cost.strip()
        amount = None
        if cost:
            match = _PLAIN_AMOUNT.fullmatch(cost)
            if match is None:
                return self._scrap(line, fields, problems)
            amount = Decimal(cost.replace(",", ".", 1))
            if match[2] is None or len(match[2]) != 2:
                amount = amount.quantize(_CENT)
        zone = plant.equipment_zone[code]
        fast = fast_local_time(when, zone)
        if fast is not None:
            at, iso = fast
        else:
            try:
                at = parse_time(when, zone, self.date_order)
            except ValueError:
                return self._scrap(line, fields, problems)
            iso = at.isoformat()
        own_id = own_id.strip()
        key = own_id or f"{code}|{iso}|{reason}"
        return (line, key, ident, at, product_id, int(qty), reason, amount, comments.strip() or None)

    def _scrap(self, line: int, fields: list[str], problems: list[Problem]) -> Staged | None:
        before = len(problems)
        own_id = self._field(fields, "scrap_id") or None
        machine = self._equipment(fields, line, problems)
        zone = self.plant.equipment_zone[machine[0]] if machine else self.plant.default_zone
        at = self._time(fields, "time", zone, line, problems)
        product = self._field(fields, "product") or None
        product_id = None
        if product is not None:
            product_id = self.plant.products.get(product)
            if product_id is None:
                problems.append(Problem(line, self.header.label("product"), f"unknown product {product!r}"
                                        + self.plant.suggest(product, list(self.plant.products))))
        quantity = None
        qty_text = self._need(fields, "quantity", line, problems)
        if qty_text is not None:
            try:
                quantity = parse_int(qty_text)
            except ValueError as exc:
                problems.append(Problem(line, self.header.label("quantity"), str(exc)))
            else:
                if quantity < 0:
                    problems.append(Problem(line, self.header.label("quantity"),
                                            f"must not be negative, got {qty_text}"))
                elif quantity >= 2 ** 31:
                    problems.append(Problem(line, self.header.label("quantity"), f"{qty_text} is too large"))
        reason = self._need(fields, "reason", line, problems)
        if reason is not None and reason not in self.plant.scrap_reasons:
            problems.append(Problem(line, self.header.label("reason"), f"unknown scrap reason {reason!r}"
                                    + self.plant.suggest(reason, list(self.plant.scrap_reasons))))
        cost = self._amount(fields, "cost", line, problems, Decimal(10) ** 10)
        comments = self._text(fields, "comments", line, problems, None)
        if len(problems) > before:
            return None
        assert machine is not None and at is not None
        key = own_id or f"{machine[0]}|{at.astimezone(UTC).isoformat()}|{reason}"
        return (line, key, machine[1], at, product_id, quantity, reason, cost, comments)

    def _equipment_row(self, line: int, fields: list[str], problems: list[Problem]) -> Staged | None:
        before = len(problems)
        legacy = self._need(fields, "legacy_id", line, problems)
        code = self._field(fields, "code") or legacy
        if code is not None and len(code) > 50:
            problems.append(Problem(line, self.header.label("code" if self._field(fields, "code") else "legacy_id"),
                                    "longer than 50 characters (give a code column)"))
        name = self._need(fields, "name", line, problems)
        if name is not None and len(name) > 200:
            problems.append(Problem(line, self.header.label("name"), "longer than 200 characters"))
        kind = self._text(fields, "type", line, problems, 50)
        location = self._need(fields, "location", line, problems)
        center = None
        if location is not None:
            center = self.plant.work_centers.get(location) or self.plant.work_centers.get(location.casefold())
            if center is None:
                problems.append(Problem(line, self.header.label("location"), f"unknown work center {location!r}"
                                        + self.plant.suggest(location, list(self.plant.work_centers))))
        manufacturer = self._text(fields, "manufacturer", line, problems, 100)
        model = self._text(fields, "model", line, problems, 100)
        serial = self._text(fields, "serial_number", line, problems, 100)
        criticality_text = self._field(fields, "criticality")
        criticality = None
        if criticality_text:
            criticality = CRITICALITY.get(criticality_text.lower())
            if criticality is None:
                problems.append(Problem(line, self.header.label("criticality"),
                                        f"{criticality_text!r} is not Critical, High, Medium or Low"))
        if len(problems) > before:
            return None
        return (line, code, legacy, name, kind, center, manufacturer, model, serial, criticality)
