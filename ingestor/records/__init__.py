"""Plant records from outside the machines: maintenance work orders (a CMMS export), scrap records (a quality
station, an MES) and equipment from legacy systems, imported from files or posted to the API, checked row by
row, written by natural key with an audit trail, and undone by batch.  docs/records.md describes the columns,
the formats and the rules.

- :mod:`~ingestor.records.source`: reading files (encodings, delimiters, JSON lines)
- :mod:`~ingestor.records.values`: numbers and times as people write them
- :mod:`~ingestor.records.kinds`: the three kinds, their columns, checking one row
- :mod:`~ingestor.records.store`: staging, merging, auditing and undoing in the database
- :mod:`~ingestor.records.importer`: one import, start to end
"""

from ingestor.records.importer import ImportResult, import_rows
from ingestor.records.kinds import COLUMNS, KINDS, Kind, Problem
from ingestor.records.source import RecordFile, SourceError
from ingestor.records.store import MaintenanceLinks, Undone, UndoRefused, maintenance_links, undo_batch

__all__ = [
    "COLUMNS",
    "KINDS",
    "ImportResult",
    "Kind",
    "MaintenanceLinks",
    "Problem",
    "RecordFile",
    "SourceError",
    "UndoRefused",
    "Undone",
    "import_rows",
    "maintenance_links",
    "undo_batch",
]
