"""The OPC UA connector: subscriptions and polled reads on one server, turned into readings.

``connect()`` opens a session (with the configured security and credentials), resolves every tag's node (node
ids, ``nsu=`` namespace URIs, browse paths), creates one subscription per ``subscribe`` group with its
monitored items, and prepares the ``poll`` groups.  Subscriptions are created anew on every connect: the
runtime reconnects by calling ``close`` then ``connect`` again, so a restarted server gets fresh
subscriptions.  The one thing carried over, even across restarts, is each tag's newest source timestamp
stored (:mod:`connectors.opcua.stored`): a new subscription reports every current value again with its old
timestamp, and such a value is skipped (``ingestor_opcua_values_skipped_total{reason="not_newer"}``) rather
than stored twice.

**Notifications to readings.**  asyncua runs one publish loop per session and hands each publish response
to the subscription's ``publish_callback``.  Ours builds the readings right there (no per-notification task,
no intermediate objects) and appends them to a bounded buffer; ``run()`` drains the buffer into the
pipeline.  The callback never awaits the pipeline: blocking asyncua's publish loop would stop the
keep-alives and let the server expire the subscription, which loses more than it saves.  When the pipeline
is full for long enough that the buffer (``buffer_size`` readings) fills too, further notifications are
dropped and counted (``ingestor_opcua_values_skipped_total{reason="buffer_full"}``) and logged, at most once
a minute.  Polled groups go through the shared poller, which awaits the pipeline, so polling simply slows
down under backpressure.

**Values.**  Numbers are stored as they are, booleans as 0/1, strings and localized texts through the tag's
``values`` map (state tags).  The timestamp is the source timestamp, else the server timestamp, else the
moment of receipt.  The status decides the quality: Good is ``Quality.GOOD``; Uncertain and Bad are never
stored as good.  Every uncertain or bad value is counted (``ingestor_opcua_values_not_good_total``) and
logged (rate-limited); with ``not_good: store`` (the default) it is written with quality 1 (uncertain) or 2
(bad), so the history shows when a sensor went bad and ``sensor_5min_avg`` leaves bad values out; with
``not_good: drop`` it is not written.  A bad status without a value (the usual case: the specification says
the value is then null) is never written.

**A dead link** is noticed in four ways, each ending ``run()`` with :class:`ConnectionLost`: the socket
closes; asyncua's watchdog cannot read the server status for ``watchdog_interval``; a subscription reports a
bad status (the server dropped it); or a subscription stays silent (no data and no keep-alive) for three
keep-alive periods.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.client.ua_client import UaClientState
from asyncua.common.subscription import Subscription
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.ua_binary import nodeid_from_binary, struct_from_binary
from asyncua.ua.uaerrors import UaError, UaStatusCodeError
from prometheus_client import Counter, Gauge

from connectors.opcua.config import Deadband, OpcUaConfig, OpcUaTag, TagGroup, parse_browse_path
from connectors.opcua.security import OpcUaSetupError, configure_security, fingerprint, load_certificate_file
from connectors.opcua.stored import AcknowledgedSink, Order, StoredTimestamps
from connectors.polling import Poller, PollSchedule
from ingestor.contract import (
    ConnectionLost,
    ProblemLog,
    Quality,
    Reading,
    ReadingSink,
    get_logger,
    now_us,
    to_timestamp_us,
)
from ingestor.contract.timeouts import wait_for

log = get_logger(__name__)

NOTIFICATIONS = Counter(
    "ingestor_opcua_notifications_total", "Data change notifications received from OPC UA servers", ["connector"])
NOT_GOOD = Counter(
    "ingestor_opcua_values_not_good_total",
    "OPC UA values with an uncertain or bad status (never stored as good)", ["connector", "quality"])
SKIPPED = Counter(
    "ingestor_opcua_values_skipped_total", "OPC UA values not turned into readings, by reason",
    ["connector", "reason"])
READ_ERRORS = Counter("ingestor_opcua_read_errors_total", "Failed polled reads of a tag group", ["connector"])
TAGS_UNAVAILABLE = Gauge(
    "ingestor_opcua_tags_unavailable",
    "Configured tags the server could not monitor or resolve at the last connect", ["connector"])

class _ExpectedLibraryNoise(logging.Filter):
    """asyncua logs, as warnings and errors, what is expected whenever a link drops and the runtime closes the
    client: closing a session whose socket is gone (or that the server closes while we close the session: an
    error with a traceback, "close_session raised during disconnect"), its publish loop failing on the closed
    socket, a keep-alive that overtakes the answer creating its subscription, and every service fault (which
    is also raised to us, and reported by us with what to do).  The supervisor already reports a failure once; these
    would repeat it on every reconnect attempt, so they are shown only when the connectors log at debug."""

    EXPECTED = ("close_secure_channel was called but connection is closed",
                "close_session was called but connection is closed",
                "close_session but connection wasn't established",
                "Received data for unknown subscription",
                "ServiceFault (",
                "Got error status from server")

    def filter(self, record: logging.LogRecord) -> bool:
        if logging.getLogger("connectors").isEnabledFor(logging.DEBUG):
            return True
        message = str(record.msg)
        if message.startswith(self.EXPECTED):
            return False
        if message.startswith(self.LINK_GONE) and record.exc_info:
            return not isinstance(record.exc_info[1], ConnectionError | OSError | TimeoutError)
        return True

    LINK_GONE = ("Publish iteration crashed", "close_session raised during disconnect",
                 "close_secure_channel raised during disconnect")
    """Logged with the exception: expected only when that exception is the link being gone."""


for _logger_name in ("asyncua.client.client", "asyncua.client.ua_client.UaClient",
                     "asyncua.client.ua_client.UASocketProtocol", "asyncua.client.ua_session.UaSession"):
    logging.getLogger(_logger_name).addFilter(_ExpectedLibraryNoise())

def _read_faults_to_open_secure_channel(client: Any) -> None:
    """Make asyncua raise a ServiceFault that answers OpenSecureChannel as its status code.

    A server that refuses our certificate may answer OpenSecureChannel with a ServiceFault (node-opcua sends
    ``BadSecurityChecksFailed``, as the specification suggests, so as not to tell an attacker why).  asyncua
    2.1 expects only an OpenSecureChannelResponse there: it hands the fault to the waiting request as if it
    were the response, logs a parse traceback, and ``connect()`` fails with an empty ``AssertionError``.
    Each protocol this client creates gets its message handler wrapped: a fault to OpenSecureChannel (an
    asymmetrically secured message) is raised as :class:`UaStatusCodeError`, which asyncua's own receive loop
    hands to the waiting request (``_fail_all_pending``) before it closes the socket.  This leans on two
    private names of asyncua (``UaClient._make_protocol``, ``UASocketProtocol._process_received_message``);
    ``tests/test_opcua.py`` runs it against node-opcua, so an asyncua upgrade that moves them is noticed.
    A client without them (a unit test's fake) is left as it is."""
    uaclient: Any = getattr(client, "uaclient", None)
    make_protocol = getattr(uaclient, "_make_protocol", None)
    if make_protocol is None:
        return

    def protocol_reading_faults() -> Any:
        protocol = make_protocol()
        process = protocol._process_received_message

        def received(message: Any) -> None:
            if type(message) is ua.Message:
                secured: Any = message
                if isinstance(secured.SecurityHeader(), ua.AsymmetricAlgorithmHeader):
                    body = secured.body()
                    kind = nodeid_from_binary(body)
                    if kind.NamespaceIndex == 0 and kind.Identifier == ObjectIds.ServiceFault_Encoding_DefaultBinary:
                        header = struct_from_binary(ua.ResponseHeader, body)
                        raise UaStatusCodeError(header.ServiceResult.value)  # type: ignore[no-untyped-call]
            process(message)

        protocol._process_received_message = received
        return protocol

    uaclient._make_protocol = protocol_reading_faults

DELIVERY_CHUNK = 1000
"""Most readings handed to the pipeline in one ``put``."""

KEEPALIVE_TARGET = 5.0
"""Seconds between keep-alives the server is asked for when a subscription has nothing to report."""

FILTER_REFUSALS = frozenset({
    StatusCodes.BadFilterNotAllowed, StatusCodes.BadMonitoredItemFilterUnsupported,
    StatusCodes.BadMonitoredItemFilterInvalid, StatusCodes.BadDeadbandFilterInvalid,
})
"""Monitored-item results that mean "not with this deadband": the tag is subscribed again without one."""

LINK_LOST = frozenset({
    StatusCodes.BadSessionIdInvalid, StatusCodes.BadSessionClosed, StatusCodes.BadSessionNotActivated,
    StatusCodes.BadSecureChannelIdInvalid, StatusCodes.BadSecureChannelClosed,
    StatusCodes.BadConnectionClosed, StatusCodes.BadServerHalted, StatusCodes.BadShutdown,
    StatusCodes.BadCommunicationError, StatusCodes.BadNotConnected,
})
"""Results of a read that mean the session or the channel is gone (other failures stay with the poll)."""

CERTIFICATE_REFUSED = frozenset({
    StatusCodes.BadCertificateUntrusted, StatusCodes.BadCertificateInvalid, StatusCodes.BadSecurityChecksFailed,
    StatusCodes.BadCertificateUriInvalid, StatusCodes.BadCertificateTimeInvalid,
    StatusCodes.BadCertificateUseNotAllowed, StatusCodes.BadCertificateRevoked,
})
AUTH_REFUSED = CERTIFICATE_REFUSED | {
    StatusCodes.BadUserAccessDenied, StatusCodes.BadIdentityTokenInvalid, StatusCodes.BadIdentityTokenRejected,
    StatusCodes.BadSecurityPolicyRejected,
}
"""Answers to CreateSession/ActivateSession that no retry will change: the configuration must."""


class _Tag:
    """A configured tag at run time: where its readings go and how its values translate."""

    __slots__ = ("equipment", "label", "last", "parameter", "unit", "values")

    def __init__(self, group: TagGroup, tag: OpcUaTag) -> None:
        self.equipment = tag.equipment
        self.parameter = tag.parameter
        self.unit = tag.unit
        self.values = tag.values
        self.label = f"{tag.equipment}.{tag.parameter} ({tag.address}, group {group.name})"
        self.last: tuple[int, float, Quality] | None = None  # polled: the previous reading, to skip repeats


def _number(raw: Any, values: dict[str, float]) -> float | str:
    """The value as a float, or the reason it cannot be one."""
    if isinstance(raw, bool):
        return 1.0 if raw else 0.0
    if isinstance(raw, int | float):
        value = float(raw)
        return value if math.isfinite(value) else "not_finite"
    if isinstance(raw, str):
        text = raw
    elif isinstance(raw, ua.LocalizedText):
        text = raw.Text or ""
    elif raw is None:
        return "no_value"
    else:
        return "unsupported_type"
    mapped = values.get(text)
    if mapped is None:
        return "unmapped_value"
    return mapped


class _GroupSubscription(Subscription):
    """One ``subscribe`` group: asyncua's subscription with a publish callback that builds readings directly."""

    def __init__(self, session: Any, params: ua.CreateSubscriptionParameters, connector: OpcUaConnector,
                 group: TagGroup, keepalive_seconds: float) -> None:
        super().__init__(session, params, None)
        self.connector = connector
        self.group = group
        self.keepalive_seconds = keepalive_seconds
        self.heard_at = time.monotonic()

    async def publish_callback(self, publish_result: ua.PublishResult) -> None:
        self.heard_at = self.last_publish_at = time.monotonic()
        message = publish_result.NotificationMessage
        if not message.NotificationData:
            return  # a keep-alive
        self.last_sequence_number = int(message.SequenceNumber)
        for notification in message.NotificationData:
            if isinstance(notification, ua.DataChangeNotification):
                self.connector.on_data_change(notification.MonitoredItems)
            elif isinstance(notification, ua.StatusChangeNotification):
                self.connector.on_status_change(self.group.name, notification.Status)


class OpcUaConnector:
    """One OPC UA server: connect, subscribe and poll, stream readings until the link breaks."""

    def __init__(self, config: OpcUaConfig, client_factory: Callable[..., Client] | None = None,
                 state_dir: Path | None = None) -> None:
        self.name = config.name
        self.config = config
        self._client_factory = client_factory or Client
        self._client: Client | None = None
        self._tags: dict[int, _Tag] = {}
        self._subscriptions: list[_GroupSubscription] = []
        self._polled: dict[str, list[tuple[ua.NodeId, _Tag]]] = {}
        self._pending: list[Reading] = []
        self._ready = asyncio.Event()
        self._lost: str | None = None
        self._problems = ProblemLog(log)
        self._stored = StoredTimestamps(config.name, state_dir,
                                        ((tag.equipment, tag.parameter) for *_, tag in config.tags()))
        self._username: str | None = None
        self.unavailable: list[str] = []
        """Tags that could not be resolved or monitored at the last connect (labels with the reason)."""

    def status(self) -> dict[str, Any]:
        """For /readyz and ``ingestor read``: the tags the server could not resolve or monitor, with why."""
        return {"endpoint": self.config.endpoint, "unavailable_tags": list(self.unavailable)}

    # --- connect ----------------------------------------------------------------------------------------

    async def connect(self) -> None:
        self._lost = None
        self._pending = []
        self._ready = asyncio.Event()
        self.unavailable = []
        client = await self.open_session()
        with self._translated_errors():
            namespaces = await client.get_namespace_array()
            resolved = await self._resolve(client, namespaces)
            await self._subscribe(client, resolved)
        TAGS_UNAVAILABLE.labels(self.name).set(len(self.unavailable))
        if self.unavailable:
            log.error("some tags are not available on the server; they are not read", connector=self.name,
                      count=len(self.unavailable), tags=self.unavailable[:20])

    async def open_session(self) -> Client:
        """Connect and activate a session with the configured security and credentials."""
        config = self.config
        username, password = self._credentials()
        client = self._client_factory(config.endpoint, timeout=config.timeout,
                                      watchdog_intervall=config.watchdog_interval)
        client.session_timeout = int(config.session_timeout * 1000)
        client.name = client.description = f"ingestor {config.name}"
        client.product_uri = "urn:ingestor"
        client.application_uri = config.security.default_application_uri()
        _read_faults_to_open_secure_channel(client)
        self._client = client
        self._username = username
        with self._translated_errors():
            if config.security.enabled:
                await configure_security(client, config.security, config.name, config.endpoint, config.timeout)
            if username is not None:
                client.set_user(username)
            if password is not None:
                client.set_password(password)
            await client.connect()
        return client

    @contextlib.contextmanager
    def _translated_errors(self) -> Iterator[None]:
        """asyncua's and the socket's errors as ConnectionLost (or OpcUaSetupError) with a clear message."""
        config = self.config
        try:
            yield
        except UaStatusCodeError as exc:
            if exc.code in AUTH_REFUSED:
                who = f"user {self._username!r}" if self._username is not None else "anonymous access"
                hint = ""
                if config.security.enabled and exc.code in CERTIFICATE_REFUSED:
                    hint = f"; the server must trust our certificate {self._our_certificate()}"
                raise OpcUaSetupError(f"{config.endpoint} refused the session ({who}, security "
                                      f"{config.security.policy}/{config.security.effective_mode}): "
                                      f"{ua.StatusCode(ua.UInt32(exc.code)).name}{hint}") from exc
            raise ConnectionLost(f"{config.endpoint}: {ua.StatusCode(ua.UInt32(exc.code)).name}") from exc
        except (OSError, TimeoutError) as exc:
            raise ConnectionLost(f"cannot reach {config.endpoint}: {exc or type(exc).__name__}") from exc

    def _our_certificate(self) -> str:
        """Our certificate's path and fingerprint, for the operator who must trust it on the server."""
        path = self.config.security.certificate_paths(self.config.name)[0]
        try:
            return f"{path} (SHA-256 {fingerprint(load_certificate_file(path))})"
        except (OSError, ValueError):
            return str(path)

    def _credentials(self) -> tuple[str | None, str | None]:
        found: list[str | None] = []
        for key in ("username_env", "password_env"):
            variable = getattr(self.config, key)
            if variable is None:
                found.append(None)
                continue
            value = os.environ.get(variable)
            if value is None:
                raise OpcUaSetupError(f"environment variable {variable} ({key}) is not set")
            found.append(value)
        return found[0], found[1]

    async def _resolve(self, client: Client, namespaces: list[str]) -> list[tuple[TagGroup, int, ua.NodeId]]:
        """Every tag's node id, with its client handle; unresolvable tags go to ``self.unavailable``."""
        self._tags = {}
        resolved: list[tuple[TagGroup, int, ua.NodeId]] = []
        children: dict[tuple[ua.NodeId, int | None, str], ua.NodeId | str] = {}
        for handle, (_, _, group, tag) in enumerate(self.config.tags(), start=1):
            entry = _Tag(group, tag)
            self._tags[handle] = entry
            try:
                if tag.node is not None:
                    nodeid = self._node_id(tag.node, namespaces)
                else:
                    assert tag.path is not None
                    nodeid = await self._browse(client, tag.path, children)
            except LookupError as exc:
                self.unavailable.append(f"{entry.label}: {exc}")
                continue
            resolved.append((group, handle, nodeid))
        return resolved

    @staticmethod
    def _node_id(text: str, namespaces: list[str]) -> ua.NodeId:
        if text.startswith("nsu="):
            uri, _, rest = text[4:].partition(";")
            if uri not in namespaces:
                raise LookupError(f"the server has no namespace {uri!r}")
            text = f"ns={namespaces.index(uri)};{rest}"
        try:
            return ua.NodeId.from_string(text)
        except (ValueError, UaError) as exc:
            raise LookupError(f"not a node id: {exc}") from None

    async def _browse(self, client: Client, path: str,
                      cache: dict[tuple[ua.NodeId, int | None, str], ua.NodeId | str]) -> ua.NodeId:
        """Follow a browse path from Objects, one hierarchical reference per segment."""
        current = ua.NodeId(ua.Int32(ObjectIds.ObjectsFolder))
        for namespace, name in parse_browse_path(path):
            key = (current, namespace, name)
            if key not in cache:
                references = await client.get_node(current).get_children_descriptions()
                matches = [r.NodeId for r in references if r.BrowseName.Name == name
                           and (namespace is None or r.BrowseName.NamespaceIndex == namespace)]
                cache[key] = matches[0] if len(matches) == 1 else (
                    f"no child {name!r}" if not matches else f"{len(matches)} children are named {name!r}; "
                    "prefix the segment with its namespace index (2:Name)")
            found = cache[key]
            if isinstance(found, str):
                raise LookupError(f"browse path {path!r}: {found}")
            current = found
        return current

    async def _subscribe(self, client: Client, resolved: list[tuple[TagGroup, int, ua.NodeId]]) -> None:
        self._subscriptions = []
        self._polled = {group.name: [] for group in self.config.groups if group.mode == "poll"}
        by_group: dict[str, list[tuple[int, ua.NodeId]]] = {}
        for group, handle, nodeid in resolved:
            if group.mode == "poll":
                self._polled[group.name].append((nodeid, self._tags[handle]))
            else:
                by_group.setdefault(group.name, []).append((handle, nodeid))
        tag_configs = {handle: tag for handle, (_, _, _, tag) in enumerate(self.config.tags(), start=1)}
        for group in self.config.groups:
            items = by_group.get(group.name)
            if group.mode != "subscribe" or not items:
                continue
            subscription = await self._create_subscription(client, group)
            requests = [self._monitored_item(group, tag_configs[handle], handle, nodeid) for handle, nodeid in items]
            await self._create_items(subscription, requests)

    async def _create_subscription(self, client: Client, group: TagGroup) -> _GroupSubscription:
        interval_ms = group.publishing_interval * 1000
        keepalive = max(1, math.ceil(KEEPALIVE_TARGET / group.publishing_interval))
        lifetime = max(3 * keepalive, math.ceil(self.config.session_timeout / group.publishing_interval))
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=interval_ms, RequestedLifetimeCount=lifetime,
            RequestedMaxKeepAliveCount=keepalive, MaxNotificationsPerPublish=0, PublishingEnabled=True, Priority=0)
        subscription = _GroupSubscription(client.uaclient.session, params, self, group,
                                          keepalive * group.publishing_interval)
        result = await subscription.init()
        # the server may revise the interval and keep-alive count: watch for silence against what it granted
        subscription.keepalive_seconds = max(
            subscription.keepalive_seconds, result.RevisedPublishingInterval / 1000 * result.RevisedMaxKeepAliveCount)
        self._subscriptions.append(subscription)
        return subscription

    @staticmethod
    def _monitored_item(group: TagGroup, tag: OpcUaTag, handle: int, nodeid: ua.NodeId,
                        with_filter: bool = True) -> ua.MonitoredItemCreateRequest:
        deadband: Deadband | None = (tag.deadband or group.deadband) if with_filter else None
        item_filter = None
        if deadband is not None:
            item_filter = ua.DataChangeFilter(
                Trigger=ua.DataChangeTrigger.StatusValue,
                DeadbandType=ua.DeadbandType.Absolute if deadband.type == "absolute" else ua.DeadbandType.Percent,
                DeadbandValue=deadband.value)
        sampling = -1.0 if group.sampling_interval is None else group.sampling_interval * 1000
        parameters = ua.MonitoringParameters(ClientHandle=handle, SamplingInterval=sampling,
                                             QueueSize=group.queue_size, DiscardOldest=True, Filter=item_filter)
        return ua.MonitoredItemCreateRequest(
            ItemToMonitor=ua.ReadValueId(NodeId=nodeid, AttributeId=AttributeIds.Value),
            MonitoringMode=ua.MonitoringMode.Reporting, RequestedParameters=parameters)

    async def _create_items(self, subscription: _GroupSubscription,
                            requests: list[ua.MonitoredItemCreateRequest]) -> None:
        step = self.config.max_items_per_call
        retry: list[ua.MonitoredItemCreateRequest] = []
        for start in range(0, len(requests), step):
            chunk = requests[start:start + step]
            results = await subscription.create_monitored_items(chunk)
            for request, result in zip(chunk, results, strict=True):
                if not isinstance(result, ua.StatusCode):
                    continue
                handle = request.RequestedParameters.ClientHandle
                if result.value in FILTER_REFUSALS and request.RequestedParameters.Filter is not None:
                    log.warning("the server refused the deadband of a tag; it is subscribed without one",
                                connector=self.name, tag=self._tags[handle].label, status=result.name)
                    request.RequestedParameters.Filter = None
                    retry.append(request)
                else:
                    self.unavailable.append(f"{self._tags[handle].label}: {result.name}")
        for start in range(0, len(retry), step):
            chunk = retry[start:start + step]
            results = await subscription.create_monitored_items(chunk)
            for request, result in zip(chunk, results, strict=True):
                if isinstance(result, ua.StatusCode):
                    handle = request.RequestedParameters.ClientHandle
                    self.unavailable.append(f"{self._tags[handle].label}: {result.name}")

    # --- notifications (called from asyncua's publish loop: never awaits) --------------------------------

    def on_data_change(self, items: Sequence[ua.MonitoredItemNotification]) -> None:
        NOTIFICATIONS.labels(self.name).inc(len(items))
        received_us = now_us()
        tags = self._tags
        pending = self._pending
        room = self.config.buffer_size - len(pending)
        for item in items:
            tag = tags.get(item.ClientHandle)
            if tag is None:
                continue
            reading = self._reading(tag, item.Value, received_us)
            if reading is None:
                continue
            order = self._stored.order(reading)
            if order is not Order.NEWER:  # a new subscription's first report of a value stored already
                self._not_newer(tag, reading, order)
                continue
            if room <= 0:
                SKIPPED.labels(self.name, "buffer_full").inc()
                self._problems.failed("buffer_full", "the pipeline is full and so is the OPC UA buffer; "
                                      "notifications are dropped", connector=self.name,
                                      buffer_size=self.config.buffer_size)
                continue
            pending.append(reading)
            self._stored.handed(reading)
            room -= 1
        if pending:
            self._ready.set()

    def _not_newer(self, tag: _Tag, reading: Reading, order: Order) -> None:
        """Count a value skipped for its timestamp; one older than the last one stored is worth a warning."""
        SKIPPED.labels(self.name, "not_newer").inc()
        if order is Order.OLDER:
            self._problems.failed("older", "OPC UA value older than the last one stored for its tag; skipped "
                                  "(has the server's clock gone back?)", connector=self.name, tag=tag.label,
                                  timestamp_us=reading.timestamp_us)

    def on_status_change(self, group: str, status: ua.StatusCode) -> None:
        if status.is_good():
            return
        self.link_lost(f"subscription of group {group} ended: {status.name}")

    def link_lost(self, reason: str) -> None:
        if self._lost is None:
            self._lost = reason
        self._ready.set()

    def _reading(self, tag: _Tag, data: ua.DataValue | None, received_us: int) -> Reading | None:
        """The reading of one value, or None (counted) when it cannot be stored."""
        if data is None:
            return None
        code = data.StatusCode.value if data.StatusCode is not None else 0
        variant = data.Value
        value = _number(variant.Value if variant is not None else None, tag.values)
        severity = code >> 30
        if severity:
            quality = Quality.UNCERTAIN if severity == 1 else Quality.BAD
            NOT_GOOD.labels(self.name, quality.name.lower()).inc()
            self._problems.failed(f"not_good.{quality.name}", "OPC UA value is not good",
                                  connector=self.name, tag=tag.label, status=ua.StatusCode(ua.UInt32(code)).name,
                                  action="stored" if self.config.not_good == "store" and isinstance(value, float)
                                  else "dropped", quality=quality.name.lower())
            if self.config.not_good == "drop":
                SKIPPED.labels(self.name, "not_good").inc()
                return None
        else:
            quality = Quality.GOOD
        if isinstance(value, str):
            SKIPPED.labels(self.name, value).inc()
            if quality is Quality.GOOD or value != "no_value":
                self._problems.failed(f"skip.{value}", "OPC UA value cannot be stored", connector=self.name,
                                      tag=tag.label, reason=value, value=repr(variant.Value if variant else None)[:80])
            return None
        stamp = data.SourceTimestamp or data.ServerTimestamp
        timestamp_us = to_timestamp_us(stamp) if isinstance(stamp, datetime) else 0
        if timestamp_us <= 0:
            timestamp_us = received_us
        return Reading(tag.equipment, tag.parameter, value, timestamp_us, tag.unit, quality)

    # --- run ---------------------------------------------------------------------------------------------

    async def run(self, sink: ReadingSink) -> None:
        if self._client is None:
            raise ConnectionLost("not connected")
        schedules = [PollSchedule(g.name, g.interval, g.timeout) for g in self.config.groups
                     if g.mode == "poll" and self._polled.get(g.name)]
        jobs = [self._deliver(sink), self._watch(self._client), self._stored.keep()]
        if schedules:
            jobs.append(Poller(self.name, schedules, self._poll_group, AcknowledgedSink(sink, self._stored),
                               on_error=self._poll_failed).run())
        # asyncio.wait rather than a TaskGroup: on Python 3.11 a TaskGroup whose child fails while the parent
        # is being cancelled raises the child's error and loses the cancellation, so a daemon shutting down
        # during a server restart would keep reconnecting.
        tasks = [asyncio.create_task(job, name=f"opcua-{self.name}-{index}") for index, job in enumerate(jobs)]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            error = task.exception()
            if error is not None:
                raise error
        raise ConnectionLost("the OPC UA connector stopped reading")

    async def _deliver(self, sink: ReadingSink) -> None:
        """Hand buffered readings to the pipeline; when the link is lost, hand over what arrived, then raise."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            pending, self._pending = self._pending, []
            for start in range(0, len(pending), DELIVERY_CHUNK):
                chunk = pending[start:start + DELIVERY_CHUNK]
                await sink.put(chunk, self._stored.on_durable(chunk))
            if self._lost is not None and not self._pending:
                raise ConnectionLost(self._lost)

    async def _watch(self, client: Client) -> None:
        """Notice when the socket, the session or a subscription is gone (``_deliver`` then raises)."""
        async with client.subscribe_state() as changes:
            while self._lost is None:
                if client.state is not UaClientState.CONNECTED:
                    self.link_lost(f"connection to {self.config.endpoint} lost ({client.state.value})")
                    break
                now = time.monotonic()
                for subscription in self._subscriptions:
                    silent = now - subscription.heard_at
                    if silent > 3 * subscription.keepalive_seconds + self.config.timeout:
                        self.link_lost(f"subscription of group {subscription.group.name} silent for {silent:.0f} s "
                                       "(no data, no keep-alive)")
                with contextlib.suppress(TimeoutError):
                    await changes.next_change(timeout=1.0)

    async def _poll_group(self, group: str) -> list[Reading]:
        client = self._client
        if client is None:
            raise ConnectionLost("not connected")
        nodes = self._polled[group]
        readings: list[Reading] = []
        step = self.config.max_items_per_call
        for start in range(0, len(nodes), step):
            chunk = nodes[start:start + step]
            params = ua.ReadParameters(
                MaxAge=0, TimestampsToReturn=ua.TimestampsToReturn.Both,
                NodesToRead=[ua.ReadValueId(NodeId=nodeid, AttributeId=AttributeIds.Value) for nodeid, _ in chunk])
            try:
                values = await client.uaclient.read(params)
            except UaStatusCodeError as exc:
                if exc.code in LINK_LOST:
                    raise ConnectionLost(f"read of group {group}: {ua.StatusCode(exc.code).name}") from exc
                raise
            except (ConnectionError, OSError) as exc:
                raise ConnectionLost(f"read of group {group}: {exc}") from exc
            received_us = now_us()
            for (_, tag), data in zip(chunk, values, strict=True):
                reading = self._reading(tag, data, received_us)
                if reading is None:
                    continue
                key = (reading.timestamp_us, reading.value, reading.quality)
                if tag.last == key:
                    continue  # the same sample as last time: the source has not changed it
                tag.last = key
                order = self._stored.order(reading)
                if order is not Order.NEWER:  # read again after a reconnect or a restart: stored already
                    if order is Order.OLDER:
                        self._not_newer(tag, reading, order)
                    continue
                self._stored.handed(reading)
                readings.append(reading)
        self._problems.recovered(f"poll.{group}", "polled read recovered", connector=self.name, group=group)
        return readings

    def _poll_failed(self, group: str, error: Exception) -> None:
        READ_ERRORS.labels(self.name).inc()
        text = ua.StatusCode(error.code).name if isinstance(error, UaStatusCodeError) else (
            str(error) or type(error).__name__)
        self._problems.failed(f"poll.{group}", "polled read failed", connector=self.name, group=group, error=text)

    # --- close -------------------------------------------------------------------------------------------

    async def close(self) -> None:
        client, self._client = self._client, None
        self._subscriptions = []
        if client is None:
            return
        try:
            await wait_for(client.disconnect(), self.config.timeout)
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except Exception as exc:  # the link is already gone: nothing more to release
            log.debug("disconnect failed", connector=self.name, error=str(exc) or type(exc).__name__)
            with contextlib.suppress(Exception):
                client.disconnect_socket()
