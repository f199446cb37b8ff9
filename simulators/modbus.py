"""A Modbus TCP server that plays the shared machine model: ``python -m simulators.modbus``.

Each machine of :mod:`simulators.machine` is one Modbus device, unit id 1, 2, 3, … on one TCP port (as
machines behind a Modbus gateway are), and every unit has the same register map below.  The map mixes data
types and byte orders on purpose, as real plants do.  Addresses are protocol addresses (0-based: holding 0 is
the "40001" of vendor manuals).

Holding registers (function 3; writes are accepted, and overwritten by the model on its next step):

=======  =====================  ========  =====  =====================================================
address  parameter              type      order  meaning
=======  =====================  ========  =====  =====================================================
0-1      parts_total            uint32    CDAB   all parts made (wraps at 2**32)
2-3      parts_good             uint32    CDAB   good parts made (wraps at 2**32)
4        state                  uint16           1 running, 2 planned stop, 3 unplanned stop
5        reason                 uint16           0 none, 1 mechanical failure, 2 electrical failure,
                                                 3 tool change, 4 material shortage, 5 scheduled maint.
6        product                uint16           product number (1, 2)
7        status bits            uint16           bit 0 running, bit 1 planned stop, bit 2 unplanned stop
8-15     machine code           string   ABCD   the machine's code (``PRESS-01``), NUL padded
16-19    model clock            uint64    DCBA   seconds the machine model has run
=======  =====================  ========  =====  =====================================================

Input registers (function 4, read only):

=======  =====================  ========  =====  =====================================================
0-1      temperature            float32   ABCD   degC
2-3      vibration              float32   BADC   mm/s
4-7      current                float64   CDAB   A
8        temperature            int16            tenths of a degC (scale 0.1)
9        current                uint16           hundredths of an A (scale 0.01)
10-11    vibration              int32     DCBA   thousandths of a mm/s (scale 0.001)
=======  =====================  ========  =====  =====================================================

Coils (function 1): 0 green, 1 yellow, 2 red lamp of the andon light (running, planned stop, unplanned stop).
Discrete inputs (function 2): 0 running, 1 planned stop, 2 unplanned stop.  Any other address answers
exception 2 (illegal data address); an unknown unit id answers exception 11 (gateway target failed to respond).

The model advances at wall-clock time times ``--speed``.  With ``--trace FILE`` the machines named in the trace
are served instead and take their values only from the trace, replayed at ``--speed`` (``--loop`` repeats
it).  The server counts the requests it serves, by unit id and function code, and prints them when stopped.
For tests and measurements it can refuse reads larger than ``--max-registers`` / ``--max-bits`` (with
exception 3, or 2 with ``--refuse-with 2``), keep units that never answer, offer a scratch unit whose registers
a test writes, and serve ``--bench-registers N`` extra input registers from address 1000 whose values change
every 100 ms.

``--transport rtu`` serves the same units as Modbus RTU on a serial line: one end of a pseudo-terminal pair,
whose other end (``--serial-link PATH`` makes a stable symlink to it) the connector opens as its serial port;
``--transport rtu-over-tcp`` serves RTU frames on a TCP port, as a transparent serial-to-Ethernet gateway does.
There ``--pace`` makes the line take as long as a real one at ``--baudrate``, ``--crc-errors N`` corrupts every
Nth answer, ``--slow-unit UNIT:SECONDS`` delays a unit's answers, and ``--silent-unit`` / ``--silent-after``
make a unit stop answering (see :mod:`simulators.modbus_rtu`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import struct
import sys
import time
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU
from pymodbus.pdu.register_message import ReadHoldingRegistersResponse, ReadInputRegistersResponse
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.simulator.simcore import SimCore

from simulators.machine import PLANNED_STOP, RUNNING, UNPLANNED_STOP, Machine, default_machines
from simulators.modbus_rtu import LineStats, PtyPort, RtuLine, RtuOverTcpServer
from simulators.trace import load_trace, replay

BIT_TABLES = ("coil", "discrete_input")
TABLES = ("coil", "discrete_input", "holding", "input")
FUNCTION_TABLE = {1: "coil", 5: "coil", 15: "coil", 2: "discrete_input",
                  3: "holding", 6: "holding", 16: "holding", 22: "holding", 23: "holding", 4: "input"}
READ_FUNCTIONS = {1: "coil", 2: "discrete_input", 3: "holding", 4: "input"}
GATEWAY_NO_RESPONSE = 0x0B
BENCH_ADDRESS = 1000
TRANSPORTS = ("tcp", "rtu", "rtu-over-tcp")

FORMATS = {"int16": ("h", 1), "uint16": ("H", 1), "int32": ("i", 2), "uint32": ("I", 2),
           "int64": ("q", 4), "uint64": ("Q", 4), "float32": ("f", 2), "float64": ("d", 4)}


@dataclass(frozen=True)
class MapEntry:
    """One value of the register map."""

    table: str
    address: int
    parameter: str
    data_type: str
    order: str = "ABCD"
    scale: float = 1.0
    length: int = 0           # registers, for strings
    meaning: str = ""


MACHINE_MAP: tuple[MapEntry, ...] = (
    MapEntry("holding", 0, "parts_total", "uint32", "CDAB", meaning="all parts made"),
    MapEntry("holding", 2, "parts_good", "uint32", "CDAB", meaning="good parts made"),
    MapEntry("holding", 4, "state", "uint16", meaning="1 running, 2 planned stop, 3 unplanned stop"),
    MapEntry("holding", 5, "reason", "uint16", meaning="downtime reason code"),
    MapEntry("holding", 6, "product", "uint16", meaning="product number"),
    MapEntry("holding", 7, "status_bits", "uint16", meaning="bit 0 running, 1 planned stop, 2 unplanned stop"),
    MapEntry("holding", 8, "machine_code", "string", length=8, meaning="machine code, NUL padded"),
    MapEntry("holding", 16, "model_clock", "uint64", "DCBA", meaning="seconds the model has run"),
    MapEntry("input", 0, "temperature", "float32", "ABCD", meaning="degC"),
    MapEntry("input", 2, "vibration", "float32", "BADC", meaning="mm/s"),
    MapEntry("input", 4, "current", "float64", "CDAB", meaning="A"),
    MapEntry("input", 8, "temperature", "int16", scale=0.1, meaning="degC, scale 0.1"),
    MapEntry("input", 9, "current", "uint16", scale=0.01, meaning="A, scale 0.01"),
    MapEntry("input", 10, "vibration", "int32", "DCBA", scale=0.001, meaning="mm/s, scale 0.001"),
    MapEntry("coil", 0, "lamp_green", "bit", meaning="andon light: running"),
    MapEntry("coil", 1, "lamp_yellow", "bit", meaning="andon light: planned stop"),
    MapEntry("coil", 2, "lamp_red", "bit", meaning="andon light: unplanned stop"),
    MapEntry("discrete_input", 0, "running", "bit", meaning="state is running"),
    MapEntry("discrete_input", 1, "planned_stop", "bit", meaning="state is planned stop"),
    MapEntry("discrete_input", 2, "unplanned_stop", "bit", meaning="state is unplanned stop"),
)
"""The register map every machine unit serves (see the module docstring)."""

MACHINE_RANGES = {"holding": [(0, 20)], "input": [(0, 12)], "coil": [(0, 16)], "discrete_input": [(0, 16)]}
SCRATCH_RANGES = {"holding": [(0, 1000), (1100, 900)], "input": [(0, 2000)], "coil": [(0, 2000)],
                  "discrete_input": [(0, 2000)]}
"""The scratch unit a test writes: 2000 of everything, except holding registers 1000-1099, which are unmapped
(exception 2, as a device with a hole in its map answers)."""


def encode(value: float | str, data_type: str, order: str = "ABCD", length: int = 0) -> list[int]:
    """Registers holding ``value`` as ``data_type`` in ``order`` (ABCD, CDAB, BADC, DCBA); strings are
    ``length`` registers, NUL padded.  Integers are clamped to their type's range."""
    if data_type == "string":
        raw = str(value).encode()[:2 * length].ljust(2 * length, b"\x00")
    else:
        fmt, count = FORMATS[data_type]
        if fmt in "fd":
            raw = struct.pack(">" + fmt, float(value))
        else:
            bits = 16 * count
            low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if fmt.islower() else (0, (1 << bits) - 1)
            raw = struct.pack(">" + fmt, min(high, max(low, round(float(value)))))
    words = [raw[i:i + 2] for i in range(0, len(raw), 2)]
    if order in ("CDAB", "DCBA") and data_type != "string":
        words.reverse()
    if order in ("BADC", "DCBA"):
        words = [word[::-1] for word in words]
    return [int.from_bytes(word, "big") for word in words]


class UnitMemory:
    """The four tables of one unit id: the simulator's truth, copied into each answer."""

    def __init__(self, ranges: dict[str, list[tuple[int, int]]]) -> None:
        self.ranges = ranges
        size = {table: max((start + count for start, count in ranges.get(table, [])), default=0)
                for table in TABLES}
        self.holding: list[int] = [0] * size["holding"]
        self.input: list[int] = [0] * size["input"]
        # bit tables are padded to whole registers: pymodbus keeps them 16 to a register
        self.coil: list[bool] = [False] * (-(-size["coil"] // 16) * 16)
        self.discrete_input: list[bool] = [False] * (-(-size["discrete_input"] // 16) * 16)

    def table(self, name: str) -> list[Any]:
        return getattr(self, name)  # type: ignore[no-any-return]

    def write(self, table: str, address: int, values: Sequence[int] | Sequence[bool]) -> None:
        """Set registers (or bits) directly, as the PLC program would."""
        memory = self.table(table)
        if address < 0 or address + len(values) > len(memory):
            raise IndexError(f"{table} {address}+{len(values)} is outside this unit's memory")
        memory[address:address + len(values)] = list(values)


class ModbusSimulator:
    """A Modbus TCP server for a set of machines (unit ids 1…N), with request counting and test modes."""

    def __init__(self, machines: Sequence[Machine] | None = None, *, host: str = "127.0.0.1", port: int = 5020,
                 speed: float = 1.0, trace: Sequence[Any] | None = None, loop_trace: bool = False,
                 max_registers: int | None = None, max_bits: int | None = None, refuse_with: int = 3,
                 scratch_unit: int | None = None, silent_units: Iterable[int] = (), bench_registers: int = 0,
                 step: float = 0.1, short_answers_from: dict[int, int] | None = None, transport: str = "tcp",
                 serial_link: str | Path | None = None, baudrate: int = 19200, bits_per_char: int = 11,
                 pace: bool = False, crc_error_every: int = 0, slow_units: dict[int, float] | None = None,
                 silent_after: float = 0.0) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        if transport not in TRANSPORTS:
            raise ValueError(f"transport {transport!r}: use one of {', '.join(TRANSPORTS)}")
        self.transport = transport
        self.serial_link = serial_link
        self.baudrate, self.bits_per_char, self.pace = baudrate, bits_per_char, pace
        self.crc_error_every = crc_error_every
        self.slow_units = dict(slow_units or {})
        """RTU transports: unit → seconds it takes to answer (the line is busy meanwhile)."""
        self.silent_after = silent_after
        """``silent_units`` answer normally for this many seconds after start, then stop answering."""
        self.line_stats = LineStats()
        """RTU transports: frames, CRC errors received and sent, collisions and short gaps (all lines)."""
        self.serial_port: str | None = None
        """transport rtu: the path the connector opens (the pseudo-terminal's slave end, or serial_link)."""
        self._pty: PtyPort | None = PtyPort(serial_link) if transport == "rtu" else None
        if self._pty is not None:
            self.serial_port = self._pty.path    # known before start, so a test can configure the connector
        self._lines: list[RtuLine] = []
        self._silent_from = 0.0
        self.machines = list(machines) if machines is not None else default_machines(3)
        self.host, self.port = host, port
        self.speed, self.step = speed, step
        self.trace, self.loop_trace = trace, loop_trace
        self.max_registers, self.max_bits, self.refuse_with = max_registers, max_bits, refuse_with
        self.silent_units = set(silent_units)
        self.short_answers_from = dict(short_answers_from or {})
        """Per unit: a register read reaching this address or beyond is answered with only the registers
        before it, and no exception (as some gateways answer a read past the end of their mapped area)."""
        self.short_answers: Counter[int] = Counter()
        self.bench_registers = bench_registers
        self.units: dict[int, UnitMemory] = {}
        self.machine_units: dict[int, Machine] = {}
        machine_ranges = {table: list(ranges) for table, ranges in MACHINE_RANGES.items()}
        if bench_registers:
            machine_ranges["input"].append((BENCH_ADDRESS, bench_registers))
        for index, machine in enumerate(self.machines):
            self.units[index + 1] = UnitMemory(machine_ranges)
            self.machine_units[index + 1] = machine
        if scratch_unit is not None:
            if scratch_unit in self.units:
                raise ValueError(f"unit {scratch_unit} is already a machine")
            self.units[scratch_unit] = UnitMemory(SCRATCH_RANGES)
        self.requests: Counter[tuple[int, int]] = Counter()
        """Requests received, by (unit id, function code); refused and unanswered ones included."""
        self.refused: Counter[tuple[int, int]] = Counter()
        """Reads refused for being larger than the limit, by (unit id, function code)."""
        self.request_log: deque[tuple[int, int, int, int]] = deque(maxlen=10_000)
        """The latest requests as (unit, function code, address, count)."""
        self._server: Any = None
        self._core: Any = None
        self._decoder = DecodePDU(True)
        self._model: asyncio.Task[None] | None = None
        for unit in self.machine_units:
            self._publish(unit)

    # --- life ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen (again) on the configured port (or open the serial line) and run the model."""
        self._silent_from = time.monotonic() + self.silent_after
        if self.transport == "tcp":
            server = ModbusTcpServer(self._devices(), address=(self.host, self.port), trace_pdu=self._on_pdu)
            await server.serve_forever(background=True)
            self._server = server
            sockets = getattr(server.transport, "sockets", None)
        else:
            self._core = SimCore(self._devices())
            if self.transport == "rtu":
                if self._pty is None:
                    self._pty = PtyPort(self.serial_link)
                    self.serial_port = self._pty.path
                line = self._line(self._pty.write, check_gap=True)
                self._pty.attach(line)
                line.start()
                sockets = None
            else:
                gateway = RtuOverTcpServer(lambda write: self._line(write, check_gap=False))
                await gateway.start(self.host, self.port)
                self._server = gateway
                self.port = gateway.port
                sockets = None
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        self._model = asyncio.create_task(self._run_model(), name="modbus-simulator-model")

    def _line(self, write: Any, *, check_gap: bool) -> RtuLine:
        line = RtuLine(self._serve_rtu, write, self.line_stats, baudrate=self.baudrate,
                       bits_per_char=self.bits_per_char, pace=self.pace, crc_error_every=self.crc_error_every,
                       check_gap=check_gap)
        self._lines.append(line)
        return line

    async def stop(self) -> None:
        """Stop listening and drop every connection (a power cut, as far as clients can tell).  A serial line
        stops answering (its pseudo-terminal stays, so the connector's port path stays valid: see close)."""
        server, self._server = self._server, None
        model, self._model = self._model, None
        if model is not None:
            model.cancel()
            await asyncio.gather(model, return_exceptions=True)
        if self._pty is not None:
            self._pty.detach()
        lines, self._lines = self._lines, []
        for line in lines:
            await line.stop()
        if isinstance(server, RtuOverTcpServer):
            await server.stop()
        elif server is not None:
            await server.shutdown()

    def close(self) -> None:
        """Release the serial line's pseudo-terminal (after stop)."""
        pty, self._pty = self._pty, None
        if pty is not None:
            pty.close()

    async def __aenter__(self) -> ModbusSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
        self.close()

    # --- counting --------------------------------------------------------------------------------------

    def request_count(self, function: int | None = None, unit: int | None = None) -> int:
        """Requests received, optionally only of one function code and/or unit id."""
        return sum(n for (u, f), n in self.requests.items()
                   if (function is None or f == function) and (unit is None or u == unit))

    def reset_counts(self) -> None:
        self.requests.clear()
        self.refused.clear()
        self.request_log.clear()

    # --- the model -------------------------------------------------------------------------------------

    async def _run_model(self) -> None:
        if self.trace is not None:
            by_code = {machine.code: unit for unit, machine in self.machine_units.items()}
            async for point in replay(list(self.trace), self.speed, loop_forever=self.loop_trace):
                unit = by_code.get(point.machine)
                if unit is not None:
                    with contextlib.suppress(KeyError):
                        self.machine_units[unit].set_value(point.parameter, point.value)
                    self._publish(unit)
            return
        clock = asyncio.get_running_loop()
        last = clock.time()
        while True:
            await asyncio.sleep(self.step)
            now = clock.time()
            for unit, machine in self.machine_units.items():
                machine.advance((now - last) * self.speed)
                self._publish(unit)
            last = now

    def _publish(self, unit: int) -> None:
        """Encode the machine's current values into its unit's registers."""
        machine, memory = self.machine_units[unit], self.units[unit]
        values: dict[str, float | str] = dict(machine.values())
        state = machine.state
        flags = {"running": state == RUNNING, "planned_stop": state == PLANNED_STOP,
                 "unplanned_stop": state == UNPLANNED_STOP}
        values.update(flags)
        values["lamp_green"], values["lamp_yellow"], values["lamp_red"] = (
            flags["running"], flags["planned_stop"], flags["unplanned_stop"])
        values["status_bits"] = sum(1 << bit for bit, on in enumerate(flags.values()) if on)
        values["machine_code"] = machine.code
        values["model_clock"] = int(machine.clock)
        for entry in MACHINE_MAP:
            value = values[entry.parameter]
            if entry.table in BIT_TABLES:
                memory.table(entry.table)[entry.address] = bool(value)
                continue
            raw = value if isinstance(value, str) else float(value) / entry.scale
            registers = encode(raw, entry.data_type, entry.order, entry.length)
            memory.table(entry.table)[entry.address:entry.address + len(registers)] = registers

    # --- serving ---------------------------------------------------------------------------------------

    def _devices(self) -> list[Any]:
        devices = []
        for unit, memory in self.units.items():
            blocks = []
            for table in TABLES:
                if table in BIT_TABLES:
                    entries = [SimData(start, values=[False] * count, datatype=DataType.BITS)
                               for start, count in memory.ranges[table]]
                else:
                    entries = [SimData(start, count=count, values=0, datatype=DataType.REGISTERS)
                               for start, count in memory.ranges[table]]
                blocks.append(entries)
            devices.append(SimDevice(id=unit, simdata=tuple(blocks), action=self._answerer(unit)))  # type: ignore[arg-type]
        return devices

    def _answerer(self, unit: int) -> Any:
        memory = self.units[unit]
        bench_end = BENCH_ADDRESS + self.bench_registers

        async def answer(function: int, block_start: int, address: int, count: int, block: list[int],
                         values: list[int] | list[bool] | None) -> None:
            """pymodbus calls this for every valid request: copy our memory into its answer buffer, and keep
            what a client writes."""
            table = FUNCTION_TABLE[function]
            data = memory.table(table)
            if table in BIT_TABLES:
                if values:
                    data[address:address + len(values)] = [bool(v) for v in values]
                first = address // 16   # pymodbus keeps bits 16 to a register, bit 0 first
                for register in range(first, first + count):
                    word = 0
                    for bit, on in enumerate(data[register * 16:register * 16 + 16]):
                        if on:
                            word |= 1 << bit
                    block[register - block_start] = word
                return None
            if values:
                data[address:address + len(values)] = values
            offset = address - block_start
            block[offset:offset + count] = data[address:address + count]
            if table == "input" and self.bench_registers and address < bench_end and address + count > BENCH_ADDRESS:
                tick = int(time.monotonic() * 10)
                for at in range(max(address, BENCH_ADDRESS), min(address + count, bench_end)):
                    block[at - block_start] = (tick + at) & 0xFFFF
            return None

        return answer

    def _on_pdu(self, sending: bool, pdu: Any) -> Any:
        """Sees every request before it is served: counts it, and answers the test modes' way."""
        if sending:
            return pdu
        unit, function = int(pdu.dev_id), int(pdu.function_code)
        count = int(getattr(pdu, "count", 0) or 0)
        self.requests[(unit, function)] += 1
        self.request_log.append((unit, function, int(getattr(pdu, "address", 0) or 0), count))
        if unit in self.silent_units and time.monotonic() >= self._silent_from:
            return None            # pymodbus serves nothing for a request it no longer has: no answer at all
        if unit not in self.units:
            # on a serial line nobody is at that address; a gateway (TCP, RTU over TCP) says so
            return None if self.transport == "rtu" else _Refusal(pdu, GATEWAY_NO_RESPONSE)
        table = READ_FUNCTIONS.get(function)
        limit = self.max_bits if table in BIT_TABLES else self.max_registers
        if table is not None and limit is not None and count > limit:
            self.refused[(unit, function)] += 1
            return _Refusal(pdu, self.refuse_with)
        end = self.short_answers_from.get(unit)
        address = int(getattr(pdu, "address", 0) or 0)
        if table in ("holding", "input") and end is not None and address + count > end:
            self.short_answers[unit] += 1
            return _ShortAnswer(pdu, self.units[unit].table(table)[address:end] if address < end else [])
        return pdu


    async def _serve_rtu(self, unit: int, request: bytes) -> bytes | None:
        """One RTU request (the PDU, function code first) → the answer PDU, or None for silence."""
        pdu = self._decoder.decode(request)
        if pdu is None:
            return bytes([request[0] | 0x80, 1])           # illegal function
        pdu.dev_id, pdu.transaction_id = unit, 0
        handled = self._on_pdu(False, pdu)
        if handled is None:
            return None
        delay = self.slow_units.get(unit)
        if delay:
            await asyncio.sleep(delay)
        try:
            response = await handled.datastore_update(self._core, unit)
        except Exception:  # as pymodbus' own server does: the device reports a failure, the line goes on
            response = ExceptionResponse(pdu.function_code, 4)
        return bytes([response.function_code]) + response.encode()


class _Refusal(ModbusPDU):
    """Stands in for a request the simulator refuses: serving it yields a Modbus exception response."""

    def __init__(self, request: ModbusPDU, code: int) -> None:
        super().__init__(transaction_id=request.transaction_id, dev_id=request.dev_id)
        self.function_code = request.function_code
        self.code = code

    async def datastore_update(self, context: Any, device_id: int) -> ModbusPDU:
        return ExceptionResponse(self.function_code, self.code)


class _ShortAnswer(ModbusPDU):
    """Stands in for a register read the simulator answers short: fewer registers than asked, no exception."""

    def __init__(self, request: ModbusPDU, registers: Sequence[int]) -> None:
        super().__init__(transaction_id=request.transaction_id, dev_id=request.dev_id)
        self.function_code = request.function_code
        self.answer = list(registers)

    async def datastore_update(self, context: Any, device_id: int) -> ModbusPDU:
        response = (ReadHoldingRegistersResponse if self.function_code == 3 else ReadInputRegistersResponse)(
            dev_id=self.dev_id, transaction_id=self.transaction_id, registers=self.answer)
        return response


# --- the command -----------------------------------------------------------------------------------------

def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m simulators.modbus", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5020, help="TCP port (default 5020)")
    parser.add_argument("--machines", type=int, default=3, help="machines PRESS-01… as unit ids 1… (default 3)")
    parser.add_argument("--speed", type=float, default=1.0, help="model time per wall-clock second (default 1)")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the machine model")
    parser.add_argument("--trace", type=Path, help="replay this trace (CSV or JSON lines) instead of the model")
    parser.add_argument("--loop", action="store_true", help="repeat the trace forever")
    parser.add_argument("--max-registers", type=int, help="refuse register reads larger than this")
    parser.add_argument("--max-bits", type=int, help="refuse coil/discrete input reads larger than this")
    parser.add_argument("--refuse-with", type=int, choices=(2, 3), default=3,
                        help="exception code for refused reads (3 illegal data value, 2 illegal data address)")
    parser.add_argument("--bench-registers", type=int, default=0,
                        help="extra input registers from address 1000 on every unit, changing every 100 ms")
    parser.add_argument("--transport", choices=TRANSPORTS, default="tcp",
                        help="tcp (Modbus TCP, default), rtu (a serial line on a pseudo-terminal), rtu-over-tcp "
                             "(RTU frames on a TCP port, as a transparent gateway)")
    parser.add_argument("--serial-link", type=Path,
                        help="rtu: a symlink to the pseudo-terminal the connector opens (default: print its path)")
    parser.add_argument("--baudrate", type=int, default=19200, help="rtu: the line's speed, for --pace")
    parser.add_argument("--bits-per-char", type=int, default=11,
                        help="rtu: bits a character takes on the wire (11 for 8E1 and 8N2, 10 for 8N1)")
    parser.add_argument("--pace", action="store_true",
                        help="rtu: take as long as the line would: requests and answers cross at --baudrate, "
                             "with the 3.5-character silence that ends each frame")
    parser.add_argument("--crc-errors", type=int, default=0, metavar="N",
                        help="rtu: every Nth answer goes out with a flipped bit, so its CRC fails")
    parser.add_argument("--silent-unit", type=int, action="append", default=[], metavar="UNIT",
                        help="a unit that does not answer (repeatable); see --silent-after")
    parser.add_argument("--silent-after", type=float, default=0.0, metavar="SECONDS",
                        help="the silent units answer normally for this long first (a unit that stops answering)")
    parser.add_argument("--slow-unit", action="append", default=[], metavar="UNIT:SECONDS",
                        help="rtu: a unit that takes this long to answer (repeatable)")
    parser.add_argument("--print-map", action="store_true", help="print the register map and exit")
    return parser.parse_args(argv)


def print_map(out: Any = sys.stdout) -> None:
    out.write("table           address  parameter        type     order  scale  meaning\n")
    for e in MACHINE_MAP:
        span = e.length or FORMATS.get(e.data_type, ("", 1))[1]
        where = f"{e.address}" if span == 1 else f"{e.address}-{e.address + span - 1}"
        order = e.order if span > 1 and e.data_type != "string" else "-"
        out.write(f"{e.table:<15} {where:<8} {e.parameter:<16} {e.data_type:<8} {order:<6} {e.scale:<6g} "
                  f"{e.meaning}\n")


async def _serve(args: argparse.Namespace) -> None:
    trace = None
    if args.trace:
        trace = load_trace(args.trace)
        codes = sorted({point.machine for point in trace})
        machines = [Machine(code) for code in codes]
    else:
        machines = default_machines(args.machines, seed=args.seed)
    slow = {}
    for item in args.slow_unit:
        unit, _, seconds = item.partition(":")
        slow[int(unit)] = float(seconds)
    simulator = ModbusSimulator(machines, host=args.host, port=args.port, speed=args.speed, trace=trace,
                                loop_trace=args.loop, max_registers=args.max_registers, max_bits=args.max_bits,
                                refuse_with=args.refuse_with, bench_registers=args.bench_registers,
                                transport=args.transport, serial_link=args.serial_link, baudrate=args.baudrate,
                                bits_per_char=args.bits_per_char, pace=args.pace, crc_error_every=args.crc_errors,
                                silent_units=args.silent_unit, silent_after=args.silent_after, slow_units=slow)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    await simulator.start()
    units = ", ".join(f"{unit}={m.code}" for unit, m in simulator.machine_units.items())
    paced = f", paced at {args.baudrate} baud" if args.pace else ""
    where = {"tcp": f"{simulator.host}:{simulator.port}",
             "rtu": f"serial line {simulator.serial_port} (RTU{paced})",
             "rtu-over-tcp": f"{simulator.host}:{simulator.port} (RTU over TCP)"}[args.transport]
    print(f"modbus simulator on {where}, unit ids {units}"
          f"{f', replaying {args.trace}' if trace else ''} (speed {args.speed:g})", file=sys.stderr, flush=True)
    try:
        await stop.wait()
    finally:
        await simulator.stop()
        simulator.close()
        served = ", ".join(f"unit {u} fc {f}: {n}" for (u, f), n in sorted(simulator.requests.items()))
        line = simulator.line_stats
        rtu = (f"; line: {line.frames} frames, {line.crc_errors_received} CRC errors received, "
               f"{line.crc_errors_sent} sent, {line.collisions} collisions, {line.short_gaps} short gaps"
               if args.transport != "tcp" else "")
        print(f"modbus simulator stopped; requests served: {served or 'none'}{rtu}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    if args.print_map:
        print_map()
        return 0
    try:
        asyncio.run(_serve(args))
    except (OSError, RuntimeError, ValueError) as exc:
        print(f"modbus simulator: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
