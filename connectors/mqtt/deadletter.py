"""The dead-letter file: every rejected MQTT message, one JSON object per line, so an operator can see what
a gateway sends wrong and replay it once the tag map is fixed.

Each line: ``time`` (ISO 8601 UTC), ``connector``, ``topic``, ``qos``, ``retain``, ``reason``, ``detail`` and
the payload, as ``payload`` (text) when it is UTF-8 or ``payload_base64`` otherwise; an oversized payload is
cut to its first ``KEEP_OVERSIZED`` bytes and marked ``truncated``.  The file is rotated to ``PATH.1`` when it
passes ``max_size``, so it cannot fill the disk.  A failure to write is logged and never stops the connector.
"""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from ingestor.contract import get_logger

log = get_logger(__name__)

KEEP_OVERSIZED = 4096


class DeadLetterFile:
    """Appends rejected messages to a JSON-lines file, rotating it at ``max_size`` bytes."""

    def __init__(self, path: Path, max_size: int, connector: str) -> None:
        self.path = path
        self.max_size = max_size
        self.connector = connector
        self._file: IO[str] | None = None
        self._size = 0
        self._failed = False

    def write(self, topic: str, payload: bytes, qos: int, retain: bool, reason: str, detail: str) -> bool:
        record: dict[str, object] = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "connector": self.connector, "topic": topic, "qos": qos, "retain": retain, "reason": reason,
            "detail": detail,
        }
        if len(payload) > KEEP_OVERSIZED and reason == "oversized":
            record["size"] = len(payload)
            record["truncated"] = True
            payload = payload[:KEEP_OVERSIZED]
        try:
            record["payload"] = payload.decode("utf-8")
        except UnicodeDecodeError:
            record["payload_base64"] = base64.b64encode(payload).decode("ascii")
        line = json.dumps(record) + "\n"  # ASCII: one physical line whatever the payload holds
        try:
            handle = self._open()
            if self._size and self._size + len(line) > self.max_size:
                handle = self._rotate()
            handle.write(line)
            handle.flush()
            self._size += len(line.encode("utf-8"))
        except OSError as exc:
            if not self._failed:
                log.error("cannot write the MQTT dead-letter file", path=str(self.path), error=str(exc))
                self._failed = True
            self.close()
            return False
        self._failed = False
        return True

    def _open(self) -> IO[str]:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
            self._size = self._file.tell()
        return self._file

    def _rotate(self) -> IO[str]:
        self.close()
        os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        return self._open()

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None
