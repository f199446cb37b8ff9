"""Modbus RTU for the Modbus simulator: the serial line (one end of a pseudo-terminal pair) and RTU frames over TCP.

:class:`RtuLine` is one RS-485 line as the devices on it see it: it cuts the bytes the master sends into frames
(length from the function code, as a slave does; CRC checked), hands each request to the simulator, and sends
the answer back, one transaction at a time.  It can

* **pace** the line at its baud rate (``pace=True``): a request counts as received only once its bytes would
  have crossed the wire and the 3.5-character silence that ends a frame has passed, and the answer is written
  no faster than the line would carry it.  A pseudo-terminal moves bytes as fast as the kernel copies them
  whatever its termios speed says, so without pacing an RTU test measures the CPU, not the line;
* **corrupt answers** (``crc_error_every=N``: every Nth answer goes out with one bit flipped, so its CRC fails at
  the master);
* **check the master's manners**: a request that starts while an answer is still on the wire is a *collision*
  (on RS-485 both frames would be garbled), one that starts less than 3.5 characters after the last answer
  is a *short gap* (a real slave may not see the frame boundary).  Both are counted, never hidden.

:class:`PtyPort` gives a line a pseudo-terminal: the simulator keeps the master end, the connector opens the
slave end's path (``/dev/pts/N``, optionally behind a fixed symlink) as its serial port.
:func:`serve_rtu_over_tcp` runs one line per TCP connection, as a serial-to-Ethernet gateway in "transparent"
(RTU over TCP) mode does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU

Serve = Callable[[int, bytes], Awaitable[bytes | None]]
"""``serve(unit, pdu)`` → the answer PDU (function code first), or None for no answer at all."""


def bits_per_character(bytesize: int = 8, parity: str = "E", stopbits: int = 1) -> int:
    """Bits one RTU character takes on the wire: start bit, data bits, parity bit, stop bits."""
    return 1 + bytesize + (0 if parity == "N" else 1) + stopbits


def crc16(frame: bytes) -> bytes:
    """The Modbus CRC of ``frame``, as the two bytes that end an RTU frame (low byte first)."""
    return FramerRTU.compute_CRC(frame).to_bytes(2, "big")


@dataclass
class LineStats:
    """What one line saw (shared by every line of a simulator)."""

    frames: int = 0               # well-formed requests received
    crc_errors_received: int = 0  # requests whose CRC did not match (dropped, as a slave does)
    garbage_bytes: int = 0        # bytes skipped while hunting for a frame start
    crc_errors_sent: int = 0      # answers sent with a corrupted byte
    collisions: int = 0           # requests that began while an answer was still on the wire
    short_gaps: int = 0           # requests that began less than 3.5 characters after the last answer


class RtuLine:
    """One RTU line: frames in, answers out, one transaction at a time."""

    def __init__(self, serve: Serve, write: Callable[[bytes], None], stats: LineStats, *, baudrate: int = 19200,
                 bits_per_char: int = 11, pace: bool = False, crc_error_every: int = 0,
                 check_gap: bool = True) -> None:
        self._serve = serve
        self._write = write
        self.stats = stats
        self.char_time = bits_per_char / baudrate
        self.frame_gap = 3.5 * self.char_time if baudrate <= 19200 else 0.00175   # the spec's fixed 1.75 ms above
        self.pace = pace
        self.crc_error_every = crc_error_every
        self.check_gap = check_gap
        self._decoder = DecodePDU(True)
        self._buffer = b""
        self._first_byte_at = 0.0
        self._frames: asyncio.Queue[tuple[bytes, float]] = asyncio.Queue()
        self._answers = 0
        self._wire_free_at = 0.0     # when the answer being sent has left the wire
        self._last_answer_end = float("-inf")
        self._worker: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._worker = asyncio.create_task(self._work(), name="modbus-rtu-line")

    async def stop(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)

    def feed(self, data: bytes) -> None:
        """Bytes from the master."""
        now = asyncio.get_running_loop().time()
        if not self._buffer:
            self._first_byte_at = now
            if now < self._wire_free_at:
                self.stats.collisions += 1
            elif self.check_gap and now < self._last_answer_end + self.frame_gap:
                self.stats.short_gaps += 1
        self._buffer += data
        while len(self._buffer) >= 2:
            pdu_class = self._decoder.lookupPduClass(self._buffer)
            if pdu_class is None:
                self._skip(1)
                continue
            size = pdu_class.calculateRtuFrameSize(self._buffer)
            if not size or len(self._buffer) < size:
                return
            frame, self._buffer = self._buffer[:size], self._buffer[size:]
            if crc16(frame[:-2]) != frame[-2:]:
                self.stats.crc_errors_received += 1
                continue
            self.stats.frames += 1
            self._frames.put_nowait((frame, self._first_byte_at))
            self._first_byte_at = now

    def _skip(self, count: int) -> None:
        self.stats.garbage_bytes += count
        self._buffer = self._buffer[count:]

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            frame, started = await self._frames.get()
            if self.pace:   # the slave sees the request once it has crossed the wire and the line fell silent
                await _sleep_until(loop, started + len(frame) * self.char_time + self.frame_gap)
            answer = await self._serve(frame[0], frame[1:-2])
            if answer is None or frame[0] == 0:   # unit 0 is a broadcast: nobody answers it
                continue
            out = bytes([frame[0]]) + answer
            out += crc16(out)
            self._answers += 1
            if self.crc_error_every and self._answers % self.crc_error_every == 0:
                corrupt = bytearray(out)
                corrupt[-3] ^= 0x01      # a data bit, so the frame's length stays readable and only the CRC fails
                out = bytes(corrupt)
                self.stats.crc_errors_sent += 1
            await self._send(loop, out)

    async def _send(self, loop: asyncio.AbstractEventLoop, frame: bytes) -> None:
        start = loop.time()
        if not self.pace:
            self._write(frame)
            self._last_answer_end = loop.time()
            return
        self._wire_free_at = start + len(frame) * self.char_time
        sent = 0
        while sent < len(frame):
            # the bytes whose last bit has crossed the wire by now: never a byte early
            now = loop.time()
            due = min(len(frame), int((now - start) / self.char_time))
            if due > sent:
                self._write(frame[sent:due])
                sent = due
            if sent < len(frame):
                await _sleep_until(loop, start + (sent + 1) * self.char_time, at_least=0.001)
        # the time just before the last write: the master cannot have seen the end of the answer earlier, so a
        # delay of this process after the write never shows as the master's short gap
        self._last_answer_end = now


async def _sleep_until(loop: asyncio.AbstractEventLoop, when: float, at_least: float = 0.0) -> None:
    delay = max(when - loop.time(), at_least)
    if delay > 0:
        await asyncio.sleep(delay)


class PtyPort:
    """A pseudo-terminal pair: the simulator reads and writes the master end; ``path`` is the slave end, the
    serial port a connector opens.  ``link`` makes a stable symlink to it (the slave's number changes)."""

    def __init__(self, link: str | Path | None = None) -> None:
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)       # no echo, no line editing: bytes pass as they are, as on a real line
        tty.setraw(self.master)
        os.set_blocking(self.master, False)
        self.device = os.ttyname(self._slave)
        self.link = Path(link) if link else None
        if self.link is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()
            self.link.symlink_to(self.device)
        self.dropped_bytes = 0
        self._reading = False

    @property
    def path(self) -> str:
        return str(self.link) if self.link is not None else self.device

    def write(self, data: bytes) -> None:
        try:
            os.write(self.master, data)
        except (BlockingIOError, OSError):
            self.dropped_bytes += len(data)   # nobody reads the other end: a line keeps no buffer either

    def attach(self, line: RtuLine) -> None:
        def readable() -> None:
            try:
                data = os.read(self.master, 4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if data:
                line.feed(data)

        asyncio.get_running_loop().add_reader(self.master, readable)
        self._reading = True

    def detach(self) -> None:
        if self._reading:
            asyncio.get_running_loop().remove_reader(self.master)
            self._reading = False

    def close(self) -> None:
        self.detach()
        for fd in (self.master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)
        if self.link is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()


class RtuOverTcpServer:
    """Listens for TCP connections that carry RTU frames; each connection is its own line."""

    def __init__(self, make_line: Callable[[Callable[[bytes], None]], RtuLine]) -> None:
        self._make_line = make_line
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._connection, host, port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = self._make_line(writer.write)
        line.start()
        self._writers.add(writer)
        try:
            while data := await reader.read(4096):
                line.feed(data)
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            await line.stop()
            writer.close()

    async def stop(self) -> None:
        """Stop listening and drop every connection."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for writer in list(self._writers):
            writer.close()
        await server.wait_closed()
