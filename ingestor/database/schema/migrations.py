"""Migration files: ``ingestor/database/schema/migrations/NNNN_name.sql``, read from the installed package.

A file is plain SQL cut into sections by marker lines::

    -- @tier: all
    CREATE TABLE ...;
    -- @tier: timescaledb | hypertable: {edition} has no hypertables; fact_sensor_event is an ordinary table
    SELECT create_hypertable(...);
    -- @tier: not-full
    CREATE UNIQUE INDEX ...;

Text before the first marker belongs to every tier.  ``<tiers>`` is a comma-separated list of ``all``,
``postgres``, ``apache``, ``full``, ``timescaledb`` (apache and full) and ``not-full`` (postgres and apache).
When the section names an object (``| object: reason``) and the database's tier does not run it, the object
and its reason (``{edition}`` replaced by the database's edition) are recorded as skipped.  A section without
an object is an alternative (another tier has its own version), so skipping it records nothing.

The version is the four-digit prefix; the checksum (SHA-256 of the file's bytes) is recorded when a file is
applied, so a file edited after the fact shows up in ``ingestor schema status``.  A later migration is just
the next file, e.g. ``0002_pipeline.sql``; it needs no marker when it is the same on every tier.

A file that was deliberately rewritten names the checksums of its earlier texts with ``-- @supersedes: <sha256>``
lines: a database that applied one of those is not reported as holding an edited migration (the rewrite must
reach the same schema together with the migrations after it).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

from ingestor.database.schema.errors import SchemaError
from ingestor.database.schema.tiers import Tier

_FILE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")
_MARKER = re.compile(r"^--\s*@tier:\s*(?P<spec>.*?)\s*$")
_SUPERSEDES = re.compile(r"^--\s*@supersedes:\s*(?P<checksum>[0-9a-f]{64})\s*$")

TIER_SETS: dict[str, frozenset[Tier]] = {
    "all": frozenset(Tier),
    "postgres": frozenset({Tier.POSTGRES}),
    "apache": frozenset({Tier.TIMESCALEDB_APACHE}),
    "full": frozenset({Tier.TIMESCALEDB_FULL}),
    "timescaledb": frozenset({Tier.TIMESCALEDB_APACHE, Tier.TIMESCALEDB_FULL}),
    "not-full": frozenset({Tier.POSTGRES, Tier.TIMESCALEDB_APACHE}),
}


@dataclass(frozen=True)
class Skipped:
    """Something the schema does not have on this database's tier, and why."""

    object: str
    reason: str


@dataclass(frozen=True)
class Section:
    """A run of statements for a set of tiers; ``line`` is the 1-based line of its first line."""

    tiers: frozenset[Tier]
    sql: str
    line: int
    object: str | None = None
    reason: str | None = None

    @property
    def empty(self) -> bool:
        """True when the section holds only comments and blank lines."""
        return all(not ln.strip() or ln.lstrip().startswith("--") for ln in self.sql.splitlines())


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    description: str
    checksum: str
    sections: tuple[Section, ...]
    superseded: frozenset[str] = frozenset()
    """Checksums of earlier texts of this file that reach the same schema (``-- @supersedes:`` lines)."""

    def matches(self, checksum: str) -> bool:
        """True when ``checksum`` (recorded in a database's ledger) is this text's or one it supersedes."""
        return checksum == self.checksum or checksum in self.superseded

    @property
    def filename(self) -> str:
        return f"{self.version}_{self.name}.sql"

    def plan(self, tier: Tier, edition: str) -> tuple[list[Section], list[Skipped]]:
        """The sections to run on ``tier``, and the objects skipped there (with reasons)."""
        run: list[Section] = []
        skipped: list[Skipped] = []
        for section in self.sections:
            if tier in section.tiers:
                if not section.empty:
                    run.append(section)
            elif section.object is not None and section.reason is not None:
                skipped.append(Skipped(section.object, section.reason.format(edition=edition)))
        return run, skipped


def parse(filename: str, text: str) -> Migration:
    """A migration from its file name and text; malformed markers are errors naming file and line."""
    match = _FILE.match(filename)
    if match is None:
        raise SchemaError(f"migration file {filename!r} is not named NNNN_name.sql")
    sections: list[Section] = []
    tiers, obj, reason, start, lines = TIER_SETS["all"], None, None, 1, []
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        marker = _MARKER.match(line.rstrip("\n"))
        if marker is None:
            lines.append(line)
            continue
        sections.append(Section(tiers, "".join(lines), start, obj, reason))
        tiers, obj, reason = _parse_marker(filename, number, marker.group("spec"))
        start, lines = number, [line]
    sections.append(Section(tiers, "".join(lines), start, obj, reason))
    return Migration(
        version=match["version"], name=match["name"], description=_description(text) or match["name"],
        checksum=hashlib.sha256(text.encode()).hexdigest(),
        sections=tuple(s for s in sections if s.sql.strip()),
        superseded=frozenset(m["checksum"] for line in text.splitlines() if (m := _SUPERSEDES.match(line))))


def _description(text: str) -> str:
    """The file's opening comment paragraph, as one line."""
    words: list[str] = []
    for line in text.splitlines():
        if not line.startswith("--") or _MARKER.match(line) or not line[2:].strip():
            break
        words.append(line[2:].strip())
    return " ".join(words)


def _parse_marker(filename: str, line: int, spec: str) -> tuple[frozenset[Tier], str | None, str | None]:
    tier_part, _, skip_part = spec.partition("|")
    tiers: set[Tier] = set()
    for token in (t.strip() for t in tier_part.split(",")):
        if token not in TIER_SETS:
            raise SchemaError(
                f"{filename}:{line}: unknown tier {token!r} in @tier marker (known: {', '.join(TIER_SETS)})")
        tiers |= TIER_SETS[token]
    if not skip_part.strip():
        return frozenset(tiers), None, None
    obj, colon, reason = skip_part.partition(":")
    if not colon or not obj.strip() or not reason.strip():
        raise SchemaError(f"{filename}:{line}: expected '| <object>: <reason>' after the tiers")
    return frozenset(tiers), obj.strip(), reason.strip()


@cache
def load_migrations() -> tuple[Migration, ...]:
    """Every migration shipped in the package, in version order."""
    folder = resources.files("ingestor.database.schema").joinpath("migrations")
    found: list[Migration] = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append(parse(entry.name, entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    duplicates = sorted({v for v in versions if versions.count(v) > 1})
    if duplicates:
        raise SchemaError(f"two migration files share version {', '.join(duplicates)}")
    if not found:
        raise SchemaError("no migration files found in ingestor/database/schema/migrations (broken installation?)")
    return tuple(found)
