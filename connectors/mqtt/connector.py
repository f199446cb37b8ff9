"""The MQTT connector: paho-mqtt 2.x driven by the asyncio event loop, acknowledging only durable messages.

How paho is bridged into asyncio
    paho runs *inside* the event loop thread, the way paho documents for external loops: the socket is
    registered with ``loop.add_reader`` / ``add_writer`` (``loop_read`` / ``loop_write``), a one-second timer
    calls ``loop_misc`` (keepalive), and paho's socket callbacks tell us when it wants to write or closes the
    socket.  We chose this over ``loop_start()`` (a paho thread handing messages over with
    ``call_soon_threadsafe``) because everything then happens on one thread: a message is parsed into readings
    in ``on_message``, handed to the pipeline by :meth:`MqttConnector.run`, and acknowledged from the
    pipeline's ``on_durable`` callback, with no locks, no cross-thread wake-ups per message, and no GIL
    ping-pong between two busy threads.  Only the blocking TCP/TLS connect runs in a worker thread
    (``asyncio.to_thread``), with paho's socket hooks unset while it does.  The client is
    :class:`connectors.mqtt.client.FastClient` (large socket reads, a short PUBLISH path): bytes it has read
    ahead are invisible to the selector, so :meth:`_on_readable` goes on while ``pending_input()``.

Acknowledgment (at-least-once, ack after durable)
    paho runs with ``manual_ack=True``.  A QoS 1 message gets its PUBACK (QoS 2: its PUBCOMP) only when the
    pipeline calls the ``on_durable`` callback of the ``put`` that carried its readings.  Acks are sent in
    the order the messages arrived, as MQTT 3.1.1 and 5 (section 4.6) require of a receiver, by a small
    in-order acknowledger: a message that yields no readings (malformed, counted) is marked done at once,
    but its ack waits for the acks of the messages before it.  Acks belong to one network connection: when
    the connection is lost, acks still owed are abandoned (counted) and the broker redelivers those messages
    on the persistent session, so a reconnect can produce duplicates, never losses.  On a graceful stop,
    :meth:`close` first waits (``drain_timeout``) for what it handed to the pipeline to become durable and
    acknowledged, and then for one round trip behind the last acknowledgment (so the broker has processed
    them before a connector restarted by a reload, with the same client id, takes the session over), so a
    daemon restart or a reload normally produces no duplicates.

Backpressure
    ``sink.put`` waits while the pipeline is full; the network loop never waits for it.  Received messages
    go into a local inbox that :meth:`run` hands to the pipeline.  Unacknowledged QoS 1/2 messages are the
    first brake: the broker's in-flight window (MQTT 5 Receive Maximum, ``receive_maximum``; mosquitto's
    ``max_inflight_messages`` for 3.1.1) stops delivery.  mosquitto 2.0 does not hold to that window while
    acknowledgments flow (we measured 700-2,500 unacknowledged messages against a window of 20), and QoS 0
    has no window at all, so the connector bounds its inbox itself: at ``max_buffered`` waiting messages it
    stops reading the socket (TCP backpressure: the broker keeps the messages) and reads again once half of
    them are in the pipeline.  While reading is paused, paho's keepalive is paused too; if the pipeline stays
    blocked for longer than 1.5 keepalive periods the broker drops the connection, we reconnect, and the
    unacknowledged messages come again.  Nothing is dropped by the connector.

QoS 2 and paho
    paho answers a QoS 2 PUBLISH with PUBREC at once and delivers the message on PUBREL; manual ack delays
    only the PUBCOMP.  After PUBREC the broker will not send that message again, so a QoS 2 message is safe
    across broker restarts and reconnects (the same paho client keeps its state), but not across a crash of
    the daemon between PUBREL and the commit.  QoS 1 has no such gap: prefer QoS 1 (see docs/connectors/mqtt.md).
"""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from collections import Counter as Tally
from collections import deque
from collections.abc import Collection, Sequence
from functools import partial
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions
from prometheus_client import Counter, Gauge

from connectors.mqtt.client import FastClient
from connectors.mqtt.config import SPARKPLUG_NAMESPACE, MqttConfig, filters_overlap
from connectors.mqtt.deadletter import DeadLetterFile
from connectors.mqtt.payloads import Malformed
from connectors.mqtt.sparkplug import SparkplugHost, state_payload
from connectors.mqtt.topics import TopicRouter
from ingestor.contract import ConnectionLost, ProblemLog, Reading, ReadingSink, get_logger, now_us
from ingestor.contract.timeouts import wait_for

log = get_logger(__name__)

MESSAGES_ACCEPTED = Counter(
    "ingestor_mqtt_messages_accepted_total", "MQTT messages turned into readings", ["connector"])
MESSAGES_REJECTED = Counter(
    "ingestor_mqtt_messages_rejected_total", "MQTT messages that yielded no readings, by reason",
    ["connector", "reason"])
UNACKNOWLEDGED = Gauge(
    "ingestor_mqtt_unacknowledged_messages",
    "QoS 1/2 messages received and not yet acknowledged (their readings are not durable yet)", ["connector"])
ACKS_ABANDONED = Counter(
    "ingestor_mqtt_acks_abandoned_total",
    "Acknowledgments not sent because their connection was lost (the broker redelivers those messages)",
    ["connector"])
DEAD_LETTERS = Counter(
    "ingestor_mqtt_dead_letters_total", "Rejected MQTT messages written to the dead-letter file", ["connector"])
READ_PAUSES = Counter(
    "ingestor_mqtt_read_pauses_total",
    "Times the connector stopped reading from the broker because max_buffered messages waited for the pipeline",
    ["connector"])

HAND_OFF_READINGS = 5000
"""Most readings handed to the pipeline in one ``put`` (many small messages travel together)."""
READS_PER_WAKEUP = 100
"""Most packets read per readiness event before letting other tasks run."""
LOG_EVERY = 10.0
"""Seconds between two log lines about rejected messages of one reason."""


class _Slot:
    """One received QoS 1/2 message waiting for its acknowledgment."""

    __slots__ = ("done", "mid", "qos")

    def __init__(self, mid: int, qos: int) -> None:
        self.mid = mid
        self.qos = qos
        self.done = False


class _Acknowledger:
    """Sends acks in arrival order, for one network connection only."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.alive = True
        self.pending: deque[_Slot] = deque()

    def track(self, mid: int, qos: int) -> _Slot:
        slot = _Slot(mid, qos)
        self.pending.append(slot)
        return slot

    def complete(self, slots: Sequence[_Slot]) -> None:
        for slot in slots:
            slot.done = True
        pending, client = self.pending, self.client
        while pending and pending[0].done:
            slot = pending.popleft()
            client.ack(slot.mid, slot.qos)


class MqttConnector:
    """Subscribes, turns messages into readings, acknowledges them once durable."""

    def __init__(self, config: MqttConfig, *, client_factory: Any = None,
                 known_equipment: Collection[str] | None = None, known_units: Collection[str] | None = None
                 ) -> None:
        self.name = config.name
        self.client_id = config.effective_client_id()
        self._config = config
        self._router = TopicRouter(config, frozenset(known_equipment) if known_equipment is not None else None,
                                   frozenset(known_units) if known_units is not None else None)
        self._client_factory = client_factory or FastClient
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd: int | None = None
        self._writing = False
        self._paused = False
        self._acks: _Acknowledger | None = None
        self._link_up = False
        self._lost: str | None = None
        self._closing = False
        self._connack: asyncio.Future[tuple[Any, bool]] | None = None
        self._suback: asyncio.Future[list[Any]] | None = None
        self._wanted: list[tuple[str, int]] = []
        self._opening: asyncio.Future[Any] | None = None
        self._housekeeping: asyncio.Task[None] | None = None
        self._inbox: deque[tuple[list[Reading], _Slot | None]] = deque()
        self._wake = asyncio.Event()
        self._in_pipeline = 0
        self._pubcomp_owed: list[int] = []
        self._delivered = 0
        self.session_present = False
        self.accepted = 0
        self.rejected: Tally[str] = Tally()
        self._accepted_metric = MESSAGES_ACCEPTED.labels(self.name)
        self._rejected_metrics = {reason: MESSAGES_REJECTED.labels(self.name, reason)
                                  for reason in ("unknown_topic", "bad_json", "not_a_number", "missing_field")}
        self._unacked_metric = UNACKNOWLEDGED.labels(self.name)
        self._abandoned_metric = ACKS_ABANDONED.labels(self.name)
        self._rejections = ProblemLog(log, LOG_EVERY)
        self._dead_letters = (DeadLetterFile(config.dead_letter.path, config.dead_letter.max_size, self.name)
                              if config.dead_letter else None)
        self.sparkplug: SparkplugHost | None = None
        if any(sub.payload.format == "sparkplug_b" for sub in config.subscriptions):
            self.sparkplug = SparkplugHost(self.name, config.sparkplug, self._publish, known_equipment, known_units)
        self._state_topic = (f"{SPARKPLUG_NAMESPACE}/STATE/{config.sparkplug.host_id}"
                             if config.sparkplug.host_id and self.sparkplug is not None else None)
        self._state_stamp = 0

    # --- the Connector protocol ----------------------------------------------------------------------------

    async def connect(self) -> None:
        config = self._config
        self._loop = asyncio.get_running_loop()
        self._closing = False
        self._lost = None
        self._link_up = False
        client = self._client or self._new_client()
        self._client = client
        self._acks = _Acknowledger(client)
        self._connack = self._loop.create_future()
        self._suback = None
        self._set_socket_hooks(client, False)  # paho must not call into the loop from the connect thread
        if self._state_topic is not None:
            # Sparkplug 3.0 primary host: the death certificate is the will, with the birth's timestamp
            self._state_stamp = time.time_ns() // 1_000_000
            client.will_set(self._state_topic, state_payload(False, self._state_stamp), qos=1, retain=True)
        if config.protocol == "5":
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = int(config.session_expiry)
            properties.ReceiveMaximum = config.receive_maximum
            opening = partial(client.connect, config.host, config.port, keepalive=round(config.keepalive),
                              clean_start=config.clean_start, properties=properties)
        else:
            opening = partial(client.connect, config.host, config.port, keepalive=round(config.keepalive))
        self._opening = asyncio.ensure_future(asyncio.to_thread(opening))
        try:
            await wait_for(asyncio.shield(self._opening), config.connect_timeout + 5)
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            raise ConnectionLost(f"cannot reach the broker at {config.host}:{config.port}: "
                                 f"{type(exc).__name__}: {exc}") from None
        sock = client.socket()
        if sock is None:
            raise ConnectionLost("the broker closed the connection while connecting")
        self._fd = sock.fileno()
        self._loop.add_reader(self._fd, self._on_readable)
        self._set_socket_hooks(client, True)
        if client.want_write():
            self._want_write(client, None, sock)
        self._housekeeping = asyncio.create_task(self._keep_alive(), name=f"mqtt-{self.name}-keepalive")
        try:
            reason, session_present = await wait_for(self._connack, config.connect_timeout)
        except TimeoutError:
            raise ConnectionLost(f"no answer (CONNACK) from the broker within {config.connect_timeout} s") from None
        if reason.is_failure:
            raise ConnectionLost(f"the broker refused the connection: {reason}")
        self._link_up = True
        self.session_present = session_present
        if session_present:  # PUBCOMPs owed from the last connection: the broker resends their PUBRELs
            for mid in self._pubcomp_owed:
                client.ack(mid, 2)
        self._pubcomp_owed.clear()
        await self._subscribe(client, session_present)
        if self._state_topic is not None:  # after subscribing, as a primary host must
            client.publish(self._state_topic, state_payload(True, self._state_stamp), qos=1, retain=True)
        log.info("mqtt session ready", connector=self.name, broker=f"{config.host}:{config.port}",
                 client_id=self.client_id, protocol=config.protocol, session_present=session_present,
                 subscriptions=len(config.subscriptions) + len(config.tags))

    async def run(self, sink: ReadingSink) -> None:
        inbox = self._inbox
        while True:
            if self._lost is not None:
                raise ConnectionLost(self._lost)
            if self._suback is not None:
                self._check_suback()
            if not inbox:
                self._wake.clear()
                await self._wake.wait()
                continue
            readings: list[Reading] = []
            slots: list[_Slot] = []
            messages = 0
            while inbox and (not readings or len(readings) + len(inbox[0][0]) <= HAND_OFF_READINGS):
                batch, slot = inbox.popleft()
                readings.extend(batch)
                messages += 1
                if slot is not None:
                    slots.append(slot)
            self._accepted_metric.inc(messages)  # per hand-off, not per message (a lock each)
            if self._paused and len(inbox) <= self._config.max_buffered // 2:
                self._resume_reading()
            acks = self._acks
            assert acks is not None
            self._in_pipeline += len(slots)
            try:
                await sink.put(readings, partial(self._durable, acks, slots) if slots else None)
            except BaseException:  # not taken (cancelled while the pipeline was full): never acknowledged
                self._in_pipeline -= len(slots)
                raise

    async def close(self) -> None:
        self._closing = True
        try:
            if self._opening is not None and not self._opening.done():
                await asyncio.wait({self._opening}, timeout=self._config.connect_timeout)
            if self._link_up and self._in_pipeline:
                deadline = time.monotonic() + self._config.drain_timeout
                while self._in_pipeline and self._link_up and time.monotonic() < deadline:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
                if self._in_pipeline:
                    log.info("mqtt stopping before every message was durable; the broker will redeliver",
                             connector=self.name, messages=self._in_pipeline)
            client = self._client
            if client is not None and client.socket() is not None and self._link_up:
                await self._acks_taken(client)
            if client is not None and client.socket() is not None:
                if self._state_topic is not None and self._link_up:
                    client.publish(self._state_topic, state_payload(False, self._state_stamp), qos=1, retain=True)
                client.disconnect()
                client.loop_write()  # the queued acks, then DISCONNECT; paho closes the socket after it
                if client.socket() is not None:
                    client._sock_close()  # could not write everything: close anyway (paho has no public call)
        finally:
            self._link_down("closed")
            self._unregister()
            if self._housekeeping is not None:
                self._housekeeping.cancel()
                self._housekeeping = None
            if self._dead_letters is not None:
                self._dead_letters.close()

    async def _acks_taken(self, client: Any) -> None:
        """Wait until the broker has processed the acknowledgments sent so far: one round trip (an UNSUBSCRIBE
        of a filter never subscribed, which changes nothing) behind them on the same connection.  Without it, a
        connector started again at once with the same client id (a reload) can take the session over before
        the broker has read the last PUBACKs from the old socket, and the broker sends those messages again."""
        assert self._loop is not None
        answered: asyncio.Future[None] = self._loop.create_future()
        wanted: list[int] = []

        def on_unsubscribe(client: Any, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
            if mid in wanted and not answered.done():
                answered.set_result(None)

        client.on_unsubscribe = on_unsubscribe
        result, mid = client.unsubscribe(f"ingestor/no-such-subscription/{os.getpid()}/{id(self)}")
        if result != mqtt.MQTT_ERR_SUCCESS:
            return
        wanted.append(mid)
        try:
            await wait_for(answered, min(2.0, self._config.connect_timeout))
        except TimeoutError:
            log.debug("the broker did not confirm the last acknowledgments before the disconnect", connector=self.name)

    # --- paho client and socket plumbing ------------------------------------------------------------------

    def _new_client(self) -> Any:
        config = self._config
        if config.protocol == "5":
            client = self._client_factory(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                                          protocol=mqtt.MQTTv5, manual_ack=True)
        else:
            client = self._client_factory(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                                          clean_session=config.clean_start, protocol=mqtt.MQTTv311,
                                          manual_ack=True)
        client.connect_timeout = config.connect_timeout
        username = config.username
        if config.username_env is not None:
            username = self._secret(config.username_env, "username_env")
        password = self._secret(config.password_env, "password_env") if config.password_env else None
        if username is not None or password is not None:
            client.username_pw_set(username or "", password)
        if config.tls is not None:
            tls = config.tls
            key_password = self._secret(tls.key_password_env, "tls.key_password_env") if tls.key_password_env \
                else None
            try:
                client.tls_set(ca_certs=str(tls.ca_file) if tls.ca_file else None,
                               certfile=str(tls.cert_file) if tls.cert_file else None,
                               keyfile=str(tls.key_file) if tls.key_file else None,
                               keyfile_password=key_password, cert_reqs=ssl.CERT_REQUIRED)
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise ConnectionLost(f"cannot load the TLS files: {exc}") from None
            if tls.insecure:
                client.tls_insecure_set(True)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect
        client.on_socket_close = self._on_socket_close
        return client

    def _secret(self, variable: str, field: str) -> str:
        value = os.environ.get(variable)
        if value is None:
            raise ConnectionLost(f"{field}: environment variable {variable} is not set")
        return value

    def _set_socket_hooks(self, client: Any, on: bool) -> None:
        client.on_socket_register_write = self._want_write if on else None
        client.on_socket_unregister_write = self._wrote if on else None

    def _want_write(self, client: Any, userdata: Any, sock: Any) -> None:
        if self._fd is not None and not self._writing and self._loop is not None:
            self._loop.add_writer(self._fd, self._on_writable)
            self._writing = True

    def _wrote(self, client: Any, userdata: Any, sock: Any) -> None:
        if self._fd is not None and self._writing and self._loop is not None:
            self._loop.remove_writer(self._fd)
            self._writing = False

    def _on_socket_close(self, client: Any, userdata: Any, sock: Any) -> None:
        self._unregister()

    def _unregister(self) -> None:
        if self._fd is not None and self._loop is not None:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
        self._fd = None
        self._writing = False
        self._paused = False

    def _pause_reading(self) -> None:
        if self._fd is not None and self._loop is not None and not self._paused:
            self._loop.remove_reader(self._fd)
            self._paused = True
            READ_PAUSES.labels(self.name).inc()

    def _resume_reading(self) -> None:
        self._paused = False
        if self._fd is not None and self._loop is not None:
            self._loop.add_reader(self._fd, self._on_readable)
            self._loop.call_soon(self._on_readable)  # bytes read ahead (FastClient, TLS) wake no selector

    def _on_readable(self) -> None:
        client = self._client
        try:
            for _ in range(READS_PER_WAKEUP):
                delivered = self._delivered
                if client.loop_read() != mqtt.MQTT_ERR_SUCCESS or self._delivered == delivered or self._paused:
                    break
            sock = client.socket()
            if sock is not None and self._loop is not None and not self._paused and (
                    (hasattr(sock, "pending") and sock.pending())
                    or (hasattr(client, "pending_input") and client.pending_input())):
                # TLS holds decrypted bytes the selector cannot see; FastClient holds bytes read ahead
                self._loop.call_soon(self._on_readable)
        except Exception as exc:  # paho raises on some socket states; the link is unusable then
            self._link_lost(f"read failed: {type(exc).__name__}: {exc}")

    def _on_writable(self) -> None:
        try:
            self._client.loop_write()
        except Exception as exc:
            self._link_lost(f"write failed: {type(exc).__name__}: {exc}")

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            client = self._client
            if client is not None and client.socket() is not None and not self._paused:
                client.loop_misc()
            self._unacked_metric.set(len(self._acks.pending) if self._acks else 0)

    def _link_lost(self, why: str) -> None:
        client = self._client
        if client is not None and client.socket() is not None:
            client._sock_close()
        self._link_down(why)

    def _link_down(self, why: str) -> None:
        """The connection is gone: owed acks cannot be sent on it any more."""
        acks = self._acks
        if acks is not None and acks.alive:
            acks.alive = False
            if acks.pending:
                self._abandoned_metric.inc(len(acks.pending))
        self._link_up = False
        if self._lost is None:
            self._lost = why
        # unacknowledged messages not yet handed over will be redelivered: drop them; keep QoS 0
        if any(slot is not None for _, slot in self._inbox):
            kept = [(readings, slot) for readings, slot in self._inbox if slot is None]
            self._inbox.clear()
            self._inbox.extend(kept)
        self._wake.set()
        for future in (self._connack, self._suback):
            if future is not None and not future.done():
                future.set_exception(ConnectionLost(why))
                future.exception()  # retrieved here so an abandoned future does not log

    # --- paho callbacks (all on the event loop thread) -----------------------------------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if self._connack is not None and not self._connack.done():
            self._connack.set_result((reason, bool(flags.session_present)))

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if not self._closing:
            self._link_down(f"the broker connection was lost ({reason})")

    async def _subscribe(self, client: Any, session_present: bool) -> None:
        """Subscribe to every filter.  A new session waits for the SUBACK here.  A resumed session may have
        a backlog that the broker sends before the SUBACK, and reading pauses once ``max_buffered`` messages
        wait, which only :meth:`run` relieves: then the SUBACK is checked by :meth:`run`."""
        config = self._config
        prefix = f"$share/{config.shared_group}/" if config.shared_group else ""
        self._wanted = [(prefix + sub.filter(), sub.qos) for sub in config.subscriptions]
        self._wanted += [(prefix + tag.topic, tag.qos) for tag in config.tags]
        state = f"{SPARKPLUG_NAMESPACE}/STATE/+"
        if self.sparkplug is not None and not any(filters_overlap(state, sub.filter())
                                                  for sub in config.subscriptions):
            self._wanted.append((state, 1))  # host applications' STATE, never shared between daemons
        request: list[tuple[str, Any]] = list(self._wanted)
        if config.protocol == "5":
            # retainHandling 1: retained messages only for a new subscription, not again on every reconnect
            request = [(topic, SubscribeOptions(qos=qos, retainHandling=1)) for topic, qos in self._wanted]
        assert self._loop is not None
        self._suback = self._loop.create_future()
        result, _ = client.subscribe(request)
        if result != mqtt.MQTT_ERR_SUCCESS:
            raise ConnectionLost(f"cannot subscribe: {mqtt.error_string(result)}")
        if session_present:
            return
        try:
            await wait_for(asyncio.shield(self._suback), config.connect_timeout)
        except TimeoutError:
            raise ConnectionLost(f"no answer (SUBACK) from the broker within {config.connect_timeout} s") from None
        self._check_suback()

    def _check_suback(self) -> None:
        """Raise ConnectionLost if the broker refused a subscription (once the SUBACK is there)."""
        future = self._suback
        if future is None or not future.done():
            return
        self._suback = None
        granted = future.result()
        refused = [f"{topic} ({code})" for (topic, _), code in zip(self._wanted, granted, strict=False)
                   if code.is_failure]
        if refused:
            raise ConnectionLost(f"the broker refused the subscriptions {', '.join(refused)}")
        for (topic, qos), code in zip(self._wanted, granted, strict=False):
            if code.value < qos:
                log.warning("the broker granted a lower QoS than asked", connector=self.name, topic=topic,
                            asked=qos, granted=code.value)

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reasons: list[Any], properties: Any) -> None:
        if self._suback is not None and not self._suback.done():
            self._suback.set_result(list(reasons))
            self._wake.set()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        self._delivered += 1
        if self._closing or self._acks is None or not self._acks.alive:
            return  # not acknowledged: the broker delivers it again on the next session
        acks = self._acks
        slot = acks.track(message.mid, message.qos) if message.qos else None
        try:
            readings = self._readings_of(message)
        except Malformed as exc:
            self._reject(message, exc.reason, exc.detail)
            if slot is not None:
                acks.complete((slot,))
            return
        except Exception as exc:  # a bug here must not stop the connector
            self._reject(message, "internal_error", f"{type(exc).__name__}: {exc}")
            if slot is not None:
                acks.complete((slot,))
            return
        self.accepted += 1
        if not readings:  # a Sparkplug STATE, command or stale death: nothing to store
            if slot is not None:
                acks.complete((slot,))
            return
        self._inbox.append((readings, slot))
        self._wake.set()
        if len(self._inbox) >= self._config.max_buffered:
            self._pause_reading()

    def _readings_of(self, message: Any) -> list[Reading]:
        payload: bytes = message.payload
        if len(payload) > self._config.max_payload:
            raise Malformed("oversized", f"{len(payload)} bytes is more than max_payload "
                                         f"({self._config.max_payload})")
        if message.retain and not self._config.ingest_retained:
            raise Malformed("retained", "retained message skipped (ingest_retained: false)")
        try:
            topic = message.topic
        except UnicodeDecodeError:
            raise Malformed("bad_encoding", "the topic is not UTF-8") from None
        destination = self._router.route(topic)
        if destination is None:
            if self.sparkplug is not None and topic.startswith(f"{SPARKPLUG_NAMESPACE}/STATE/"):
                return self.sparkplug.readings(topic, payload, None, now_us())
            raise Malformed("unknown_topic", "no subscription template or tag matches this topic")
        if destination.sparkplug is not None:
            assert self.sparkplug is not None
            return self.sparkplug.readings(topic, payload, destination.sparkplug, now_us())
        return destination.parser.parse(payload, destination.equipment, destination.parameter,
                                        destination.unit, now_us())

    def _publish(self, topic: str, body: bytes) -> None:
        """Publish a Sparkplug command (a rebirth request) on the current connection, QoS 0."""
        client = self._client
        if client is not None and self._link_up:
            client.publish(topic, body, qos=0)

    def _reject(self, message: Any, reason: str, detail: str) -> None:
        self.rejected[reason] += 1
        metric = self._rejected_metrics.get(reason)
        if metric is None:
            metric = self._rejected_metrics[reason] = MESSAGES_REJECTED.labels(self.name, reason)
        metric.inc()
        try:
            topic = message.topic
        except UnicodeDecodeError:
            topic = repr(message._topic)
        self._rejections.failed(reason, "mqtt message rejected", connector=self.name, reason=reason,
                                topic=topic[:200], detail=detail)
        if self._dead_letters is not None and self._dead_letters.write(
                topic, message.payload, message.qos, bool(message.retain), reason, detail):
            DEAD_LETTERS.labels(self.name).inc()

    def _durable(self, acks: _Acknowledger, slots: list[_Slot]) -> None:
        """Called by the pipeline once the readings of these messages are durable."""
        self._in_pipeline -= len(slots)
        if acks.alive and acks is self._acks:
            acks.complete(slots)
            return
        # Stale (counted as abandoned when the link went down).  QoS 2: the broker resends PUBREL for these
        # on the resumed session and waits for our PUBCOMP.
        owed = [slot.mid for slot in slots if slot.qos == 2]
        if owed:
            if self._link_up and self.session_present and self._acks is not None:
                for mid in owed:
                    self._acks.client.ack(mid, 2)
            else:
                self._pubcomp_owed.extend(owed)
