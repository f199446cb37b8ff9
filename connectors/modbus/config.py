"""The Modbus connector's configuration: one link (a TCP endpoint, a serial line, or a gateway passing RTU frames
over TCP), the devices behind it (unit ids), and their tags.

Everything is checked at load, before a socket or serial port opens: register types against data types, string
lengths, bit numbers, byte orders, addresses that would run past 65535, poll groups that do not exist, request
limits beyond what the Modbus specification allows, duplicate unit ids, unit ids a serial line cannot address,
serial settings (baud rate, byte size, parity, stop bits, inter-frame gap) and back-off settings.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Literal

from pydantic import Field, field_validator, model_validator

from connectors.modbus.decoding import ByteOrder, DataType, register_count
from ingestor.contract import ConnectorConfig, Duration, StrictModel, TagConfig, TagRef

RegisterType = Literal["holding", "input", "coil", "discrete_input"]
BIT_TABLES = ("coil", "discrete_input")

MAX_REGISTERS_PER_READ = 125
"""The Modbus specification's limit for one read of holding or input registers (function codes 3 and 4)."""
MAX_BITS_PER_READ = 2000
"""The limit for one read of coils or discrete inputs (function codes 1 and 2)."""
NAME_PATTERN = r"^[A-Za-z0-9_.\-]+$"
DEFAULT_GROUP = "default"


with warnings.catch_warnings():
    # "register" is the word operators use; on a model class it shadows ABCMeta.register, which nothing here uses
    warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)

    class ModbusTagConfig(TagConfig):
        """One value read from a device."""

        register: RegisterType = Field(description="holding, input, coil or discrete_input")
        address: int = Field(ge=0, le=65535, description="protocol address, 0-based (register 40001 is holding 0)")
        data_type: DataType | None = Field(
            default=None, description="int16 … float64, string (with length) or bit (with bit); none for coils")
        length: int | None = Field(default=None, ge=1, le=MAX_REGISTERS_PER_READ,
                                   description="registers of a string (two characters each)")
        bit: int | None = Field(default=None, ge=0, le=15, description="bit of the register, 0 = least significant")
        byte_order: ByteOrder | None = Field(
            default=None, description="ABCD, CDAB, BADC or DCBA; default: the device's")
        scale: float = Field(default=1.0, description="value = raw * scale + offset")
        offset: float = 0.0
        values: dict[str, float] | None = Field(
            default=None, description="for a string tag: text → number stored (e.g. product codes)")
        group: str = Field(default=DEFAULT_GROUP, description="poll group (its interval is in poll_groups)")
        deadband: float | None = Field(
            default=None, ge=0, description="report by exception: send only changes larger than this (0: any change)")
        max_age: Duration | None = Field(default=None, gt=0, description="with a deadband: send at least this often")

        @field_validator("scale")
        @classmethod
        def _nonzero(cls, value: float) -> float:
            if value == 0:
                raise ValueError("scale 0 would turn every value into the offset")
            return value

        @model_validator(mode="after")
        def _consistent(self) -> ModbusTagConfig:
            scaled = self.scale != 1.0 or self.offset != 0.0
            if self.register in BIT_TABLES:
                extra = [name for name in ("data_type", "length", "bit", "byte_order", "values")
                         if getattr(self, name) is not None]
                if extra:
                    raise ValueError(f"a {self.register} is a single bit: leave out {', '.join(extra)}")
                if scaled:
                    raise ValueError(f"a {self.register} is a single bit (0 or 1): scale and offset do not apply")
                return self
            if self.data_type is None:
                raise ValueError(f"a {self.register} register tag needs a data_type: int16, uint16, int32, uint32, "
                                 "int64, uint64, float32, float64, string (with length) or bit (with bit)")
            if (self.data_type == "string") != (self.length is not None):
                raise ValueError("length (registers) is required for a string and only for a string")
            if (self.data_type == "bit") != (self.bit is not None):
                raise ValueError("bit (0-15) is required for data_type bit and only for it")
            if self.values is not None and self.data_type != "string":
                raise ValueError("values (a text → number map) only applies to string tags")
            if scaled and (self.data_type == "bit" or self.values is not None):
                raise ValueError("scale and offset do not apply to bits or to strings with a values map")
            if self.address + self.register_count > 65536:
                raise ValueError(f"address {self.address} + {self.register_count} registers runs past 65535")
            return self

        @property
        def register_count(self) -> int:
            """Registers (or bits, for coils and discrete inputs) this tag occupies."""
            if self.register in BIT_TABLES or self.data_type is None:
                return 1
            return register_count(self.data_type, self.length)

        @property
        def label(self) -> str:
            """How logs name the tag."""
            return f"{self.equipment}.{self.parameter}"


class ModbusDeviceConfig(StrictModel):
    """One Modbus device (a unit id) on the link: its decoding defaults, request limits and tags."""

    unit_id: int = Field(default=1, ge=0, le=255, description="Modbus unit (slave) id; 1-247, 0 or 255 over TCP")
    name: str | None = Field(default=None, min_length=1, max_length=60, pattern=NAME_PATTERN,
                             description="names the device in metrics and logs (default unit-<id>)")
    byte_order: ByteOrder = Field(default=ByteOrder.ABCD, description="default for tags that give none")
    max_registers_per_request: int = Field(default=MAX_REGISTERS_PER_READ, ge=1, le=MAX_REGISTERS_PER_READ)
    max_bits_per_request: int = Field(default=MAX_BITS_PER_READ, ge=1, le=MAX_BITS_PER_READ)
    max_gap: int = Field(default=16, ge=0, le=MAX_REGISTERS_PER_READ,
                         description="unused registers one merged read may span between tags")
    max_gap_bits: int = Field(default=256, ge=0, le=MAX_BITS_PER_READ,
                              description="unused coils/discrete inputs one merged read may span")
    timeout: Duration | None = Field(default=None, gt=0,
                                     description="how long to wait for this unit's answers (default: the link's)")
    deadband: float | None = Field(default=None, ge=0, description="default deadband of the device's tags")
    max_age: Duration = Field(default=60.0, gt=0, description="default heartbeat of tags with a deadband")
    tags: list[ModbusTagConfig] = Field(min_length=1)

    @property
    def label(self) -> str:
        return self.name or f"unit-{self.unit_id}"

    @model_validator(mode="after")
    def _fits(self) -> ModbusDeviceConfig:
        for position, tag in enumerate(self.tags):
            if tag.max_age is not None and tag.deadband is None and self.deadband is None:
                raise ValueError(f"tags[{position}] ({tag.label}): max_age is the heartbeat of report by exception "
                                 "and needs a deadband (on the tag or the device)")
            if tag.register not in BIT_TABLES and tag.register_count > self.max_registers_per_request:
                raise ValueError(f"tags[{position}] ({tag.label}): {tag.register_count} registers do not fit in "
                                 f"one read (max_registers_per_request {self.max_registers_per_request})")
        return self


class SerialConfig(StrictModel):
    """A serial line (RS-485 or RS-232) for Modbus RTU."""

    port: str = Field(min_length=1, description="device path, e.g. /dev/ttyUSB0 or /dev/serial/by-id/…")
    baudrate: int = Field(default=19200, gt=0, le=4_000_000)
    bytesize: Literal[7, 8] = 8
    parity: Literal["N", "E", "O"] = "E"
    stopbits: Literal[1, 2] = 1
    inter_frame_gap: Duration | None = Field(
        default=None, ge=0, le=1.0,
        description="silence kept between an answer and the next request (default 3.5 characters; 1.75 ms "
                    "above 19200 baud, as the specification says)")
    handle_local_echo: bool = Field(default=False, description="drop the echo of our own request (some "
                                                               "RS-485 adapters receive what they send)")

    @property
    def bits_per_character(self) -> int:
        """Start bit, data bits, parity bit, stop bits: 11 for 8E1 and 8N2, the two framings the spec allows."""
        return 1 + self.bytesize + (0 if self.parity == "N" else 1) + self.stopbits

    @property
    def character_time(self) -> float:
        return self.bits_per_character / self.baudrate

    @property
    def frame_gap(self) -> float:
        """The silence between frames, in seconds."""
        if self.inter_frame_gap is not None:
            return self.inter_frame_gap
        return 3.5 * self.character_time if self.baudrate <= 19200 else 0.00175


class UnitBackoff(StrictModel):
    """How a unit that stopped answering is kept from starving the others on its link."""

    after: int = Field(default=3, ge=1, le=1000,
                       description="timeouts in a row before the unit is skipped")
    initial: Duration = Field(default=5.0, gt=0, description="first back-off: the unit's polls are skipped this long")
    max: Duration = Field(default=60.0, gt=0, description="longest back-off (it doubles after each failed probe)")

    @model_validator(mode="after")
    def _ordered(self) -> UnitBackoff:
        if self.max < self.initial:
            raise ValueError("max must be at least initial")
        return self


class ModbusConfig(ConnectorConfig):
    """``type: modbus``: one Modbus link and the devices (unit ids) read over it."""

    type: Literal["modbus"]
    transport: Literal["tcp", "rtu", "rtu-over-tcp"] = Field(
        default="tcp", description="tcp (Modbus TCP), rtu (a serial line), rtu-over-tcp (a gateway passing RTU "
                                   "frames over TCP)")
    host: str | None = Field(default=None, min_length=1,
                             description="device or gateway address, for tcp and rtu-over-tcp")
    port: int = Field(default=502, ge=1, le=65535)
    serial: SerialConfig | None = Field(default=None, description="the serial line, for rtu")
    timeout: Duration = Field(default=1.0, gt=0, description="connect timeout and the wait for each answer")
    unit_backoff: UnitBackoff = Field(default_factory=UnitBackoff,
                                      description="skipping a unit that stopped answering while others do")
    interval: Duration = Field(default=1.0, gt=0, description="poll interval of the default group")
    poll_groups: dict[str, Duration] = Field(
        default_factory=dict, description="more poll groups: name → interval (tags choose one with group:)")
    devices: list[ModbusDeviceConfig] = Field(min_length=1)

    @field_validator("poll_groups")
    @classmethod
    def _groups(cls, value: dict[str, float]) -> dict[str, float]:
        for name, interval in value.items():
            if name == DEFAULT_GROUP:
                raise ValueError(f"'{DEFAULT_GROUP}' is the group of tags without one; set its interval with interval:")
            if not name or not all(c.isalnum() or c in "_.-" for c in name):
                raise ValueError(f"group name {name!r}: use letters, digits, '_', '.' and '-'")
            if interval <= 0:
                raise ValueError(f"group {name}: the interval must be positive")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ModbusConfig:
        if self.transport in ("tcp", "rtu-over-tcp"):
            if self.host is None:
                raise ValueError(f"transport {self.transport} needs host (the device's or gateway's address)")
            if self.serial is not None:
                raise ValueError("serial settings only apply to transport rtu")
        else:
            if self.host is not None:
                raise ValueError("host only applies to transports tcp and rtu-over-tcp; a serial line has "
                                 "serial: {port: …}")
            if self.serial is None:
                raise ValueError("transport rtu needs serial: {port: /dev/ttyUSB0, baudrate: …, parity: …}")
        units: dict[int, int] = {}
        names: dict[str, int] = {}
        groups = self.group_intervals()
        for index, device in enumerate(self.devices):
            if self.transport != "tcp" and not 1 <= device.unit_id <= 247:
                raise ValueError(f"devices[{index}]: unit_id {device.unit_id}: an RTU unit id is 1-247 (0 is the "
                                 "broadcast address nobody answers, 248-255 are reserved)")
            if device.unit_id in units:
                raise ValueError(f"devices[{index}]: unit_id {device.unit_id} is already used by "
                                 f"devices[{units[device.unit_id]}]")
            units[device.unit_id] = index
            if device.label in names:
                raise ValueError(f"devices[{index}]: device name {device.label!r} is already used by "
                                 f"devices[{names[device.label]}]")
            names[device.label] = index
            for position, tag in enumerate(device.tags):
                if tag.group not in groups:
                    known = ", ".join(sorted(groups))
                    raise ValueError(f"devices[{index}].tags[{position}]: unknown poll group {tag.group!r} "
                                     f"(known: {known}; define more in poll_groups)")
        return self

    def group_intervals(self) -> dict[str, float]:
        """Every poll group and its interval, the default group included."""
        return {DEFAULT_GROUP: self.interval, **self.poll_groups}

    @property
    def endpoint(self) -> str:
        return self.serial.port if self.serial is not None else f"{self.host}:{self.port}"

    @property
    def longest_timeout(self) -> float:
        return max([self.timeout, *(d.timeout for d in self.devices if d.timeout is not None)])

    def tag_refs(self) -> Iterable[TagRef]:
        for d, device in enumerate(self.devices):
            for t, tag in enumerate(device.tags):
                yield TagRef(("devices", d, "tags", t), tag.equipment, tag.parameter, tag.unit)

