"""Turning Modbus registers into numbers: data types, byte and word order, bits, strings, scale and offset.

A Modbus register is 16 bits, sent high byte first.  Anything wider than one register is spread over
consecutive registers, and devices disagree on the order.  The four orders are named by where the bytes of the
32-bit big-endian value ``A B C D`` end up in two registers read in address order:

=======  ======================  ====================================  ==========================
order    registers (addr, +1)    what it is                            devices that use it
=======  ======================  ====================================  ==========================
ABCD     ``AB`` ``CD``           big-endian, high word first           the Modbus convention
CDAB     ``CD`` ``AB``           word-swapped: low word first          Modicon/Schneider, many PLCs
BADC     ``BA`` ``DC``           byte-swapped within each register     some meters, gateways
DCBA     ``DC`` ``BA``           little-endian throughout              x86-based controllers
=======  ======================  ====================================  ==========================

The same two switches apply to every width: *word swap* reverses the order of the registers (for 64-bit
values, all four), *byte swap* exchanges the two bytes inside each register.  For 16-bit values and for bits
within a register only the byte swap matters (CDAB reads like ABCD, DCBA like BADC).  Strings are read in
address order; only the byte swap applies (a word-swapped string is not a thing devices do).

Everything here is plain :mod:`struct`: the decoder for a tag is built once, at startup, as one closure, so a
poll does one ``pack`` and one ``unpack`` per tag.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import Literal

Registers = Sequence[int]


class ByteOrder(StrEnum):
    ABCD = "ABCD"
    CDAB = "CDAB"
    BADC = "BADC"
    DCBA = "DCBA"

    @property
    def word_swap(self) -> bool:
        return self in (ByteOrder.CDAB, ByteOrder.DCBA)

    @property
    def byte_swap(self) -> bool:
        return self in (ByteOrder.BADC, ByteOrder.DCBA)


DataType = Literal["int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string", "bit"]

NUMERIC_FORMATS: dict[str, tuple[str, int]] = {
    # data type: (struct format of the big-endian value, registers)
    "int16": ("h", 1), "uint16": ("H", 1),
    "int32": ("i", 2), "uint32": ("I", 2),
    "int64": ("q", 4), "uint64": ("Q", 4),
    "float32": ("f", 2), "float64": ("d", 4),
}
DATA_TYPES: tuple[str, ...] = (*NUMERIC_FORMATS, "string", "bit")


def register_count(data_type: str, length: int | None = None) -> int:
    """How many registers a value of this type occupies (``length`` for strings)."""
    if data_type == "string":
        if not length:
            raise ValueError("a string needs a length in registers")
        return length
    if data_type == "bit":
        return 1
    return NUMERIC_FORMATS[data_type][1]


class DecodeError(ValueError):
    """The registers hold something that is not a usable value; ``reason`` is a short metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _packer(count: int, order: ByteOrder | str) -> Callable[[Registers, int], bytes]:
    """A function giving the value's bytes in big-endian order from ``count`` registers at an offset."""
    order = ByteOrder(order)
    pack = struct.Struct(("<" if order.byte_swap else ">") + "H" * count).pack
    if order.word_swap and count > 1:
        def packed_swapped(registers: Registers, at: int) -> bytes:
            return pack(*reversed(registers[at:at + count]))
        return packed_swapped

    def packed(registers: Registers, at: int) -> bytes:
        return pack(*registers[at:at + count])
    return packed


def number_decoder(data_type: str, order: ByteOrder | str) -> Callable[[Registers, int], float]:
    """Decoder of a numeric type: ``decode(registers, offset)`` → the raw number as a float.

    Non-finite floats (NaN, ±inf: a PLC's "no value" or a sensor fault) raise :class:`DecodeError`.
    """
    fmt, count = NUMERIC_FORMATS[data_type]
    if count == 1:  # one register: plain arithmetic is several times cheaper than pack + unpack
        return _word_decoder(signed=fmt == "h", byte_swap=ByteOrder(order).byte_swap)
    to_bytes = _packer(count, order)
    unpack = struct.Struct(">" + fmt).unpack
    if data_type.startswith("float"):
        isfinite = math.isfinite

        def decode_float(registers: Registers, at: int) -> float:
            value: float = unpack(to_bytes(registers, at))[0]
            if not isfinite(value):
                raise DecodeError("not_finite", f"{data_type} is {value}")
            return value
        return decode_float

    def decode_integer(registers: Registers, at: int) -> float:
        return float(unpack(to_bytes(registers, at))[0])
    return decode_integer


def _word_decoder(*, signed: bool, byte_swap: bool) -> Callable[[Registers, int], float]:
    if byte_swap:
        def decode_swapped(registers: Registers, at: int) -> float:
            word = registers[at]
            word = (word & 0xFF) << 8 | word >> 8
            return float(word - 0x10000 if signed and word & 0x8000 else word)
        return decode_swapped
    if signed:
        def decode_int16(registers: Registers, at: int) -> float:
            word = registers[at]
            return float(word - 0x10000 if word & 0x8000 else word)
        return decode_int16

    def decode_uint16(registers: Registers, at: int) -> float:
        return float(registers[at])
    return decode_uint16


def bit_decoder(bit: int, order: ByteOrder | str) -> Callable[[Registers, int], float]:
    """Decoder of one bit of a register (bit 0 is the least significant bit of the 16-bit value)."""
    if ByteOrder(order).byte_swap:  # the register's bytes are exchanged: bit 0 of the value sits in bit 8 on the wire
        bit = (bit + 8) % 16
    mask = 1 << bit

    def decode_bit(registers: Registers, at: int) -> float:
        return 1.0 if registers[at] & mask else 0.0
    return decode_bit


def text_decoder(length: int, order: ByteOrder | str, encoding: str = "utf-8") -> Callable[[Registers, int], str]:
    """Decoder of a string of ``length`` registers: two characters per register, padding (NUL, spaces)
    stripped.  Raises :class:`DecodeError` when the bytes are not valid text."""
    pack = struct.Struct(("<" if ByteOrder(order).byte_swap else ">") + "H" * length).pack

    def decode_text(registers: Registers, at: int) -> str:
        raw = pack(*registers[at:at + length])
        try:
            return raw.split(b"\x00", 1)[0].decode(encoding).strip()
        except UnicodeDecodeError as exc:
            raise DecodeError("undecodable_text", f"not {encoding} text: {raw!r}") from exc
    return decode_text


def text_to_number(text: str, values: dict[str, float] | None) -> float:
    """A string tag's value: looked up in ``values`` when the tag has a map, otherwise parsed as a number."""
    if values is not None:
        try:
            return values[text]
        except KeyError:
            raise DecodeError("unmapped_text", f"text {text!r} is not in the tag's values map") from None
    try:
        number = float(text)
    except ValueError:
        raise DecodeError("not_a_number", f"text {text!r} is not a number (give the tag a values map)") from None
    if not math.isfinite(number):
        raise DecodeError("not_finite", f"text {text!r} is not a finite number")
    return number
