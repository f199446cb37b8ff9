"""Reading a record file as it arrives: CSV (any of ``,`` ``;`` tab ``|`` as delimiter) or JSON lines, in UTF-8
with or without a byte-order mark, UTF-16 with one, or a single-byte Windows encoding (Latin-1, or
Windows-1252 when the file has its extra characters such as €).  Rows are streamed with their line number, so
a file of millions of rows is read in bounded memory.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_DELIMITERS = (";", ",", "\t", "|")
_C1 = re.compile(rb"[\x80-\x9f]")  # bytes that are printable characters in Windows-1252 only
_CHUNK = 1 << 20


class SourceError(Exception):
    """The file cannot be read as records at all (not a problem of one row)."""


@dataclass(frozen=True)
class Encoding:
    codec: str
    """Python's codec name."""
    label: str
    """What to tell the user: ``UTF-8``, ``UTF-8 with BOM``, ``Latin-1 (not UTF-8)``, …"""


def detect_encoding(path: Path) -> Encoding:
    """The file's encoding: a byte-order mark says it; else UTF-8 when every byte sequence is valid UTF-8; else
    Windows-1252 when it has bytes 0x80-0x9F (€, „, …, the quotes Excel writes), else Latin-1."""
    with path.open("rb") as file:
        head = file.read(4)
        if head.startswith(codecs.BOM_UTF8):
            return Encoding("utf-8-sig", "UTF-8 with BOM")
        if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return Encoding("utf-16", "UTF-16")
        file.seek(0)
        decoder = codecs.getincrementaldecoder("utf-8")()
        valid, c1 = True, False
        for chunk in iter(lambda: file.read(_CHUNK), b""):
            if valid:
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError:
                    valid = False
            if not valid and not c1 and _C1.search(chunk):
                c1 = True
                break
        if valid:
            try:
                decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                valid = False
    if valid:
        return Encoding("utf-8", "UTF-8")
    if c1:
        return Encoding("cp1252", "Windows-1252 (not UTF-8)")
    return Encoding("latin-1", "Latin-1 (not UTF-8)")


def named_encoding(name: str) -> Encoding:
    """An encoding the user named (``--encoding``)."""
    try:
        codec = codecs.lookup(name).name
    except LookupError:
        raise SourceError(f"unknown encoding {name!r}") from None
    return Encoding("utf-8-sig" if codec == "utf-8" else codec, f"{name} (as given)")


class RecordFile:
    """A record file opened for reading: its header (column names as written) and its rows."""

    def __init__(self, path: Path, *, encoding: Encoding | None = None, delimiter: str | None = None) -> None:
        self.path = path
        if not path.is_file():
            raise SourceError(f"{path}: no such file")
        self.encoding = encoding or detect_encoding(path)
        self.json_lines = path.suffix.lower() in (".jsonl", ".ndjson", ".json")
        self.delimiter = delimiter or ("" if self.json_lines else self._sniff())
        self.header = self._header()

    def _open(self) -> io.TextIOWrapper:
        return self.path.open(encoding=self.encoding.codec, newline="", errors="strict")

    def _sniff(self) -> str:
        with self._open() as file:
            first = file.readline()
        counts = {d: first.count(d) for d in _DELIMITERS}
        best = max(_DELIMITERS, key=lambda d: counts[d])
        return best if counts[best] else ","

    def _header(self) -> list[str]:
        for _, fields in self._raw():
            return fields
        raise SourceError(f"{self.path}: the file is empty")

    def _raw(self) -> Iterator[tuple[int, list[str]]]:
        """(line, fields) of every non-blank row, the header first; for JSON lines the header is the first
        object's keys."""
        with self._open() as file:
            if self.json_lines:
                yield from self._json(file)
                return
            reader = csv.reader(file, delimiter=self.delimiter)
            last = 0
            try:
                for fields in reader:
                    line, last = last + 1, reader.line_num
                    if fields and (fields[0].strip() or any(f.strip() for f in fields)):
                        yield line, fields
            except csv.Error as exc:
                raise SourceError(f"{self.path}:{reader.line_num}: not CSV: {exc}") from None
            except UnicodeDecodeError as exc:
                raise SourceError(f"{self.path}: not {self.encoding.label}: {exc.reason}") from None

    def _json(self, file: io.TextIOWrapper) -> Iterator[tuple[int, list[str]]]:
        keys: list[str] | None = None
        for line, text in enumerate(file, start=1):
            if not text.strip():
                continue
            try:
                item = json.loads(text)
            except json.JSONDecodeError as exc:
                raise SourceError(f"{self.path}:{line}: not a JSON object: {exc.msg}") from None
            if not isinstance(item, dict):
                raise SourceError(f"{self.path}:{line}: not a JSON object")
            if keys is None:
                keys = list(item)
                yield 0, keys
            yield line, [_text(item.get(k)) for k in keys]

    def rows(self) -> Iterator[tuple[int, list[str]]]:
        """(line, fields) of every data row (the header left out)."""
        rows = self._raw()
        next(rows, None)
        yield from rows


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
