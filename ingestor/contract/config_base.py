"""Building blocks of every configuration model: strict models, durations, byte sizes.

Operators make typos, so every model refuses unknown keys.  Durations are written the way operators write
them ("500ms", "2s", "5m", "1h") and stored as seconds; sizes ("512MiB", "2GB") are pydantic's own
:class:`pydantic.ByteSize`, stored as bytes.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict
from pydantic import ByteSize as ByteSize  # re-exported: "64KiB", "512MiB", "2GB" or a number of bytes

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w|y)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0,
                   "y": 365 * 86400.0, None: 1.0}  # y: 365 days, for retention ages ("2y")


class StrictModel(BaseModel):
    """Base of every configuration model: unknown keys are errors, values are not coerced loosely."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


def _parse_duration(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 500ms, 2s, 5m or 1h")
    seconds: float | None = None
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds is None:
        raise ValueError(f"expected a duration such as 500ms, 2s, 5m or 1h, got {value!r}")
    if not math.isfinite(seconds):  # .inf passed every bound and then stalled the pipeline silently
        raise ValueError(f"a duration must be finite, got {value!r}")
    return seconds


Duration = Annotated[float, BeforeValidator(_parse_duration)]
"""Seconds; written in YAML as a number of seconds or as "250ms", "2s", "5m", "1h", "1d", "2w", "2y" (365 d)."""


# --- messages of the whole-file checks (duplicate codes, unknown codes), shared by every section -------------

def format_loc(loc: Iterable[str | int]) -> str:
    """``("connectors", 0, "tags", 2, "unit")`` → ``connectors[0].tags[2].unit``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def duplicates(items: Iterable[tuple[tuple[str | int, ...], str]], what: str
               ) -> list[tuple[tuple[str | int, ...], str]]:
    """A problem for every code seen before, naming where it was first defined."""
    first: dict[str, tuple[str | int, ...]] = {}
    found = []
    for loc, code in items:
        if code in first:
            found.append((loc, f"duplicate {what} {code!r} (first defined at {format_loc(first[code])})"))
        else:
            first[code] = loc
    return found


def unknown(what: str, code: str, known: Iterable[str]) -> str:
    """``unknown equipment 'PRES-01' (did you mean 'PRESS-01'?)``, or the known codes when none is close."""
    names = sorted(known)
    close = difflib.get_close_matches(code, names, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else (
        f"; known: {', '.join(names[:12])}{', …' if len(names) > 12 else ''}" if names else "; none are defined")
    return f"unknown {what} {code!r}{hint}"
