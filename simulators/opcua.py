"""An OPC UA server that plays a few machines: the tests' fixture and the demo's source.

``python -m simulators.opcua`` serves ``opc.tcp://127.0.0.1:4840`` with three machines (PRESS-01…PRESS-03) of
the shared machine model (:mod:`simulators.machine`), advanced at wall-clock time times ``--speed``.  The
address space::

    Objects/Plant                              folder          ns=2;s=Plant
    Objects/Plant/PRESS-01                     object          ns=2;s=PRESS-01
    Objects/Plant/PRESS-01/parts_total         UInt32          ns=2;s=PRESS-01.parts_total
    Objects/Plant/PRESS-01/parts_good          UInt32          ns=2;s=PRESS-01.parts_good
    Objects/Plant/PRESS-01/state               Int32           1 running, 2 planned stop, 3 unplanned stop
    Objects/Plant/PRESS-01/reason              Int32           downtime reason code (simulators.machine)
    Objects/Plant/PRESS-01/product             Int32           product code
    Objects/Plant/PRESS-01/temperature         Double          degC   (EngineeringUnits property)
    Objects/Plant/PRESS-01/vibration           Double          mm/s
    Objects/Plant/PRESS-01/current             Double          A
    Objects/Plant/PRESS-01/running             Boolean         state == 1 (a boolean tag)
    Objects/Plant/PRESS-01/state_name          String          RUNNING, PLANNED_STOP, UNPLANNED_STOP
    Objects/Plant/EXTRA-001/tag-000            Double          --extra-tags: blocks of 100 tags that all
                                                               change every --interval (load tests)

The namespace URI is ``urn:ingestor:simulator`` (index 2).  Every value carries a source timestamp.

``--trace FILE --speed X`` replays a recorded trace (CSV or JSON lines: timestamp, node, value, with node =
``MACHINE.parameter``) instead of running the model; ``--security`` serves only signed and encrypted
endpoints (Basic256Sha256, Aes128Sha256RsaOaep, Aes256Sha256RsaPss) with a self-signed certificate generated
on first start in ``--pki`` (its path is printed so a client can pin it); ``--user NAME:PASSWORD`` requires
a user name and password instead of anonymous access.

asyncua's server deep-copies every written value once per monitored item (so that a caller mutating the
value later cannot change what was queued).  This simulator always writes fresh, never-mutated values, so
while it runs it keeps a reference instead of a copy: that is what lets one Python process serve 10,000
changing tags per second.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import signal
import socket
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asyncua import Server, ua
from asyncua.common.utils import ServiceError
from asyncua.crypto import cert_gen
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.server import monitored_item_service
from cryptography.x509.oid import ExtendedKeyUsageOID

from simulators.machine import PARAMETERS, PLANNED_STOP, RUNNING, UNITS, Machine, default_machines
from simulators.trace import TracePoint, load_trace, replay

log = logging.getLogger("simulators.opcua")

NAMESPACE_URI = "urn:ingestor:simulator"
APPLICATION_URI = "urn:ingestor:opcua-simulator"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4840
DEFAULT_PKI = Path.home() / ".cache" / "ingestor" / "opcua-simulator"
EXTRA_BLOCK = 100
"""Extra tags are grouped in objects of this many variables (asyncua adds nodes in time linear in the
number of siblings, so one folder of 10,000 variables would take minutes to build)."""

STATE_NAMES = {RUNNING: "RUNNING", PLANNED_STOP: "PLANNED_STOP"}
DERIVED = ("running", "state_name")
"""Variables computed from the model for each machine, beside the model's own parameters."""

_VARIANT = {
    "parts_total": ua.VariantType.UInt32, "parts_good": ua.VariantType.UInt32, "state": ua.VariantType.Int32,
    "reason": ua.VariantType.Int32, "product": ua.VariantType.Int32, "temperature": ua.VariantType.Double,
    "vibration": ua.VariantType.Double, "current": ua.VariantType.Double, "running": ua.VariantType.Boolean,
    "state_name": ua.VariantType.String,
}

SECURE_POLICIES = [
    ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    ua.SecurityPolicyType.Basic256Sha256_Sign,
    ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt,
    ua.SecurityPolicyType.Aes128Sha256RsaOaep_Sign,
    ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt,
    ua.SecurityPolicyType.Aes256Sha256RsaPss_Sign,
]


_GOOD = ua.StatusCode()    # StatusCode is immutable in use: one instance serves every good value


def node_id(machine: str, parameter: str) -> str:
    """The string node id of one machine parameter: ``ns=2;s=PRESS-01.temperature``."""
    return f"ns=2;s={machine}.{parameter}"


def extra_tag_names(count: int) -> list[tuple[str, str]]:
    """(object, variable) names of ``count`` extra tags: ``EXTRA-001``/``tag-000`` …"""
    return [(f"EXTRA-{index // EXTRA_BLOCK + 1:03d}", f"tag-{index % EXTRA_BLOCK:03d}") for index in range(count)]


def _value(parameter: str, machine: Machine) -> Any:
    if parameter == "running":
        return machine.state == RUNNING
    if parameter == "state_name":
        return STATE_NAMES.get(machine.state, "UNPLANNED_STOP")
    return machine.values()[parameter]


_ORIGINAL_SET_VALUE = monitored_item_service.MonitoredItemValues.set_current_datavalue
_sharing_servers = 0


def _set_current_datavalue_by_reference(self: Any, value: ua.DataValue) -> None:
    self.old_dvalue = self.current_dvalue
    self.current_dvalue = value


@contextlib.contextmanager
def _values_shared_with_monitored_items() -> Any:
    """Keep a reference instead of a deep copy of each written value in asyncua's monitored items, while at
    least one simulator runs in this process."""
    global _sharing_servers
    values = monitored_item_service.MonitoredItemValues
    _sharing_servers += 1
    values.set_current_datavalue = _set_current_datavalue_by_reference  # type: ignore[method-assign]
    try:
        yield
    finally:
        _sharing_servers -= 1
        if not _sharing_servers:
            values.set_current_datavalue = _ORIGINAL_SET_VALUE  # type: ignore[method-assign]


def _has_certificates(directory: Path) -> bool:
    return any(p.suffix.lower() in (".der", ".pem") for p in directory.iterdir())


class _Users:
    """asyncua user manager: these user names and passwords, nobody else (no anonymous access)."""

    def __init__(self, users: dict[str, str]) -> None:
        self._users = users

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:
        if username is not None and self._users.get(username) == password:
            return User(role=UserRole.User, name=username)
        return None


@dataclass
class SimulatorOptions:
    """Everything the command line can set."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    machines: int = 3
    extra_tags: int = 0
    interval: float = 1.0          # seconds between model updates (wall clock)
    speed: float = 1.0             # model seconds per wall-clock second; trace replay speed
    trace: Path | None = None
    loop_trace: bool = True
    security: bool = False
    pki: Path = DEFAULT_PKI
    client_trust: Path | None = None    # only clients whose certificate (or CA) is here may connect
    users: dict[str, str] = field(default_factory=dict)
    seed: int = 1


class OpcUaSimulator:
    """The server.  ``start()``/``stop()`` may be repeated (a power cycle): the machines keep their state."""

    def __init__(self, options: SimulatorOptions | None = None, machines: list[Machine] | None = None) -> None:
        self.options = options or SimulatorOptions()
        self.machines = machines or default_machines(self.options.machines, seed=self.options.seed)
        self._trace: list[TracePoint] = load_trace(self.options.trace) if self.options.trace else []
        known = {m.code for m in self.machines}
        for code in dict.fromkeys(p.machine for p in self._trace):
            if code not in known:
                self.machines.append(Machine(code))
                known.add(code)
        self._by_code = {m.code: m for m in self.machines}
        self._extra = extra_tag_names(self.options.extra_tags)
        self._server: Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._sharing: contextlib.ExitStack | None = None
        self._nodes: dict[tuple[str, str], ua.NodeId] = {}
        self._extra_nodes: list[ua.NodeId] = []
        self._last: dict[tuple[str, str], Any] = {}
        self._forced: dict[tuple[str, str], ua.StatusCode] = {}
        self.extra_tick = 0
        self.ticks_skipped = 0
        self.writes = 0

    # --- lifecycle ---------------------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self.options.host}:{self.options.port}"

    @property
    def certificate_path(self) -> Path:
        return self.options.pki / "server-cert.der"

    @property
    def private_key_path(self) -> Path:
        return self.options.pki / "server-key.pem"

    @property
    def running(self) -> bool:
        return self._server is not None

    async def __aenter__(self) -> OpcUaSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        if self._server is not None:
            return
        options = self.options
        server = Server(user_manager=_Users(options.users) if options.users else None)
        await server.init()
        server.set_endpoint(f"{self.endpoint}/")
        server.set_server_name("ingestor OPC UA simulator")
        await server.set_application_uri(APPLICATION_URI)
        if options.users:
            server.set_identity_tokens([ua.UserNameIdentityToken])
        if options.security:
            await self._load_certificate(server)
            server.set_security_policy(SECURE_POLICIES)
            if options.client_trust is not None:
                server.set_certificate_validator(await self._client_validator(options.client_trust))
        else:
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        await self._build_address_space(server)
        self._sharing = contextlib.ExitStack()
        self._sharing.enter_context(_values_shared_with_monitored_items())
        try:
            await server.start()
        except BaseException:
            self._sharing.close()
            raise
        self._server = server
        self._task = asyncio.create_task(self._run(), name="opcua-simulator")
        log.info("OPC UA simulator serving %s (%d machines, %d extra tags%s)", self.endpoint, len(self.machines),
                 len(self._extra), ", security: Sign/SignAndEncrypt" if options.security else "")

    async def stop(self) -> None:
        """Stop serving at once: open connections are dropped, as in a power cut."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        server, self._server = self._server, None
        if server is not None:
            await server.stop()
        if self._sharing is not None:
            self._sharing.close()
            self._sharing = None

    async def serve_forever(self) -> None:
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    @staticmethod
    async def _client_validator(trust: Path) -> Any:
        """Accept client certificates found (or issued by a CA found) in ``trust``; nobody when it is empty."""
        if not _has_certificates(trust):
            async def nobody(certificate: Any, application: Any) -> None:
                raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)
            return nobody
        store = TrustStore([trust], [])
        await store.load()
        return CertificateValidator(
            CertificateValidatorOptions.TRUSTED_VALIDATION | CertificateValidatorOptions.PEER_CLIENT, store)

    async def _load_certificate(self, server: Server) -> None:
        pki = self.options.pki
        pki.mkdir(parents=True, exist_ok=True)
        await cert_gen.setup_self_signed_certificate(
            self.private_key_path, self.certificate_path, APPLICATION_URI, socket.gethostname(),
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
            {"organizationName": "ingestor OPC UA simulator"})
        await server.load_certificate(str(self.certificate_path))
        await server.load_private_key(str(self.private_key_path))

    # --- address space -----------------------------------------------------------------------------------

    async def _build_address_space(self, server: Server) -> None:
        index = await server.register_namespace(NAMESPACE_URI)
        plant = await server.nodes.objects.add_folder(ua.NodeId("Plant", index), ua.QualifiedName("Plant", index))
        self._nodes.clear()
        self._last.clear()
        now = datetime.now(UTC)
        for machine in self.machines:
            obj = await plant.add_object(ua.NodeId(machine.code, index), ua.QualifiedName(machine.code, index))
            for parameter in (*PARAMETERS, *DERIVED):
                nid = ua.NodeId(f"{machine.code}.{parameter}", index)
                value = _value(parameter, machine)
                variable = await obj.add_variable(nid, ua.QualifiedName(parameter, index),
                                                  ua.Variant(value, _VARIANT[parameter]))
                await server.write_attribute_value(nid, self._datavalue(value, _VARIANT[parameter], now))
                unit = UNITS.get(parameter)
                if unit is not None:
                    await variable.add_property(
                        ua.NodeId(f"{machine.code}.{parameter}.EngineeringUnits", index),
                        ua.QualifiedName("EngineeringUnits", 0),
                        ua.EUInformation(NamespaceUri="urn:ingestor:units", DisplayName=ua.LocalizedText(unit),
                                         Description=ua.LocalizedText(unit)))
                self._nodes[(machine.code, parameter)] = nid
                self._last[(machine.code, parameter)] = value
        self._extra_nodes = []
        blocks: dict[str, Any] = {}
        for position, (block, name) in enumerate(self._extra):
            if block not in blocks:
                blocks[block] = await plant.add_object(ua.NodeId(block, index), ua.QualifiedName(block, index))
                await asyncio.sleep(0)
            nid = ua.NodeId(f"{block}.{name}", index)
            await blocks[block].add_variable(nid, ua.QualifiedName(name, index),
                                             ua.Variant(self._extra_value(position), ua.VariantType.Double))
            self._extra_nodes.append(nid)

    # --- values ------------------------------------------------------------------------------------------

    @staticmethod
    def _datavalue(value: Any, variant: ua.VariantType, stamp: datetime,
                   status: ua.StatusCode | None = None) -> ua.DataValue:
        return ua.DataValue(ua.Variant(value, variant, None, False), StatusCode=status or _GOOD,
                            SourceTimestamp=stamp, ServerTimestamp=stamp)

    def _extra_value(self, position: int) -> float:
        return round(50.0 + 40.0 * math.sin(self.extra_tick / 10.0 + position), 6) + self.extra_tick * 1e-6

    async def write(self, machine: str, parameter: str, value: Any, status: str | None = None) -> None:
        """Write one machine variable now (``status``: an OPC UA status name such as ``UncertainLastUsableValue``
        or ``BadSensorFailure``; a bad status makes the server send no value, as the specification says)."""
        if self._server is None:
            raise RuntimeError("the simulator is not running")
        key = (machine, parameter)
        code = ua.StatusCode(getattr(ua.StatusCodes, status)) if status else None
        if parameter in PARAMETERS:
            self._by_code[machine].set_value(parameter, value)
        if code is None:
            self._forced.pop(key, None)
        else:
            self._forced[key] = code
        await self._server.write_attribute_value(
            self._nodes[key], self._datavalue(value, _VARIANT[parameter], datetime.now(UTC), code))
        self._last[key] = value
        self.writes += 1

    async def _publish_machines(self, machines: Iterable[Machine]) -> None:
        """Write every machine variable whose value changed."""
        assert self._server is not None
        now = datetime.now(UTC)
        for machine in machines:
            for parameter in (*PARAMETERS, *DERIVED):
                key = (machine.code, parameter)
                value = _value(parameter, machine)
                if self._last.get(key) == value or key in self._forced:
                    continue
                await self._server.write_attribute_value(
                    self._nodes[key], self._datavalue(value, _VARIANT[parameter], now))
                self._last[key] = value
                self.writes += 1

    async def _publish_extra(self) -> None:
        assert self._server is not None
        self.extra_tick += 1
        now = datetime.now(UTC)
        write = self._server.iserver.aspace.write_attribute_value
        value = ua.AttributeIds.Value
        for position, nid in enumerate(self._extra_nodes):
            await write(nid, value, self._datavalue(self._extra_value(position), ua.VariantType.Double, now))
            if position % 500 == 499:
                await asyncio.sleep(0)  # let the server answer publish requests while 10,000 values are written
        self.writes += len(self._extra_nodes)

    async def _run(self) -> None:
        tasks = [self._run_extra()] if self._extra_nodes else []
        tasks.append(self._run_trace() if self._trace else self._run_model())
        await asyncio.gather(*tasks)

    async def _run_model(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(self.options.interval)
            now = loop.time()
            for machine in self.machines:
                machine.advance((now - last) * self.options.speed)
            last = now
            await self._publish_machines(self.machines)

    async def _run_extra(self) -> None:
        """Every tag changes every interval; a late tick is made up at once (a load generator keeps its rate),
        unless the simulator is more than five intervals behind, when it starts counting again."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += self.options.interval
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            await self._publish_extra()
            if loop.time() > next_at + 5 * self.options.interval:
                self.ticks_skipped += int((loop.time() - next_at) / self.options.interval)
                next_at = loop.time()

    async def _run_trace(self) -> None:
        unknown: set[str] = set()
        async for point in replay(self._trace, self.options.speed, loop_forever=self.options.loop_trace):
            machine = self._by_code[point.machine]
            try:
                machine.set_value(point.parameter, point.value)
            except KeyError:
                if point.parameter not in unknown:
                    unknown.add(point.parameter)
                    log.warning("trace names unknown parameter %r; skipped", point.parameter)
                continue
            await self._publish_machines([machine])
        log.info("trace replayed to the end")


# --- command line --------------------------------------------------------------------------------------------

def _user(text: str) -> tuple[str, str]:
    name, colon, password = text.partition(":")
    if not colon or not name:
        raise argparse.ArgumentTypeError("expected NAME:PASSWORD")
    return name, password


def parse_args(argv: list[str] | None = None) -> SimulatorOptions:
    parser = argparse.ArgumentParser(
        prog="python -m simulators.opcua", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT})")
    parser.add_argument("--machines", type=int, default=3, help="number of machines PRESS-01… (default 3)")
    parser.add_argument("--extra-tags", type=int, default=0, metavar="N",
                        help="N more Double tags, all changing every --interval (load tests)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between updates (default 1)")
    parser.add_argument("--speed", type=float, default=1.0,
                        help="model seconds per wall-clock second, or the trace replay speed (default 1)")
    parser.add_argument("--trace", type=Path, help="replay this trace (CSV or JSON lines) instead of the model")
    parser.add_argument("--once", action="store_true", help="replay the trace once instead of looping")
    parser.add_argument("--security", action="store_true",
                        help="serve only Sign and SignAndEncrypt endpoints, with a generated certificate")
    parser.add_argument("--pki", type=Path, default=DEFAULT_PKI,
                        help=f"where the server certificate and key are kept (default {DEFAULT_PKI})")
    parser.add_argument("--client-trust", type=Path, metavar="DIR",
                        help="with --security: accept only client certificates found (or issued by a CA) in DIR")
    parser.add_argument("--user", type=_user, action="append", default=[], metavar="NAME:PASSWORD",
                        help="require this user name and password (repeatable); no anonymous access")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the machine model")
    parser.add_argument("-v", "--verbose", action="store_true", help="log asyncua's own messages too")
    args = parser.parse_args(argv)
    if args.speed <= 0 or args.interval <= 0:
        parser.error("--speed and --interval must be positive")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("asyncua").setLevel(logging.INFO if args.verbose else logging.ERROR)
    return SimulatorOptions(host=args.host, port=args.port, machines=args.machines, extra_tags=args.extra_tags,
                            interval=args.interval, speed=args.speed, trace=args.trace, loop_trace=not args.once,
                            security=args.security, pki=args.pki, client_trust=args.client_trust,
                            users=dict(args.user), seed=args.seed)


async def _main(options: SimulatorOptions) -> None:
    started = time.monotonic()
    simulator = OpcUaSimulator(options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await simulator.start()
    print(f"OPC UA simulator on {simulator.endpoint} (namespace {NAMESPACE_URI}, ready in "
          f"{time.monotonic() - started:.1f} s)", flush=True)
    print(f"  machines: {', '.join(m.code for m in simulator.machines)}; node ids like "
          f"{node_id(simulator.machines[0].code, 'temperature')}", flush=True)
    if options.extra_tags:
        print(f"  {options.extra_tags} extra tags: ns=2;s=EXTRA-001.tag-000 …", flush=True)
    if options.security:
        print(f"  server certificate (pin it or put it in the client's trust directory): "
              f"{simulator.certificate_path}", flush=True)
    try:
        await stop.wait()
    finally:
        await simulator.stop()
        if options.extra_tags:
            print(f"extra tags: {simulator.extra_tick} ticks written, {simulator.ticks_skipped} skipped "
                  f"(the simulator fell behind)", flush=True)


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    try:
        asyncio.run(_main(options))
    except OSError as exc:
        print(f"simulators.opcua: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
