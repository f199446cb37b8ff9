"""paho's client with a faster receive path for the connector (issue 15).

paho 2.x reads a packet with one ``recv`` for the command byte, one per remaining-length byte and one for the
body: three to four system calls per 60-byte PUBLISH.  For a QoS 0/1 PUBLISH it then builds an MQTT 5
``Properties`` object (even when the packet has none), formats a debug log line's arguments, and runs the
topic through its callback matcher, although the connector has one ``on_message`` and no filtered callbacks.
A profile of the daemon draining a backlog showed these as the largest costs of the intake.

:class:`FastClient` changes only these, through paho's own internal hooks (``_sock_recv``, ``_sock_close``,
``_handle_publish``), so everything else (keepalive, acks, QoS 2, reconnects, TLS) stays paho's:

* ``_sock_recv`` is served from a buffer refilled by one large ``recv`` (``READ_SIZE``).  Bytes in the buffer
  are invisible to the event loop's selector, so :meth:`FastClient.pending_input` tells the connector to keep
  reading (as it already does for TLS, whose decrypted bytes the selector cannot see either).  The buffer
  belongs to one socket: ``_sock_close`` drops it.
* ``_handle_publish`` decodes a QoS 0/1 PUBLISH itself when it carries no MQTT 5 properties (the common case)
  and hands it straight to ``on_message`` when there are no filtered callbacks.  A packet with properties,
  a QoS 2 packet, a malformed or empty-topic packet, or a client with ``message_callback_add`` callbacks goes
  through paho's own code unchanged.
"""

from __future__ import annotations

from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.exception import MalformedPacket

PUBACK = 0x40

READ_SIZE = 256 * 1024
"""Bytes asked for by one ``recv`` of the socket."""


class Message:
    """What ``on_message`` gets from the short path: the fields of paho's ``MQTTMessage`` the connector reads,
    without the ``MQTTMessageInfo`` (and its ``threading.Condition``) paho builds for every received message."""

    __slots__ = ("_topic", "dup", "mid", "payload", "properties", "qos", "retain", "timestamp")

    def __init__(self, mid: int, topic: bytes, qos: int, dup: bool, retain: bool, payload: bytes) -> None:
        self.mid = mid
        self._topic = topic
        self.qos = qos
        self.dup = dup
        self.retain = retain
        self.payload = payload
        self.properties = None
        self.timestamp = 0.0

    @property
    def topic(self) -> str:
        """The topic as text; ``UnicodeDecodeError`` when it is not UTF-8 (as paho's ``MQTTMessage``)."""
        return self._topic.decode("utf-8")


class FastClient(mqtt.Client):
    """``paho.mqtt.client.Client`` with a buffered socket read and a short PUBLISH path (see the module)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rdata = b""
        self._rpos = 0

    def pending_input(self) -> bool:
        """Received bytes wait in the buffer: read again without waiting for the selector."""
        return self._rpos < len(self._rdata)

    def _loop(self, timeout: float = 1.0) -> MQTTErrorCode:
        """paho's own loop (``loop_start``/``loop_forever``) selects on the socket: bytes already read ahead are
        taken first, and the select then does not wait."""
        if self.pending_input():
            rc = self.loop_read()
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return rc
            timeout = 0.0
        return super()._loop(timeout)

    def _sock_recv(self, bufsize: int) -> bytes:
        data, pos = self._rdata, self._rpos
        if pos >= len(data):
            data = super()._sock_recv(max(bufsize, READ_SIZE))   # BlockingIOError / b"" (closed) pass through
            if len(data) <= bufsize:
                self._rdata, self._rpos = b"", 0
                return data
            self._rdata, pos = data, 0
        end = pos + bufsize
        self._rpos = end
        if end >= len(data):
            self._rdata, self._rpos = b"", 0
        return data[pos:end]

    def _packet_read(self) -> MQTTErrorCode:
        """A packet that lies whole in the buffer is taken from it in one piece; anything else (a packet split
        across reads, an empty buffer) goes through paho's byte-by-byte reader."""
        data, pos = self._rdata, self._rpos
        size = len(data)
        if pos + 2 > size or self._in_packet["command"] or self._in_packet["have_remaining"]:
            return super()._packet_read()
        command = data[pos]
        cursor, length, shift = pos + 1, 0, 0
        while True:
            byte = data[cursor]
            length += (byte & 127) << shift
            cursor += 1
            if not byte & 128:
                break
            shift += 7
            if shift > 21 or cursor >= size:
                return super()._packet_read()   # long or split length
        end = cursor + length
        if end > size:
            return super()._packet_read()   # the rest is still in the socket
        self._rpos = end
        if end == size:
            self._rdata, self._rpos = b"", 0
        self._in_packet["command"] = command
        self._in_packet["packet"] = data[cursor:end]  # type: ignore[typeddict-item]  # bytes serve as well
        try:
            rc: MQTTErrorCode = self._packet_handle()
        except MalformedPacket as exc:
            self._easy_log(mqtt.MQTT_LOG_DEBUG, "Received malformed packet: %s", exc)
            rc = MQTTErrorCode.MQTT_ERR_PROTOCOL
        self._in_packet = {"command": 0, "have_remaining": 0, "remaining_count": [], "remaining_mult": 1,
                           "remaining_length": 0, "packet": bytearray(b""), "to_process": 0, "pos": 0}
        with self._msgtime_mutex:
            self._last_bytes_received = mqtt.time_func()
        return rc

    def _packet_write(self) -> MQTTErrorCode:
        """PUBACKs queued one after the other leave in one ``send`` (an ack batch is hundreds of them)."""
        queue = self._out_packet
        if len(queue) > 1 and queue[0]["command"] == PUBACK and queue[1]["command"] == PUBACK \
                and queue[0]["pos"] == 0:
            parts: list[bytes | bytearray] = []
            while queue and queue[0]["command"] == PUBACK and queue[0]["pos"] == 0 and len(parts) < 4096:
                parts.append(queue.popleft()["packet"])
            joined = b"".join(parts)
            queue.appendleft({"command": PUBACK, "mid": 0, "qos": 0, "pos": 0, "to_process": len(joined),
                              "packet": joined, "info": None})
        return super()._packet_write()

    def _sock_close(self) -> None:
        self._rdata, self._rpos = b"", 0
        super()._sock_close()

    def _handle_publish(self) -> MQTTErrorCode:
        header = self._in_packet["command"]
        qos = (header & 0x06) >> 1
        packet = self._in_packet["packet"]
        length = len(packet)
        if qos == 2 or length < 2 or self._on_message_filtered._root._children:  # message_callback_add used
            return super()._handle_publish()
        end = 2 + (packet[0] << 8 | packet[1])
        if end == 2 or end + (2 if qos else 0) > length:
            return super()._handle_publish()   # empty topic / malformed
        topic = bytes(packet[2:end])
        mid = 0
        if qos:
            mid = packet[end] << 8 | packet[end + 1]
            end += 2
        if self._protocol == mqtt.MQTTv5:
            if end >= length or packet[end] != 0:
                return super()._handle_publish()   # has properties
            end += 1
        message = Message(mid, topic, qos, bool(header & 0x08), bool(header & 0x01), bytes(packet[end:]))
        on_message = self.on_message
        if on_message is not None:
            try:
                on_message(self, self._userdata, message)  # type: ignore[arg-type]
            except Exception as err:
                self._easy_log(mqtt.MQTT_LOG_ERR, "Caught exception in on_message: %s", err)
                if not self.suppress_exceptions:
                    raise
        if qos == 1 and not self._manual_ack:
            return self._send_puback(message.mid)
        return MQTTErrorCode.MQTT_ERR_SUCCESS
