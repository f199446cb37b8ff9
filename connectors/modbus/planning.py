"""Read coalescing: which Modbus requests read a device's tags, and how a rejected read is split.

Reading ten registers in one request costs about as much as reading one, so tags of one register type that sit
at the same, adjacent or nearby addresses are read together.  A merged read may span up to ``max_gap`` unused
registers (``max_gap_bits`` for coils and discrete inputs) between tags, and never more than the device's
``max_registers_per_request`` (``max_bits_per_request``).

Some devices refuse a merged read even within those limits: the span crosses addresses they do not map (Modbus
exception 2, illegal data address) or the request is larger than they handle (exception 3, illegal data
value).  :func:`split` cuts such a read in two at the tag boundary nearest its middle; the connector retries the
halves at once, splits again where needed, and keeps the smaller reads for the rest of the daemon's life, so
the device is asked the question it refused only once.  A read of a single tag is never split: its exception
belongs to that tag.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class TagSpan:
    """Where one tag sits: its register type (``table``), first address and number of registers or bits."""

    tag: int          # the tag's index in its device
    table: str
    address: int
    count: int

    @property
    def end(self) -> int:
        return self.address + self.count


@dataclass(frozen=True)
class ReadRequest:
    """One Modbus read: ``count`` registers (or bits) of ``table`` from ``address``, and the tags it serves."""

    table: str
    address: int
    count: int
    tags: tuple[TagSpan, ...]

    @classmethod
    def covering(cls, spans: Sequence[TagSpan]) -> ReadRequest:
        start = min(s.address for s in spans)
        end = max(s.end for s in spans)
        return cls(spans[0].table, start, end - start, tuple(spans))

    def __str__(self) -> str:
        return f"{self.table} {self.address}+{self.count}"


def plan_reads(spans: Iterable[TagSpan], *, max_registers: int, max_bits: int, max_gap: int,
               max_gap_bits: int, bit_tables: Sequence[str] = ("coil", "discrete_input")) -> list[ReadRequest]:
    """Merge tag spans into as few reads as the limits allow; reads come out ordered by table and address."""
    by_table: dict[str, list[TagSpan]] = {}
    for span in spans:
        by_table.setdefault(span.table, []).append(span)
    requests: list[ReadRequest] = []
    for table in sorted(by_table):
        bits = table in bit_tables
        limit, gap = (max_bits, max_gap_bits) if bits else (max_registers, max_gap)
        ordered = sorted(by_table[table], key=lambda s: (s.address, -s.count, s.tag))
        current: list[TagSpan] = []
        start = end = 0
        for span in ordered:
            if current and span.address - end <= gap and max(end, span.end) - start <= limit:
                current.append(span)
                end = max(end, span.end)
                continue
            if current:
                requests.append(ReadRequest.covering(current))
            current, start, end = [span], span.address, span.end
        if current:
            requests.append(ReadRequest.covering(current))
    return requests


def split(request: ReadRequest) -> tuple[ReadRequest, ReadRequest] | None:
    """Two smaller reads that together serve the request's tags; None for a read of a single tag."""
    if len(request.tags) < 2:
        return None
    ordered = sorted(request.tags, key=lambda s: (s.address, s.tag))
    middle = request.address + request.count / 2
    cut = next((i for i, s in enumerate(ordered) if s.address >= middle), len(ordered) - 1)
    cut = min(max(cut, 1), len(ordered) - 1)
    return ReadRequest.covering(ordered[:cut]), ReadRequest.covering(ordered[cut:])
