"""The analytics query patterns of the schema specification, fixed and shipped as SQL files, and the queries of
the REST API (``api_*.sql``, run by :mod:`ingestor.database.analytics`).

Each ``<name>.sql`` takes its time (a reference instant, or a window ``$1 from, $2 to``) as parameters instead
of ``now()``/``CURRENT_DATE``, so that a dashboard passes ``now()`` and a test passes a fixed instant; the header
comment of each file documents its parameters and output.  Use :func:`load` to read one and run it with
asyncpg's ``fetch(sql, *parameters)``.
"""

from __future__ import annotations

from functools import cache
from importlib import resources


def names() -> list[str]:
    """The names of the shipped queries (file names without ``.sql``), sorted."""
    folder = resources.files(__name__)
    return sorted(entry.name[:-4] for entry in folder.iterdir() if entry.name.endswith(".sql"))


@cache
def load(name: str) -> str:
    """The SQL text of query ``name``; a ``KeyError`` names the known queries when there is no such query."""
    if name not in names():
        raise KeyError(f"no query named {name!r}; known: {', '.join(names())}")
    return resources.files(__name__).joinpath(f"{name}.sql").read_text(encoding="utf-8")
