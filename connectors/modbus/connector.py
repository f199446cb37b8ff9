"""The Modbus connector: polls devices' registers, decodes them into readings, keeps each device's state.

One connector is one link and the devices (unit ids) on it: a Modbus TCP connection to a device or a gateway
(``transport: tcp``), a serial line with RTU framing (``rtu``: pyserial through pymodbus), or a TCP connection to
a gateway that passes RTU frames through unchanged (``rtu-over-tcp``: pymodbus' RTU framer on a TCP client).  Only
the client differs (:func:`modbus_client`); planning, decoding, splitting, report by exception, error isolation
and device state are the same code for all three.

The shared :class:`~connectors.polling.Poller` owns timing: each device's tags are split into poll groups,
and each (device, group) pair is polled on the group's interval.  This module implements only "poll this group
once": send the group's planned reads (see :mod:`connectors.modbus.planning`), decode every tag
(:mod:`connectors.modbus.decoding`), apply scale, offset and report by exception, and return the readings.

A link is a **bus**: one request at a time, in the order polls ask (``asyncio.Lock`` is first come, first
served, so the units on a line take turns read by read).  On a serial line the bus also keeps the inter-frame
gap (3.5 characters of silence) between an answer and the next request, and waits each unit's own ``timeout``.

Failure is contained at the smallest level it affects:

* a tag whose value cannot be decoded, or whose own read gets a Modbus exception, is counted and logged; the
  rest of its read and every other read go on;
* a merged read the device refuses (exception 2 or 3) is split and retried at once, and the split is kept;
* an answer whose CRC does not match (RTU) fails that read at once, counted as ``crc_error``; the next read
  goes on after the inter-frame gap;
* a device that does not answer (timeout) is counted and marked down, and the rest of that poll of it is not
  asked; after ``unit_backoff.after`` timeouts in a row, while another unit on the link still answers, its
  polls are skipped for a back-off period (doubling up to ``unit_backoff.max``), after which one read probes
  it.  So a dead meter costs the line one timeout per back-off period, not one per read;
* when the link itself is gone (the peer closed it, the serial port vanished, or pymodbus gave up after 5
  unanswered TCP requests in a row) ``run`` raises :class:`~ingestor.contract.ConnectionLost` and the
  supervisor reconnects with backoff.

Every problem is logged once when it starts, then at most once a minute while it lasts (with how often it
happened meanwhile), and once when it ends (:class:`~ingestor.contract.ProblemLog`).  Counters by connector,
device and reason are in Prometheus; which tag failed is in the logs and in :meth:`ModbusConnector.status`,
not in metric labels.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter as Tally
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge
from pymodbus.exceptions import ConnectionException, ModbusIOException
from pymodbus.framer import FramerRTU

from connectors.modbus.config import BIT_TABLES, ModbusConfig, ModbusDeviceConfig, ModbusTagConfig
from connectors.modbus.decoding import (
    DecodeError,
    bit_decoder,
    number_decoder,
    text_decoder,
    text_to_number,
)
from connectors.modbus.planning import ReadRequest, TagSpan, plan_reads, split
from connectors.polling import Poller, PollSchedule
from ingestor.contract import ConnectionLost, ProblemLog, Reading, ReadingSink, get_logger, now_us

log = get_logger(__name__)

REQUESTS = Counter("ingestor_modbus_requests_total", "Modbus read requests sent",
                   ["connector", "device", "table"])
ERRORS = Counter("ingestor_modbus_errors_total",
                 "Failed tag reads by reason (one per tag and poll): timeout, a Modbus exception, a decode error",
                 ["connector", "device", "reason"])
SPLITS = Counter("ingestor_modbus_read_splits_total",
                 "Merged reads a device refused (exception 2 or 3) that were split into smaller reads",
                 ["connector", "device"])
SUPPRESSED = Counter("ingestor_modbus_readings_suppressed_total",
                     "Values not sent because they stayed within their deadband (report by exception)",
                     ["connector", "device"])
DEVICE_UP = Gauge("ingestor_modbus_device_up",
                  "1 while the device answers (data or a Modbus exception), 0 after a timeout or without a link",
                  ["connector", "device"])
SKIPPED = Counter("ingestor_modbus_polls_skipped_total",
                  "Polls of a unit skipped while it backs off after timeouts in a row", ["connector", "device"])
BACKING_OFF = Gauge("ingestor_modbus_device_backing_off",
                    "1 while the unit's polls are skipped after timeouts in a row", ["connector", "device"])
LAST_SUCCESS = Gauge("ingestor_modbus_device_last_success_timestamp_seconds",
                     "Unix time of the device's last successful read", ["connector", "device"])

EXCEPTION_REASONS = {1: "illegal_function", 2: "illegal_data_address", 3: "illegal_data_value",
                     4: "device_failure", 5: "acknowledge", 6: "device_busy", 8: "memory_parity_error",
                     10: "gateway_path_unavailable", 11: "gateway_no_response"}
SHORT_ANSWER = -1
"""Not a Modbus code: the device answered a read with fewer values than asked and no exception (some gateways
do near the end of their mapped area)."""
SPLIT_ON = (2, 3, SHORT_ANSWER)
"""Exception codes that make a merged read split: illegal data address, illegal data value (too large)."""
GATEWAY_CODES = (10, 11)
"""Exceptions a gateway sends for the device behind it: path unavailable, target failed to respond."""


class _QuietPymodbus(logging.Filter):
    """pymodbus logs every unanswered request and failed connect itself; this connector already counts and
    logs them, once and then rate-limited, so those library lines are dropped (everything else passes)."""

    DUPLICATES = ("No response received after", "Failed to connect", "Not connected, trying to connect",
                  "Repeating....")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.DUPLICATES)


logging.getLogger("pymodbus.logging").addFilter(_QuietPymodbus())


class TagReader:
    """One configured tag, compiled: where it sits, how to decode it, and its report-by-exception state."""

    __slots__ = ("deadband", "decode", "equipment", "error_count", "error_reason", "error_since", "label",
                 "last_sent", "last_value", "max_age", "parameter", "unit")

    def __init__(self, tag: ModbusTagConfig, device: ModbusDeviceConfig) -> None:
        self.equipment, self.parameter, self.unit = tag.equipment, tag.parameter, tag.unit
        self.label = f"{tag.label} ({tag.register} {tag.address})"
        self.decode = _decoder(tag, device)
        self.deadband = tag.deadband if tag.deadband is not None else device.deadband
        self.max_age = tag.max_age if tag.max_age is not None else device.max_age
        self.last_value: float | None = None
        self.last_sent = 0.0
        self.error_reason: str | None = None
        self.error_count = 0
        self.error_since: float | None = None


def _decoder(tag: ModbusTagConfig, device: ModbusDeviceConfig) -> Callable[[Sequence[Any], int], float]:
    """``decode(values, offset)`` → the tag's engineering value; values are a read's registers or bits."""
    if tag.register in BIT_TABLES:
        def decode_bit_table(bits: Sequence[Any], at: int) -> float:
            return 1.0 if bits[at] else 0.0
        return decode_bit_table
    order = tag.byte_order or device.byte_order
    scale, offset = tag.scale, tag.offset
    if tag.data_type == "bit":
        assert tag.bit is not None
        return bit_decoder(tag.bit, order)
    if tag.data_type == "string":
        assert tag.length is not None
        text, mapping = text_decoder(tag.length, order), tag.values
        if mapping is not None:
            def decode_mapped(registers: Sequence[Any], at: int) -> float:
                return text_to_number(text(registers, at), mapping)
            return decode_mapped

        def decode_text_number(registers: Sequence[Any], at: int) -> float:
            return text_to_number(text(registers, at), None) * scale + offset
        return decode_text_number
    assert tag.data_type is not None
    number = number_decoder(tag.data_type, order)
    if scale == 1.0 and offset == 0.0:
        return number

    def decode_scaled(registers: Sequence[Any], at: int) -> float:
        return number(registers, at) * scale + offset
    return decode_scaled


class Device:
    """One unit id on the link: its tags, its read plans per poll group, its state and its metrics."""

    def __init__(self, connector: str, config: ModbusDeviceConfig) -> None:
        self.config = config
        self.unit_id = config.unit_id
        self.label = config.label
        self.tags = [TagReader(tag, config) for tag in config.tags]
        groups: dict[str, list[TagSpan]] = {}
        for index, tag in enumerate(config.tags):
            groups.setdefault(tag.group, []).append(TagSpan(index, tag.register, tag.address, tag.register_count))
        self.plans: dict[str, list[ReadRequest]] = {
            group: plan_reads(spans, max_registers=config.max_registers_per_request,
                              max_bits=config.max_bits_per_request, max_gap=config.max_gap,
                              max_gap_bits=config.max_gap_bits)
            for group, spans in groups.items()}
        self.timeout = config.timeout
        self.up = False
        self.last_success: float | None = None
        self.last_answer: float | None = None       # monotonic: any answer, data or a Modbus exception
        self.timeouts_in_row = 0
        self.failing_since: float | None = None     # monotonic: the first of those timeouts
        self.backoff_until = 0.0                   # monotonic; 0 while not backing off
        self.backoff_delay = 0.0
        self.skipped_polls = 0
        self.requests = 0
        self.splits = 0
        self.errors: Tally[str] = Tally()
        self.m_requests = {table: REQUESTS.labels(connector, self.label, table)
                           for table in ("holding", "input", "coil", "discrete_input")}
        self.m_up = DEVICE_UP.labels(connector, self.label)
        self.m_last_success = LAST_SUCCESS.labels(connector, self.label)
        self.m_suppressed = SUPPRESSED.labels(connector, self.label)
        self.m_splits = SPLITS.labels(connector, self.label)
        self.m_skipped = SKIPPED.labels(connector, self.label)
        self.m_backing_off = BACKING_OFF.labels(connector, self.label)
        self.m_backing_off.set(0)
        self._m_errors: dict[str, Any] = {}
        self._connector = connector
        self.m_up.set(0)

    def count_errors(self, reason: str, tags: int) -> None:
        self.errors[reason] += tags
        child = self._m_errors.get(reason)
        if child is None:
            child = self._m_errors[reason] = ERRORS.labels(self._connector, self.label, reason)
        child.inc(tags)

    def set_up(self, up: bool) -> None:
        if up != self.up:
            self.up = up
            self.m_up.set(1 if up else 0)

    def answered(self) -> None:
        self.last_answer = time.monotonic()
        self.timeouts_in_row = 0
        self.failing_since = None

    def timed_out(self) -> None:
        self.timeouts_in_row += 1
        if self.failing_since is None:
            self.failing_since = time.monotonic()


class _ReadFailed(Exception):
    """A read got no data: ``reason`` is the metric label, ``code`` the Modbus exception code if any."""

    def __init__(self, reason: str, detail: str, code: int | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.code = code


class _CrcError(ModbusIOException):
    """An RTU answer whose CRC did not match: garbled on the wire."""


@dataclass(frozen=True)
class LinkHooks:
    """What the connector wants to hear from the client: the link dropping (``on_link(False)``), every frame
    sent or received (pymodbus' ``trace_packet``; the bus times the inter-frame gap from it), and RTU answers
    that failed their CRC check."""

    on_link: Callable[[bool], None]
    on_traffic: Callable[[bool, bytes], bytes]
    on_crc_error: Callable[[], None]


ClientFactory = Callable[[ModbusConfig, LinkHooks], Any]
"""Builds a pymodbus-compatible async client for the configured transport."""


class _CountingRtuFramer(FramerRTU):
    """pymodbus' RTU framer with two differences.  It drops a frame that fails its CRC check silently (the
    request then waits out its timeout); this one also tells the connector, which fails the read at once and
    counts it.  And a good frame consumes the whole receive buffer there, so when a unit's late answer and the
    next unit's answer arrive in one read, the second is lost; here a frame consumes only its own bytes, and
    pymodbus' frame handler skips the late one (wrong unit id) and finds the right one after it."""

    def __init__(self, decoder: Any, on_crc_error: Callable[[], None]) -> None:
        super().__init__(decoder)
        self._on_crc_error = on_crc_error

    def decode(self, data: bytes) -> tuple[int, int, int, bytes]:
        length = len(data)
        for start in range(length):
            if length - start < self.MIN_SIZE:
                return 0, 0, 0, self.EMPTY
            dev_id = int(data[start])
            if not (pdu_class := self.decoder.lookupPduClass(data[start:])):
                continue
            if not (size := pdu_class.calculateRtuFrameSize(data[start:])) or length < start + size:
                return 0, dev_id, 0, self.EMPTY       # wait for the rest of the frame
            crc_at = start + size - 2
            if not FramerRTU.check_CRC(data[start:crc_at], int.from_bytes(data[crc_at:crc_at + 2], "big")):
                self._on_crc_error()
                return start + size, 0, 0, self.EMPTY
            return start + size, dev_id, 0, data[start + 1:crc_at]
        return 0, 0, 0, self.EMPTY


def modbus_client(config: ModbusConfig, hooks: LinkHooks) -> Any:
    """pymodbus' asyncio client for the transport, with its own reconnection and retries off: the supervisor
    reconnects and the poller's next tick is the retry."""
    from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
    from pymodbus.framer import FramerType

    common: dict[str, Any] = {"timeout": config.timeout, "retries": 0, "reconnect_delay": 0, "name": config.name,
                              "trace_connect": hooks.on_link, "trace_packet": hooks.on_traffic}
    client: Any
    if config.transport == "tcp":
        return AsyncModbusTcpClient(config.host or "", port=config.port, **common)
    if config.transport == "rtu-over-tcp":
        client = AsyncModbusTcpClient(config.host or "", port=config.port, framer=FramerType.RTU, **common)
    else:
        line = config.serial
        assert line is not None
        client = AsyncModbusSerialClient(line.port, framer=FramerType.RTU, baudrate=line.baudrate,
                                         bytesize=line.bytesize, parity=line.parity, stopbits=line.stopbits,
                                         handle_local_echo=line.handle_local_echo, **common)
    client.ctx.framer = _CountingRtuFramer(client.ctx.framer.decoder, hooks.on_crc_error)
    return client


tcp_client = modbus_client
"""The former name (Modbus TCP was the only transport)."""


def _set_answer_timeout(client: Any, seconds: float) -> None:
    """pymodbus waits ``comm_params.timeout_connect`` for each answer; a unit's own timeout is set per request
    (under the bus lock, so no other request is waiting meanwhile)."""
    params = getattr(getattr(client, "ctx", None), "comm_params", None)
    if params is not None:
        params.timeout_connect = seconds


class ModbusConnector:
    """Polls every device on one Modbus link."""

    def __init__(self, config: ModbusConfig, client_factory: ClientFactory | None = None) -> None:
        self.name = config.name
        self._config = config
        self._client_factory = client_factory or modbus_client
        self._client: Any = None
        self._bus = asyncio.Lock()
        self._gap = config.serial.frame_gap if config.transport == "rtu" and config.serial else 0.0
        self._last_traffic = 0.0
        self._in_flight = False
        self._backoff = config.unit_backoff
        self._link_lost = asyncio.Event()
        self._links = 0
        self.devices = [Device(config.name, device) for device in config.devices]
        self._groups: dict[str, tuple[Device, str]] = {
            f"{device.label}/{group}": (device, group) for device in self.devices for group in device.plans}
        self._intervals = config.group_intervals()
        self._repeats = ProblemLog(log)

    # --- the connector contract ------------------------------------------------------------------------

    async def connect(self) -> None:
        await self.close()
        self._link_lost.clear()
        self._links += 1
        link = self._links

        def on_link(connected: bool) -> None:
            if not connected and link == self._links:   # a client closed earlier may not end this link
                self._link_lost.set()

        def on_traffic(sending: bool, data: bytes) -> bytes:
            self._last_traffic = time.monotonic()
            return data

        def on_crc_error() -> None:
            pending = getattr(getattr(client, "ctx", None), "response_future", None)
            if self._in_flight and pending is not None and not pending.done():
                pending.set_exception(_CrcError("the answer failed its CRC check"))

        client = self._client_factory(self._config, LinkHooks(on_link, on_traffic, on_crc_error))
        self._client = client
        if not await client.connect():
            raise ConnectionLost(f"cannot connect to Modbus device at {self._config.endpoint}")
        for device in self.devices:  # a reconnected device reports every value afresh, and gets a fresh chance
            for tag in device.tags:
                tag.last_value = None
            device.backoff_until = device.backoff_delay = 0.0
            device.timeouts_in_row, device.failing_since = 0, None
            device.m_backing_off.set(0)

    async def run(self, sink: ReadingSink) -> None:
        total_reads = sum(len(plan) for device in self.devices for plan in device.plans.values())
        schedules = []
        for key, (_, group) in self._groups.items():
            interval = self._intervals[group]
            # a safety net only: every request already has its own timeout
            per_read = self._config.longest_timeout + self._gap
            schedules.append(PollSchedule(key, interval, max(interval, per_read * (total_reads + 1))))
        poller = asyncio.create_task(Poller(self.name, schedules, self._poll, sink, on_error=self._poll_failed).run(),
                                     name=f"modbus-{self.name}")
        lost = asyncio.create_task(self._link_lost.wait())
        try:
            await asyncio.wait({poller, lost}, return_when=asyncio.FIRST_COMPLETED)
            if poller.done():
                poller.result()  # raises what ended it (ConnectionLost, a bug)
                raise ConnectionLost("the Modbus poller stopped")
            raise ConnectionLost(f"the Modbus link to {self._config.endpoint} was closed "
                                 "(by the device or the port, or after 5 requests in a row went unanswered)")
        finally:
            for task in (poller, lost):
                task.cancel()
            await self._stop_poller(poller)
            await asyncio.gather(poller, lost, return_exceptions=True)

    async def _stop_poller(self, poller: asyncio.Task[None]) -> None:
        """Wait until the poller has stopped.  Python 3.11's asyncio.wait_for (which the poller uses around
        each poll) swallows a cancellation that lands just as the poll completes; that group's task then
        polls on, and its task group never finishes.  Such group tasks are cancelled again here."""
        names = {f"poll-{self.name}-{key}" for key in self._groups}   # as the poller names its tasks
        while True:
            await asyncio.wait({poller}, timeout=0.2)
            if poller.done():
                return
            for task in asyncio.all_tasks():
                if task.get_name() in names and not task.done():
                    task.cancel()

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()
        for device in self.devices:
            device.set_up(False)

    # --- polling -------------------------------------------------------------------------------------

    def _poll_failed(self, group: str, exc: Exception) -> None:
        self._repeats.failed(("poll", group), "modbus poll failed", connector=self.name, group=group,
                             error=f"{type(exc).__name__}: {exc}")

    async def _poll(self, key: str) -> list[Reading]:
        device, group = self._groups[key]
        plan = device.plans[group]
        readings: list[Reading] = []
        if device.backoff_until:
            if time.monotonic() < device.backoff_until:
                device.skipped_polls += 1
                device.m_skipped.inc()
                return readings
            probing = True     # the back-off is over: one read asks whether the unit is back
        else:
            probing = False
        reads_before = len(plan)
        refused: list[str] = []
        index = 0
        while index < len(plan):
            request = plan[index]
            try:
                values = await self._read(device, request)
            except _ReadFailed as failure:
                halves = split(request) if failure.code in SPLIT_ON else None
                if halves is not None:
                    plan[index:index + 1] = halves  # remembered: later polls read the halves directly
                    device.splits += 1
                    device.m_splits.inc()
                    refused.append(f"{request} ({failure.reason})")
                    continue
                self._read_failed(device, request, failure)
                if failure.reason == "timeout":
                    # a unit that did not answer one read will not answer the next: leave the bus to the others
                    for rest in plan[index + 1:]:
                        self._read_failed(device, rest, failure, log_it=False)
                    self._after_timeout(device, probing)
                    break
                index += 1
                continue
            if probing:
                self._backoff_ended(device)
                probing = False
            self._decode(device, request, values, readings)
            index += 1
        if refused:
            log.info("device refused merged reads; reading in smaller parts from now on", connector=self.name,
                     device=device.label, group=group, refused=refused[:10], reads_per_poll_before=reads_before,
                     reads_per_poll_now=len(plan))
        return readings

    def _after_timeout(self, device: Device, probing: bool) -> None:
        """Back off a unit that keeps timing out, but only while another unit on the link answers: when none
        does, the link itself is the problem (and on TCP pymodbus closes it, so the supervisor reconnects)."""
        now = time.monotonic()
        settings = self._backoff
        if probing:
            device.backoff_delay = min(device.backoff_delay * 2, settings.max)
        elif device.timeouts_in_row >= settings.after and self._others_answer(device):
            device.backoff_delay = settings.initial
            device.m_backing_off.set(1)
        else:
            return
        device.backoff_until = now + device.backoff_delay
        self._repeats.failed(("backoff", device.label), "modbus unit not answering; skipping its polls",
                             connector=self.name, device=device.label, unit_id=device.unit_id,
                             timeouts_in_row=device.timeouts_in_row, retry_in_s=round(device.backoff_delay, 3))

    def _others_answer(self, device: Device) -> bool:
        since = device.failing_since or 0.0
        return any(other is not device and other.last_answer is not None and other.last_answer >= since
                   for other in self.devices)

    def _backoff_ended(self, device: Device) -> None:
        device.backoff_until = device.backoff_delay = 0.0
        device.m_backing_off.set(0)
        self._repeats.recovered(("backoff", device.label), "modbus unit answering again; polling it again",
                                connector=self.name, device=device.label, unit_id=device.unit_id,
                                skipped_polls=device.skipped_polls)

    async def _read(self, device: Device, request: ReadRequest) -> Sequence[Any]:
        async with self._bus:
            if self._gap:
                quiet = self._last_traffic + self._gap - time.monotonic()
                if quiet > 0:
                    await asyncio.sleep(quiet)
            self._in_flight = True
            try:
                return await self._request(device, request)
            finally:
                self._in_flight = False

    async def _request(self, device: Device, request: ReadRequest) -> Sequence[Any]:
        client = self._client
        if client is None or not client.connected:
            raise ConnectionLost(f"the Modbus link to {self._config.endpoint} is down")
        timeout = device.timeout or self._config.timeout
        _set_answer_timeout(client, timeout)
        table = request.table
        if table == "holding":
            call = client.read_holding_registers
        elif table == "input":
            call = client.read_input_registers
        elif table == "coil":
            call = client.read_coils
        else:
            call = client.read_discrete_inputs
        device.requests += 1
        device.m_requests[table].inc()
        try:
            response = await call(request.address, count=request.count, device_id=device.unit_id)
        except ConnectionException as exc:
            raise ConnectionLost(str(exc)) from exc
        except _CrcError as exc:
            raise _ReadFailed("crc_error", str(exc)) from None
        except ModbusIOException as exc:
            if not client.connected:
                raise ConnectionLost(f"the Modbus link to {self._config.endpoint} was closed") from exc
            device.set_up(False)
            no_answer = "No response" in str(exc)
            if no_answer:
                device.timed_out()
            raise _ReadFailed("timeout" if no_answer else "protocol_error",
                              f"no answer within {timeout:g} s" if no_answer else str(exc)) from None
        device.answered()
        if response.isError():
            code = int(getattr(response, "exception_code", 0))
            reason = EXCEPTION_REASONS.get(code, f"exception_{code}")
            device.set_up(code not in GATEWAY_CODES)   # a gateway answering for a silent device: still down
            raise _ReadFailed(reason, f"Modbus exception {code} ({reason})", code)
        device.set_up(True)
        device.last_success = time.time()
        device.m_last_success.set(device.last_success)
        values: Sequence[Any] = response.bits if table in BIT_TABLES else response.registers
        if len(values) < request.count:
            raise _ReadFailed("short_answer", f"asked for {request.count} values, got {len(values)}", SHORT_ANSWER)
        if len(values) > (-(-request.count // 8) * 8 if table in BIT_TABLES else request.count):
            # a late answer to an earlier read (RTU frames carry no transaction id): never decode it as this one
            raise _ReadFailed("protocol_error", f"asked for {request.count} values, got {len(values)}")
        # failure state is per read: another read of the device succeeding says nothing about this one
        self._repeats.recovered(("read", device.label, str(request)), "modbus read answering again",
                                connector=self.name, device=device.label, read=str(request))
        return values

    def _read_failed(self, device: Device, request: ReadRequest, failure: _ReadFailed, log_it: bool = True) -> None:
        tags = [device.tags[span.tag] for span in request.tags]
        device.count_errors(failure.reason, len(tags))
        for tag in tags:
            self._tag_failed(tag, failure.reason)
        if not log_it:
            return
        if failure.code not in (None, *GATEWAY_CODES) and len(tags) == 1:  # the answer is about this tag
            self._repeats.failed(("tag", device.label, tags[0].label, failure.reason), "modbus tag read failed",
                                 connector=self.name, device=device.label, tag=tags[0].label,
                                 reason=failure.reason, error=str(failure))
        else:  # the device did not answer, or refused a read that cannot be asked in parts
            self._repeats.failed(("read", device.label, str(request)), "modbus device read failed",
                                 connector=self.name,
                                 device=device.label, read=str(request), tags=len(tags), reason=failure.reason,
                                 error=str(failure))

    def _tag_failed(self, tag: TagReader, reason: str) -> None:
        if tag.error_reason is None:
            tag.error_since = time.time()
        tag.error_reason = reason
        tag.error_count += 1

    def _decode(self, device: Device, request: ReadRequest, values: Sequence[Any], out: list[Reading]) -> None:
        stamp = now_us()
        clock = time.monotonic()
        start = request.address
        tags = device.tags
        suppressed = 0
        for span in request.tags:
            tag = tags[span.tag]
            try:
                value = tag.decode(values, span.address - start)
            except DecodeError as exc:
                device.count_errors(exc.reason, 1)
                self._tag_failed(tag, exc.reason)
                self._repeats.failed(("tag", device.label, tag.label, exc.reason), "modbus tag value unusable",
                                     connector=self.name, device=device.label, tag=tag.label, reason=exc.reason,
                                     error=str(exc))
                continue
            if tag.error_reason is not None:
                self._repeats.recovered(("tag", device.label, tag.label, tag.error_reason), "modbus tag recovered",
                                        connector=self.name, device=device.label, tag=tag.label,
                                        failed_reads=tag.error_count)
                tag.error_reason, tag.error_since, tag.error_count = None, None, 0
            deadband = tag.deadband
            if deadband is not None:
                last = tag.last_value
                if last is not None and abs(value - last) <= deadband and clock - tag.last_sent < tag.max_age:
                    suppressed += 1
                    continue
                tag.last_value, tag.last_sent = value, clock
            out.append(Reading(tag.equipment, tag.parameter, value, stamp, tag.unit))
        if suppressed:
            device.m_suppressed.inc(suppressed)

    # --- state for operators -------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Per device: up, last success, requests, errors by reason, reads per poll, failing tags."""
        return {"endpoint": self._config.endpoint, "link_up": bool(self._client and self._client.connected),
                "devices": {device.label: {
                    "unit_id": device.unit_id,
                    "up": device.up,
                    "timeouts_in_row": device.timeouts_in_row,
                    "backing_off_for": (round(max(0.0, device.backoff_until - time.monotonic()), 3)
                                        if device.backoff_until else None),
                    "skipped_polls": device.skipped_polls,
                    "last_success": device.last_success,
                    "requests": device.requests,
                    "errors": dict(device.errors),
                    "split_reads": device.splits,
                    "reads_per_poll": {group: len(plan) for group, plan in device.plans.items()},
                    "failing_tags": {tag.label: {"reason": tag.error_reason, "failed_reads": tag.error_count,
                                                 "since": tag.error_since}
                                     for tag in device.tags if tag.error_reason is not None},
                } for device in self.devices}}
