"""The golden decoding table: every data type in every byte/word order, written into the real Modbus
simulator's registers by this test (encoded here with ``struct``, independently of the connector and of the
simulator's own encoder) and read back through the connector over each transport: Modbus TCP, RTU on a
pseudo-terminal, RTU over TCP.

The byte layouts are spelled out below as permutations of the big-endian value's bytes, and a few are pinned
to hand-checked register words (``HAND_CHECKED``), so that a mistake shared by the test and the code would
still show.
"""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from connectors.modbus import ModbusConfig
from connectors.modbus.connector import ModbusConnector
from connectors.modbus.decoding import DecodeError, bit_decoder, number_decoder, text_decoder
from simulators.modbus import TRANSPORTS, ModbusSimulator

from .harness_modbus import link_settings
from .helpers import build_connector, free_port
from .test_conformance import Collector

SCRATCH = 200
ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")

# Where each byte of the big-endian value goes on the wire (register after register, high byte first).
WIRE_ORDER = {
    2: {"ABCD": [0, 1], "CDAB": [0, 1], "BADC": [1, 0], "DCBA": [1, 0]},
    4: {"ABCD": [0, 1, 2, 3], "CDAB": [2, 3, 0, 1], "BADC": [1, 0, 3, 2], "DCBA": [3, 2, 1, 0]},
    8: {"ABCD": [0, 1, 2, 3, 4, 5, 6, 7], "CDAB": [6, 7, 4, 5, 2, 3, 0, 1],
        "BADC": [1, 0, 3, 2, 5, 4, 7, 6], "DCBA": [7, 6, 5, 4, 3, 2, 1, 0]},
}

VALUES: dict[str, tuple[str, float]] = {
    # data type: (struct format, a value that uses every byte)
    "int16": ("h", -12345),
    "uint16": ("H", 54321),
    "int32": ("i", -1234567890),
    "uint32": ("I", 3456789012),
    "int64": ("q", -1234567890123456789),
    "uint64": ("Q", 12345678901234567890),
    "float32": ("f", 3.1415927),
    "float64": ("d", -2.718281828459045),
}

HAND_CHECKED = {
    # 3.1415927 as float32 is 0x40490FDB
    ("float32", "ABCD"): [0x4049, 0x0FDB],
    ("float32", "CDAB"): [0x0FDB, 0x4049],
    ("float32", "BADC"): [0x4940, 0xDB0F],
    ("float32", "DCBA"): [0xDB0F, 0x4940],
    # 3456789012 is 0xCE0A6A14
    ("uint32", "ABCD"): [0xCE0A, 0x6A14],
    ("uint32", "CDAB"): [0x6A14, 0xCE0A],
    # -2.718281828459045 as float64 is 0xC005BF0A8B145769
    ("float64", "CDAB"): [0x5769, 0x8B14, 0xBF0A, 0xC005],
    ("float64", "DCBA"): [0x6957, 0x148B, 0x0ABF, 0x05C0],
    # -12345 as int16 is 0xCFC7
    ("int16", "ABCD"): [0xCFC7],
    ("int16", "BADC"): [0xC7CF],
}


def wire_registers(value_bytes: bytes, order: str) -> list[int]:
    """The registers a device in ``order`` holds for a big-endian byte string."""
    wire = bytes(value_bytes[i] for i in WIRE_ORDER[len(value_bytes)][order])
    return [wire[i] << 8 | wire[i + 1] for i in range(0, len(wire), 2)]


def encode(data_type: str, value: float, order: str) -> list[int]:
    fmt, _ = VALUES[data_type]
    return wire_registers(struct.pack(">" + fmt, value), order)


def expected(data_type: str, value: float) -> float:
    fmt, _ = VALUES[data_type]
    return float(struct.unpack(">" + fmt, struct.pack(">" + fmt, value))[0])   # float32 rounds


def encode_text(text: str, registers: int, order: str) -> list[int]:
    raw = text.encode().ljust(2 * registers, b"\x00")
    if order in ("BADC", "DCBA"):      # strings: only the bytes inside each register swap
        raw = b"".join(raw[i + 1:i + 2] + raw[i:i + 1] for i in range(0, len(raw), 2))
    return [raw[i] << 8 | raw[i + 1] for i in range(0, len(raw), 2)]


def test_the_byte_layouts_match_the_hand_checked_words() -> None:
    for (data_type, order), words in HAND_CHECKED.items():
        assert encode(data_type, VALUES[data_type][1], order) == words, (data_type, order)


def test_decoders_read_the_hand_checked_words_without_a_server() -> None:
    for (data_type, order), words in HAND_CHECKED.items():
        decode = number_decoder(data_type, order)
        assert decode(words, 0) == expected(data_type, VALUES[data_type][1]), (data_type, order)
    assert text_decoder(2, "BADC")(encode_text("AB", 2, "BADC"), 0) == "AB"
    assert bit_decoder(0, "BADC")([0x0100], 0) == 1.0


def test_non_finite_floats_and_bad_text_are_decode_errors() -> None:
    with pytest.raises(DecodeError) as nan:
        number_decoder("float32", "ABCD")(wire_registers(struct.pack(">f", math.nan), "ABCD"), 0)
    assert nan.value.reason == "not_finite"
    with pytest.raises(DecodeError) as text:
        text_decoder(1, "ABCD")([0xFFFE], 0)
    assert text.value.reason == "undecodable_text"


class Table:
    """Builds the tags and the register contents of the golden table, one address range per case."""

    def __init__(self) -> None:
        self.tags: list[dict[str, Any]] = []
        self.writes: list[tuple[str, int, list[int] | list[bool]]] = []
        self.expect: dict[str, float] = {}
        self.next = {"holding": 0, "input": 0}

    def add(self, table: str, name: str, registers: list[int], want: float, **tag: Any) -> None:
        address = self.next[table]
        self.next[table] += len(registers) + 1          # one unused register between cases
        self.writes.append((table, address, registers))
        self.tags.append({"equipment": "M1", "parameter": name, "register": table, "address": address, **tag})
        self.expect[name] = want


def golden_table() -> Table:
    table = Table()
    for register_table in ("holding", "input"):
        for order in ORDERS:
            for data_type, (_, value) in VALUES.items():
                table.add(register_table, f"{register_table}.{data_type}.{order}", encode(data_type, value, order),
                          expected(data_type, value), data_type=data_type, byte_order=order)
            # strings of N registers: a code looked up in the tag's map, and a number written as text
            table.add(register_table, f"{register_table}.string-map.{order}", encode_text("PRESS-01", 5, order), 7.0,
                      data_type="string", length=5, byte_order=order, values={"PRESS-01": 7, "PRESS-02": 8})
            table.add(register_table, f"{register_table}.string-number.{order}", encode_text("-42.5", 3, order),
                      -42.5, data_type="string", length=3, byte_order=order)
            # bits within a register: 0x8221 has bits 0, 5, 9 and 15 set
            word = encode("uint16", 0x8221, order)
            for bit in range(16):
                table.add(register_table, f"{register_table}.bit{bit}.{order}", word,
                          1.0 if bit in (0, 5, 9, 15) else 0.0, data_type="bit", bit=bit, byte_order=order)
        # scale and offset: value = raw * scale + offset
        table.add(register_table, f"{register_table}.scaled-int16", encode("int16", -12345, "ABCD"),
                  -12345 * 0.1 + 5.0, data_type="int16", scale=0.1, offset=5.0)
        table.add(register_table, f"{register_table}.scaled-uint32", encode("uint32", 3456789012, "CDAB"),
                  3456789012 * 0.001 - 100.0, data_type="uint32", byte_order="CDAB", scale=0.001, offset=-100.0)
    pattern = [True, False, False, True, True, False, True, False, False, False, True, True, False, True, False, True,
               True, False, True]
    for bit_table in ("coil", "discrete_input"):
        table.writes.append((bit_table, 3, pattern))
        for index, on in enumerate(pattern):
            name = f"{bit_table}.{index + 3}"
            table.tags.append({"equipment": "M1", "parameter": name, "register": bit_table, "address": index + 3})
            table.expect[name] = 1.0 if on else 0.0
    return table


@pytest.fixture(params=TRANSPORTS)
async def scratch(request: pytest.FixtureRequest) -> AsyncIterator[ModbusSimulator]:
    """The scratch unit over each transport: the same decoding must come out of Modbus TCP, RTU on a serial
    line (a pseudo-terminal) and RTU frames over TCP."""
    async with ModbusSimulator([], port=free_port(), scratch_unit=SCRATCH, transport=request.param) as simulator:
        yield simulator


def scratch_config(simulator: ModbusSimulator, tags: list[dict[str, Any]], **device: Any) -> ModbusConfig:
    return ModbusConfig.model_validate({
        "type": "modbus", "name": f"golden-{simulator.transport}-{simulator.port}", **link_settings(simulator),
        "timeout": "1s", "interval": "100ms",
        "devices": [{"unit_id": SCRATCH, "name": "scratch", "tags": tags, **device}]})


async def read_once(connector: ModbusConnector, until: Callable[[Collector], bool]) -> Collector:
    sink = Collector()
    await connector.connect()
    task = asyncio.create_task(connector.run(sink))
    try:
        for _ in range(100):
            if until(sink):
                break
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await connector.close()
    return sink


async def test_every_data_type_in_every_byte_order_reads_back_through_the_connector(scratch: ModbusSimulator) -> None:
    table = golden_table()
    memory = scratch.units[SCRATCH]
    for register_table, address, values in table.writes:
        memory.write(register_table, address, values)
    connector = build_connector(scratch_config(scratch, table.tags))
    assert isinstance(connector, ModbusConnector)
    sink = await read_once(connector, lambda s: set(table.expect) <= {r.parameter for r in s.readings})
    got = {r.parameter: r.value for r in sink.readings}
    wrong = {name: (got.get(name), want) for name, want in table.expect.items()
             if name not in got or not math.isclose(got[name], want, rel_tol=1e-12, abs_tol=1e-9)}
    assert not wrong, f"{len(wrong)} of {len(table.expect)} cases decoded wrongly (got, expected): {wrong}"
    # the whole table (hundreds of tags) is read with a handful of merged requests per poll
    reads = connector.status()["devices"]["scratch"]["reads_per_poll"]["default"]
    assert reads <= 8, reads


async def test_unusable_values_are_counted_and_the_rest_of_the_read_still_arrives(scratch: ModbusSimulator) -> None:
    memory = scratch.units[SCRATCH]
    memory.write("holding", 0, wire_registers(struct.pack(">f", math.nan), "ABCD"))
    memory.write("holding", 2, encode_text("PRESS-99", 4, "ABCD"))
    memory.write("holding", 6, encode_text("abc", 2, "ABCD"))
    memory.write("holding", 8, [1234])
    tags = [
        {"equipment": "M1", "parameter": "nan", "register": "holding", "address": 0, "data_type": "float32"},
        {"equipment": "M1", "parameter": "unmapped", "register": "holding", "address": 2, "data_type": "string",
         "length": 4, "values": {"PRESS-01": 1}},
        {"equipment": "M1", "parameter": "text", "register": "holding", "address": 6, "data_type": "string",
         "length": 2},
        {"equipment": "M1", "parameter": "good", "register": "holding", "address": 8, "data_type": "uint16"},
    ]
    connector = build_connector(scratch_config(scratch, tags))
    assert isinstance(connector, ModbusConnector)
    sink = await read_once(connector, lambda s: len(s.readings) >= 3)
    assert {r.parameter for r in sink.readings} == {"good"}
    status = connector.status()["devices"]["scratch"]
    assert {tag.split(" ")[0]: info["reason"] for tag, info in status["failing_tags"].items()} == {
        "M1.nan": "not_finite", "M1.unmapped": "unmapped_text", "M1.text": "not_a_number"}
    assert status["reads_per_poll"] == {"default": 1}
