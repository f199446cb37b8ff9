"""The MQTT connector's conformance harness, and a private Mosquitto for tests that stop or restart a broker.

:class:`PrivateBroker` runs ``/usr/sbin/mosquitto`` on a free loopback port with its own configuration and
persistence directory, so stopping it never disturbs the shared broker on 127.0.0.1:1883.  ``stop(abrupt=True)``
kills it (a power cut: what was not saved is gone); ``stop()`` terminates it (Mosquitto saves its persistent
sessions and queued messages, which a restart on the same port and directory brings back).

:class:`MqttHarness` is that broker plus our simulator (simulators/mqtt.py) publishing the machine model.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from connectors.mqtt.config import MqttConfig
from ingestor.contract import ConnectorConfig
from simulators.machine import PARAMETERS, default_machines
from simulators.mqtt import MqttSimulator

from .helpers import free_port

MOSQUITTO = "/usr/sbin/mosquitto"


class PrivateBroker:
    """A Mosquitto of our own on a free loopback port, with persistence in a temporary directory."""

    def __init__(self, port: int | None = None, extra: str = "") -> None:
        self.port = port or free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="mosquitto-"))
        self.directory.chmod(0o777)   # started as root, mosquitto drops to its own user, which must write here
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    def write_config(self) -> Path:
        path = self.directory / "mosquitto.conf"
        path.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.directory}/\n"
            "autosave_interval 1\n"
            "max_queued_messages 200000\n"
            f"log_dest file {self.directory}/mosquitto.log\n"
            + self.extra)
        return path

    def start(self, timeout: float = 10.0) -> None:
        config = self.write_config()
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if self.process.poll() is not None:
                    log = (self.directory / "mosquitto.log")
                    raise RuntimeError(f"mosquitto exited: {log.read_text() if log.exists() else ''}") from None
                if time.monotonic() > deadline:
                    raise RuntimeError(f"mosquitto did not listen on {self.port}") from None
                time.sleep(0.05)

    def stop(self, abrupt: bool = False) -> None:
        if self.process is None:
            return
        if abrupt:
            self.process.kill()
        else:
            self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


class MqttHarness:
    """Private Mosquitto + the MQTT simulator publishing two presses as JSON, QoS 1."""

    name = "mqtt"

    def __init__(self) -> None:
        self.broker = PrivateBroker()
        self.prefix = f"conformance/{uuid.uuid4().hex[:8]}"
        self.machines = default_machines(2)
        self.expected = {(m.code, p) for m in self.machines for p in PARAMETERS}
        self.simulator: MqttSimulator | None = None

    async def start(self) -> None:
        await asyncio.to_thread(self.broker.start)
        if self.simulator is None:  # keeps publishing (and reconnecting) across broker restarts
            self.simulator = MqttSimulator(port=self.broker.port, rate=200, machines=self.machines,
                                           prefix=self.prefix, qos=1).start()

    async def stop(self) -> None:
        await asyncio.to_thread(self.broker.stop, True)

    def connector_config(self) -> ConnectorConfig:
        return MqttConfig.model_validate({
            "type": "mqtt", "name": "conformance-mqtt", "port": self.broker.port,
            "client_id": f"conformance-{uuid.uuid4().hex[:8]}", "keepalive": "5s", "connect_timeout": "3s",
            "reconnect": {"initial": "200ms", "max": "1s"},
            "subscriptions": [{"topic": self.prefix + "/{equipment}/{parameter}", "qos": 1}],
        })

    async def close(self) -> None:
        if self.simulator is not None:
            await asyncio.to_thread(self.simulator.stop, 0.5)
        await asyncio.to_thread(self.broker.close)
