"""The durable local spool: SQLite in WAL mode, one row per batch, in the order readings arrived.

The spool is where a reading becomes durable.  Each batch the spooler makes is stored as one row: a
monotonically increasing sequence number (SQLite ``AUTOINCREMENT``, never reused), the rows already encoded
in PostgreSQL's binary COPY format (so replaying a batch costs no Python work per reading), and, rarely, a
JSON list of readings that could not be encoded yet (equipment the database did not know when the batch
arrived) or can never be stored (each with its reason, for the dead-letter table).

Durability: ``batch`` commits every batch with ``synchronous=FULL`` (the WAL is fsynced before the commit
returns); ``interval`` commits with ``synchronous=NORMAL`` and fsyncs the WAL every ``fsync_interval``;
either way a batch's acknowledgment waits until the fsync that covers it.  A SQLite commit is atomic, so a
crash at any instant leaves whole batches or none.

The disk: the spool may grow only into the free space of its file system, less a reserve (:meth:`Spool.disk`,
:func:`reserve_for`), so that the writer's deletes and SQLite's checkpoints always have room.  A write that
still finds the disk full (something else filled it) raises :class:`DiskFull` for an append, so the spooler
waits as for a full spool; a delete that finds it full changes nothing and is repeated by the next one (the
batches are committed and below the watermark, so nothing reads them again).

Everything here is synchronous and runs on one dedicated thread (:class:`AsyncSpool` is the asyncio face).
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import json
import os
import sqlite3
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

Durability = Literal["batch", "interval"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batch (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    created_us INTEGER NOT NULL,          -- when the oldest reading of the batch was accepted
    epoch      INTEGER NOT NULL,          -- key_epoch the rows were encoded with
    row_count  INTEGER NOT NULL,          -- rows in `rows`
    rows       BLOB    NOT NULL,          -- binary COPY tuples (no header, no trailer)
    pending    TEXT                       -- JSON: readings not encoded (unknown equipment, refused), or NULL
);
CREATE TABLE IF NOT EXISTS key_epoch (
    epoch      INTEGER PRIMARY KEY,
    database   TEXT NOT NULL,             -- identity of the database the keys came from
    equipment  TEXT NOT NULL,             -- JSON {code: id}
    units      TEXT NOT NULL,             -- JSON {code: id}
    created_us INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Batch:
    seq: int
    created_us: int
    epoch: int
    row_count: int
    rows: bytes
    pending: list[list[Any]] | None

    @property
    def readings(self) -> int:
        return self.row_count + (len(self.pending) if self.pending else 0)


@dataclass(frozen=True)
class KeyEpoch:
    epoch: int
    database: str
    equipment: dict[str, int]
    units: dict[str, int]


class SpoolError(Exception):
    """The spool cannot be used (locked by another process, unreadable file)."""


class SpoolUnusable(SpoolError):
    """The spool directory or file cannot be used as configured: a configuration problem (exit code 2).  The
    message is one line, ``<path>: <problem>``."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def _os_problem(exc: OSError, what: str) -> str:
    if exc.errno == errno.EROFS:
        return f"{what} is on a read-only file system"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"no permission to write in {what} (running as uid {os.getuid()})"
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        return f"{what} is a file, not a directory"
    if exc.errno == errno.ENOSPC:
        return f"{what} is on a full file system"
    return f"{what}: {exc.strerror or exc}"


def _sqlite_problem(exc: sqlite3.Error) -> str:
    code = getattr(exc, "sqlite_errorcode", None)
    if code == sqlite3.SQLITE_NOTADB:
        return ("is not a SQLite database, so it is no spool; move it away (nothing in it can be read) and the "
                "daemon starts with an empty spool")
    if code == sqlite3.SQLITE_READONLY:
        return "the spool file is read-only"
    if code == sqlite3.SQLITE_FULL:
        return "the spool's file system is full"
    if code == sqlite3.SQLITE_CORRUPT:
        return "the spool file is damaged (SQLite reports it corrupt); move it away to start with an empty spool"
    return f"cannot use the spool file: {exc}"


class DiskFull(Exception):
    """The spool's file system had no room for a batch (SQLite's "database or disk is full")."""


def _is_full(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL


MiB = 2**20


WAL_SLACK_PAGES = 128
"""Pages a WAL may hold beyond its checkpoint threshold (the transaction that crosses it)."""


def checkpoint_pages_for(total: int, page_size: int) -> int:
    """SQLite's ``wal_autocheckpoint`` for a file system of ``total`` bytes: its default, 1000 pages (4 MiB),
    but at most 1/32 of the file system (at least 16 pages), so that the WAL of a small disk stays small."""
    return max(16, min(1000, total // page_size // 32))


def reserve_for(total: int, page_size: int = 4096, checkpoint_pages: int | None = None) -> int:
    """Free space the spool leaves on a file system of ``total`` bytes.  A nearly full disk must still let
    SQLite checkpoint (copying the WAL's new pages into the database file makes it grow) and let the writer
    delete batches (writing into the WAL, which must grow when a checkpoint could not finish): without room
    for both, every delete fails and the spool can never shrink.  So: two WALs' worth (checkpoint threshold plus
    slack), and 1/16 of the file system between 256 KiB and 64 MiB for everything else."""
    pages = checkpoint_pages if checkpoint_pages is not None else checkpoint_pages_for(total, page_size)
    return 2 * (pages + WAL_SLACK_PAGES) * page_size + min(64 * MiB, max(MiB // 4, total // 16))


@dataclass(frozen=True)
class DiskSpace:
    """The spool's file system: its size, its free space, the free pages inside the spool file (space a new
    batch reuses without growing the file), and the reserve the spool leaves free (:func:`reserve_for`)."""

    total: int
    free: int
    reusable: int
    reserve: int

    @property
    def room(self) -> int:
        """Bytes the spool may still write before it reaches the reserve (never negative)."""
        return max(0, self.free + self.reusable - self.reserve)

    def fits(self, size: int) -> bool:
        """Whether a batch of ``size`` bytes fits: written once into the WAL, and once more into the database
        file when the WAL is checkpointed."""
        return 2 * size <= self.room


_PENDING_COUNT = "coalesce(json_array_length(pending), 0)"
_SIZE = "length(rows) + coalesce(length(pending), 0)"
_TOTALS = f"count(*), coalesce(sum({_SIZE}), 0), coalesce(sum(row_count + {_PENDING_COUNT}), 0)"
"""Batches, bytes and readings of a set of batches."""


class Spool:
    """The SQLite spool file.  Not thread-safe: use it from one thread."""

    FILE_NAME = "spool.sqlite3"

    def __init__(self, directory: Path, instance_id: str, durability: Durability = "batch") -> None:
        self.directory = Path(directory)
        self.path = self.directory / self.FILE_NAME
        self.instance_id = instance_id
        self.durability = durability
        self._db: sqlite3.Connection | None = None
        self._lock: IO[str] | None = None
        self.spool_id = ""                          # random, made when the spool file is created
        self.bytes_used = 0
        self.batches = 0
        self.readings = 0
        self.oldest_created_us: int | None = None  # of the oldest unwritten batch, kept current for metrics
        self.page_size = 4096
        self.checkpoint_pages = 1000

    # --- lifecycle ---------------------------------------------------------------------------------------------

    def open(self) -> None:
        """Open (or create) the spool.  Raises :class:`SpoolUnusable` when the directory or the file cannot be
        used (read-only, not writable, not a directory, not a SQLite file), :class:`SpoolError` when another
        process holds it."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            if not self.directory.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(self.directory))
            self._lock = (self.directory / "spool.lock").open("a")
        except OSError as exc:
            raise SpoolUnusable(self.directory, _os_problem(exc, "the spool directory")) from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise SpoolError(f"the spool {self.directory} is in use by another process; every daemon needs a "
                             "spool_dir of its own") from None
        try:
            self._open_file()
        except sqlite3.Error as exc:
            self.close()
            raise SpoolUnusable(self.path, _sqlite_problem(exc)) from None
        except OSError as exc:
            self.close()
            raise SpoolUnusable(self.path, _os_problem(exc, "the spool file")) from None

    def _open_file(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db = db
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={'FULL' if self.durability == 'batch' else 'NORMAL'}")
        # Some builds (Debian's) default to secure_delete, which overwrites every deleted page through the WAL:
        # deleting a committed batch then writes as much as storing it did, and on a full disk the writer's
        # deletes fail, so the spool could never shrink.  Its batches are committed readings, nothing secret.
        db.execute("PRAGMA secure_delete=OFF")
        self.page_size = int(db.execute("PRAGMA page_size").fetchone()[0])
        stat = os.statvfs(self.directory)
        self.checkpoint_pages = checkpoint_pages_for(stat.f_blocks * stat.f_frsize, self.page_size)
        db.execute(f"PRAGMA wal_autocheckpoint={self.checkpoint_pages}")
        _rename_segment_table(db)
        db.executescript(_SCHEMA)
        count, size, rows = db.execute(f"SELECT {_TOTALS} FROM batch").fetchone()
        spool_id = self._meta("spool_id")
        if spool_id is None:
            spool_id = str(uuid.uuid4())
            self._set_meta("spool_id", spool_id)
        self.spool_id = spool_id
        if self._meta("instance_id") != self.instance_id:  # written only when it changes: a full disk still opens
            self._set_meta("instance_id", self.instance_id)
        self.batches, self.bytes_used, self.readings = count, size, rows
        self._refresh_oldest()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise SpoolError("the spool is not open")
        return self._db

    # --- batches ----------------------------------------------------------------------------------------------

    def append(self, rows: bytes, row_count: int, pending_text: str | None, pending_count: int, epoch: int,
               created_us: int) -> int:
        """Store one batch (``pending_text``: the JSON list of ``pending_count`` unencoded readings, or None);
        returns its sequence number.  Durable on return in ``batch`` mode.  Raises :class:`DiskFull` when the
        file system has no room (nothing is stored then)."""
        try:
            cursor = self.db.execute(
                "INSERT INTO batch (created_us, epoch, row_count, rows, pending) VALUES (?, ?, ?, ?, ?)",
                (created_us, epoch, row_count, rows, pending_text))
        except sqlite3.OperationalError as exc:
            if _is_full(exc):
                raise DiskFull(f"{self.path}: {exc}") from exc
            raise
        seq = cursor.lastrowid
        assert seq is not None
        self.batches += 1
        self.bytes_used += len(rows) + (len(pending_text) if pending_text else 0)
        self.readings += row_count + pending_count
        if self.oldest_created_us is None:
            self.oldest_created_us = created_us
        return seq

    def read(self, after_seq: int, max_rows: int, max_batches: int = 64) -> list[Batch]:
        """The oldest batches after ``after_seq``, up to about ``max_rows`` readings (at least one batch),
        so that the memory a read takes is bounded whatever the backlog."""
        found: list[Batch] = []
        total = 0
        for seq, created, epoch, row_count, pending_count, rows, pending in self.db.execute(
                f"SELECT seq, created_us, epoch, row_count, {_PENDING_COUNT}, rows, pending "
                "FROM batch WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, max_batches)):
            if found and total + row_count + pending_count > max_rows:
                break
            found.append(Batch(seq, created, epoch, row_count, rows, json.loads(pending) if pending else None))
            total += row_count + pending_count
        return found

    def delete_through(self, seq: int) -> int:
        """Forget every batch up to and including ``seq`` (they are committed to the database).  On a full disk
        nothing is deleted and 0 returned: the next call deletes them (they are below the watermark)."""
        count, size, rows = self.db.execute(f"SELECT {_TOTALS} FROM batch WHERE seq <= ?", (seq,)).fetchone()
        if count:
            if not self._delete("DELETE FROM batch WHERE seq <= ?", seq):
                return 0
            self.batches -= count
            self.bytes_used -= size
            self.readings -= rows
            self._refresh_oldest()
        return int(count)

    def drop_oldest(self, above_seq: int) -> tuple[int, int]:
        """Delete the oldest batch after ``above_seq`` (the writer's batches in flight are at or below it),
        for the ``drop_oldest`` policy of a full spool; returns (seq, readings), (0, 0) when there is none."""
        row = self.db.execute(
            f"SELECT seq, row_count + {_PENDING_COUNT}, {_SIZE} FROM batch WHERE seq > ? ORDER BY seq LIMIT 1",
            (above_seq,)).fetchone()
        if row is None:
            return 0, 0
        seq, readings, size = row
        if not self._delete("DELETE FROM batch WHERE seq = ?", seq):
            return 0, 0
        self.batches -= 1
        self.bytes_used -= size
        self.readings -= readings
        self._refresh_oldest()
        return seq, readings

    def _delete(self, sql: str, seq: int) -> bool:
        try:
            self.db.execute(sql, (seq,))
        except sqlite3.OperationalError as exc:
            if _is_full(exc):
                return False
            raise
        return True

    def disk(self) -> DiskSpace:
        """The spool's file system and the free pages inside the spool file, now."""
        stat = os.statvfs(self.directory)
        total = stat.f_blocks * stat.f_frsize
        (pages,) = self.db.execute("PRAGMA freelist_count").fetchone()
        return DiskSpace(total, stat.f_bavail * stat.f_frsize, int(pages) * self.page_size,
                         reserve_for(total, self.page_size, self.checkpoint_pages))

    def _refresh_oldest(self) -> None:
        row = self.db.execute("SELECT created_us FROM batch ORDER BY seq LIMIT 1").fetchone()
        self.oldest_created_us = None if row is None else int(row[0])

    def last_seq(self) -> int:
        """The highest sequence number ever handed out (0 for a new spool)."""
        row = self.db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'batch'").fetchone()
        return 0 if row is None else int(row[0])

    def raise_floor(self, seq: int) -> None:
        """Make sure future sequence numbers are above ``seq`` (the database's watermark for this instance):
        a spool that was deleted or replaced must never hand out numbers the database considers written."""
        if self.last_seq() < seq:
            with self.db:
                self.db.execute("DELETE FROM sqlite_sequence WHERE name = 'batch'")
                self.db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('batch', ?)", (seq,))

    def sync(self) -> None:
        """fsync the WAL (``interval`` durability): every commit made before the call is durable after it."""
        wal = self.path.with_name(self.path.name + "-wal")
        try:
            fd = os.open(wal, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # --- dimension keys ----------------------------------------------------------------------------------------

    def latest_epoch(self) -> KeyEpoch | None:
        row = self.db.execute(
            "SELECT epoch, database, equipment, units FROM key_epoch ORDER BY epoch DESC LIMIT 1").fetchone()
        return None if row is None else KeyEpoch(row[0], row[1], json.loads(row[2]), json.loads(row[3]))

    def epoch(self, epoch: int) -> KeyEpoch | None:
        row = self.db.execute(
            "SELECT epoch, database, equipment, units FROM key_epoch WHERE epoch = ?", (epoch,)).fetchone()
        return None if row is None else KeyEpoch(row[0], row[1], json.loads(row[2]), json.loads(row[3]))

    def record_epoch(self, database: str, equipment: dict[str, int], units: dict[str, int]) -> KeyEpoch:
        """Remember the keys of a dimension sync; returns the latest epoch if nothing changed."""
        latest = self.latest_epoch()
        if latest and (latest.database, latest.equipment, latest.units) == (database, equipment, units):
            return latest
        number = (latest.epoch if latest else 0) + 1
        with self.db:
            self.db.execute("INSERT INTO key_epoch VALUES (?, ?, ?, ?, ?)", (
                number, database, json.dumps(equipment, sort_keys=True), json.dumps(units, sort_keys=True),
                time.time_ns() // 1000))
            # epochs no batch uses any more are history
            self.db.execute("DELETE FROM key_epoch WHERE epoch < ? AND epoch NOT IN (SELECT epoch FROM batch)",
                            (number,))
        return KeyEpoch(number, database, equipment, units)

    def _meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        (key, value))


def _rename_segment_table(db: sqlite3.Connection) -> None:
    """Spools written before 0.2 keep their batches in a table named ``segment``; rename it in place (its
    sequence counter goes with it), so their unwritten readings are written after an upgrade."""
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "segment" in tables and "batch" not in tables:
        db.execute("ALTER TABLE segment RENAME TO batch")


class AsyncSpool:
    """Runs every spool operation on one dedicated thread, so SQLite never blocks the event loop."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool")

    async def call(self, function: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)

    async def open(self) -> None:
        await self.call(self.spool.open)

    async def close(self) -> None:
        await self.call(self.spool.close)
        self._thread.shutdown(wait=True)
