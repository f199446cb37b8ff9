"""Reading the values people really put in plant record files: numbers with a decimal comma or thousands
separators, and times as ISO 8601, German/Excel ``dd.mm.yyyy HH:MM``, slashed dates in a stated order, or
Excel serial numbers, in the site's local time unless they carry an offset.

Each parser raises ``ValueError`` with a message meant for the person who made the file.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo

DateOrder = Literal["dmy", "mdy"]

_DOTTED = re.compile(r"(\d{1,2})\.(\d{1,2})\.(\d{4})(?:[ T]+(\d{1,2}):(\d{2})(?::(\d{2}))?)?")
_DOTTED_CLOCK = re.compile(r"(\d{1,2})\.(\d{1,2})\.(\d{4})[ T]+(\d{1,2}):(\d{2})(?::(\d{2}))?")
_SLASHED = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})(?:[ T]+(\d{1,2}):(\d{2})(?::(\d{2}))?)?")
_SERIAL = re.compile(r"\d{1,7}(?:[.,]\d+)?")
_EXCEL_EPOCH = datetime(1899, 12, 30)  # Excel's day 0 (its 1900 leap-year bug makes day 60 the 29 February)
_THOUSANDS_ONLY = re.compile(r"-?\d{1,3}(?:[.,]\d{3})+")
_SPACES = str.maketrans("", "", " \u00a0\u202f'")  # thousands separators: space, no-break spaces, apostrophe


def parse_decimal(text: str) -> Decimal:
    """A decimal number: ``1234.5``, ``1234,5``, ``1.234,50``, ``1,234.50``, ``1 234,5``.  With both a dot and a
    comma the last one is the decimal separator; a lone comma is a decimal comma (so ``1,234`` is 1.234)."""
    s = text.strip().translate(_SPACES)
    if "," in s:
        if "." in s:
            if s.rfind(",") > s.rfind("."):
                s = s.replace(".", "").replace(",", ".")
            else:
                s = s.replace(",", "")
        elif s.count(",") == 1:
            s = s.replace(",", ".")
        else:
            s = s.replace(",", "")
    elif s.count(".") > 1:  # 1.234.567: dots as thousands separators
        s = s.replace(".", "")
    try:
        value = Decimal(s)
    except InvalidOperation:
        raise ValueError(f"{text.strip()!r} is not a number") from None
    if not value.is_finite():
        raise ValueError(f"{text.strip()!r} is not a number")
    return value


def parse_int(text: str) -> int:
    """A whole number, also written ``12,0`` or ``12.0``.  ``1.000`` and ``1,000`` are refused: in one file they
    mean a thousand, in another one."""
    if _THOUSANDS_ONLY.fullmatch(text.strip()):
        raise ValueError(f"{text.strip()!r} is ambiguous (a decimal point or a thousands separator?): "
                         "write it without the separator")
    value = parse_decimal(text)
    if value != value.to_integral_value():
        raise ValueError(f"{text.strip()!r} is not a whole number")
    return int(value)


def _clock(match: re.Match[str], first: int, second: int) -> datetime:
    groups = match.groups()
    year, hour, minute, sec = int(groups[2]), int(groups[3] or 0), int(groups[4] or 0), int(groups[5] or 0)
    return datetime(year, second, first, hour, minute, sec)


def parse_time(text: str, zone: ZoneInfo, date_order: DateOrder | None = None) -> datetime:
    """An instant, in UTC.  Without a UTC offset it is the local time of ``zone``; a local time that does not exist
    (the hour skipped when clocks go forward) is an error, one that exists twice (clocks going back) is the
    first of the two."""
    s = text.strip()
    match = _DOTTED_CLOCK.fullmatch(s)
    if match:  # the form most files use, the short way when the hour is a steady one
        day, month, year, hour, minute, second = match.groups()
        offset = _steady_offset(zone, int(year), int(month), int(day), int(hour))
        if offset is not None:
            try:
                return datetime(int(year), int(month), int(day), int(hour), int(minute), int(second or 0),
                                tzinfo=UTC) - offset
            except ValueError:
                pass  # a minute or second out of range: the long way says which
    if s[2:3] == "." or s[1:2] == ".":  # dd.mm.yyyy first: it is what many exports write, and no ISO form
        moment = _other_forms(s, date_order)
    else:
        try:
            moment = datetime.fromisoformat(s)
        except ValueError:
            moment = _other_forms(s, date_order)
    if moment.tzinfo is not None:
        return moment.astimezone(UTC)
    offset = _steady_offset(zone, moment.year, moment.month, moment.day, moment.hour)
    if offset is not None:
        return (moment - offset).replace(tzinfo=UTC)
    utc = moment.replace(tzinfo=zone).astimezone(UTC)
    if utc.astimezone(zone).replace(tzinfo=None) != moment:
        raise ValueError(f"{s!r} does not exist in {zone.key}: the clocks skip that hour")
    return utc


_HOUR_FORMS = re.compile(r"\d\d\.\d\d\.\d{4}[ T]\d\d|\d{4}-\d\d-\d\d[ T]\d\d")
_HOURS: dict[tuple[ZoneInfo, str], tuple[datetime, str] | None] = {}


def fast_local_time(text: str, zone: ZoneInfo) -> tuple[datetime, str] | None:
    """The short way for the commonest forms, a local ``dd.mm.yyyy HH:MM[:SS]`` or ``yyyy-mm-dd HH:MM[:SS]``
    with two-digit fields: the instant in UTC and its ``isoformat()``, or None for anything else (then
    :func:`parse_time`, whose result this is the same as).  Each local hour is worked out once (the UTC hour
    it starts at, when its offset is steady and a whole number of hours), and a row's time is that hour with
    the row's minute and second."""
    if len(text) == 19:
        if text[16] != ":":
            return None
        second = text[17:19]
    elif len(text) == 16:
        second = "00"
    else:
        return None
    minute = text[14:16]
    if text[13] != ":" or not (minute + second).isdigit() or not (minute + second).isascii():
        return None
    mm, ss = int(minute), int(second)
    if mm > 59 or ss > 59:
        return None
    key = (zone, text[:13])
    try:
        hour = _HOURS[key]
    except KeyError:
        if len(_HOURS) >= 1 << 16:
            _HOURS.clear()
        hour = _HOURS[key] = _utc_hour(text[:13], zone)
    if hour is None:
        return None
    start, iso = hour
    return start.replace(minute=mm, second=ss), f"{iso}{minute}:{second}+00:00"


def _utc_hour(prefix: str, zone: ZoneInfo) -> tuple[datetime, str] | None:
    if not _HOUR_FORMS.fullmatch(prefix):
        return None
    if prefix[2] == ".":
        day, month, year = int(prefix[0:2]), int(prefix[3:5]), int(prefix[6:10])
    else:
        year, month, day = int(prefix[0:4]), int(prefix[5:7]), int(prefix[8:10])
    offset = _steady_offset(zone, year, month, day, int(prefix[11:13]))
    if offset is None or offset % timedelta(hours=1):
        return None
    start = datetime(year, month, day, int(prefix[11:13]), tzinfo=UTC) - offset
    return start, start.isoformat()[:14]


@lru_cache(maxsize=1 << 16)
def _steady_offset(zone: ZoneInfo, year: int, month: int, day: int, hour: int) -> timedelta | None:
    """The UTC offset of ``zone`` all through this local hour, or None when the clocks change in it (or it
    does not exist, or exists twice): then the caller works the time out the long way.  A file's times fall
    in few hours compared to its rows, so this is computed once per hour and the rest is a subtraction."""
    try:
        start = datetime(year, month, day, hour)
    except ValueError:
        return None
    end = start + timedelta(minutes=59, seconds=59, microseconds=999_999)
    offsets = {moment.replace(tzinfo=zone, fold=fold).utcoffset() for moment in (start, end) for fold in (0, 1)}
    if len(offsets) != 1:
        return None
    offset = offsets.pop()
    if offset is None:
        return None
    # a steady hour also round-trips: its start and end are themselves in UTC and back
    for moment in (start, end):
        if (moment - offset).replace(tzinfo=UTC).astimezone(zone).replace(tzinfo=None) != moment:
            return None
    return offset


def _other_forms(s: str, date_order: DateOrder | None) -> datetime:
    try:
        match = _DOTTED.fullmatch(s)
        if match:
            return _clock(match, int(match.group(1)), int(match.group(2)))
        match = _SLASHED.fullmatch(s)
        if match:
            a, b = int(match.group(1)), int(match.group(2))
            if date_order is None:
                raise ValueError(f"{s!r} is ambiguous (day/month or month/day?): give --date-order dmy or mdy")
            return _clock(match, a, b) if date_order == "dmy" else _clock(match, b, a)
    except ValueError as exc:
        if "ambiguous" in str(exc):
            raise
        raise ValueError(f"{s!r} is not a valid date: {exc}") from None
    if _SERIAL.fullmatch(s):
        days = float(s.replace(",", "."))
        if 1 <= days < 2958466:  # Excel's range: 1900-01-01 to 9999-12-31
            return _EXCEL_EPOCH + timedelta(seconds=round(days * 86400))
    raise ValueError(f"{s!r} is not a date and time (write 2025-06-09 14:30, 09.06.2025 14:30, "
                     "2025-06-09T12:30:00Z or an Excel date number)")
