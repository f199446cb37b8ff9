"""systemd's notification protocol, end to end: the real `ingestor run` under a NOTIFY_SOCKET bound by the test
(in the abstract namespace, as systemd may hand it), with WATCHDOG_USEC set: READY=1 once /readyz says ready,
STATUS= lines with readings per second and the spool, WATCHDOG=1 every half interval, STOPPING=1 on SIGTERM."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from ingestor.service.notify import SystemdNotifier

from .conftest import REPO, Database
from .helpers import free_port, http_get, wait_until
from .test_daemon import CONFIG

WATCHDOG_SECONDS = 2.0


class NotifySocket:
    """A datagram socket systemd would own, collecting each message with the moment it arrived."""

    def __init__(self, abstract: bool = True, directory: Path | None = None) -> None:
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"ingestor-test-{uuid.uuid4().hex}"
            self.socket.bind("\0" + name)
            self.env = "@" + name
        else:
            assert directory is not None
            path = directory / "notify.sock"
            self.socket.bind(str(path))
            self.env = str(path)
        self.socket.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.socket.recv(4096)
            except TimeoutError:
                continue
            with self._lock:
                self.messages.append((time.monotonic(), data.decode()))

    def seen(self, prefix: str) -> list[tuple[float, str]]:
        with self._lock:
            return [(at, line) for at, message in self.messages for line in message.splitlines()
                    if line.startswith(prefix)]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.socket.close()


def test_run_notifies_ready_status_watchdog_and_stopping(fresh_database: Database, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(dsn=fresh_database.dsn, port=port, spool=tmp_path / "spool"))
    notify = NotifySocket()
    env = {k: v for k, v in os.environ.items() if k != "INGESTOR_DATABASE_URL"}
    env.update(NOTIFY_SOCKET=notify.env, WATCHDOG_USEC=str(int(WATCHDOG_SECONDS * 1e6)))
    log_path = tmp_path / "daemon.log"
    with log_path.open("w") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "ingestor", "run", "-c", str(config)], cwd=REPO, env=env,
                                   stdout=log_file, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: notify.seen("READY=1"), 30, "READY=1")
        # ready means what /readyz means: the schema is applied and the writer connected
        status, body = http_get(f"http://127.0.0.1:{port}/readyz")
        assert status == 200, body
        # STATUS= every few seconds, with the rate and the spool depth; the first after readiness is in READY's datagram
        wait_until(lambda: len(notify.seen("STATUS=")) >= 3, 20, "three STATUS= lines")
        last = notify.seen("STATUS=")[-1][1]
        assert "readings/s" in last and "in the spool" in last, last
        assert any(float(line.split("=", 1)[1].split()[0]) > 0 for _, line in notify.seen("STATUS=")[1:]), \
            notify.seen("STATUS=")
        # WATCHDOG=1 every half interval: never a gap systemd would take for a hung daemon
        wait_until(lambda: len(notify.seen("WATCHDOG=1")) >= 6, 20, "six WATCHDOG=1")
        pings = [at for at, _ in notify.seen("WATCHDOG=1")]
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert all(gap < WATCHDOG_SECONDS for gap in gaps), gaps
        assert sorted(gaps)[len(gaps) // 2] >= WATCHDOG_SECONDS / 2 * 0.8, gaps
        assert not notify.seen("STOPPING=1")

        process.send_signal(signal.SIGTERM)
        wait_until(lambda: notify.seen("STOPPING=1"), 10, "STOPPING=1")
        assert process.wait(timeout=20) == 0, log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        notify.close()
    ready_at = notify.seen("READY=1")[0][0]
    assert len(notify.seen("READY=1")) == 1
    assert notify.seen("STOPPING=1")[0][0] > ready_at


def test_notifier_sends_to_a_path_socket_and_does_nothing_without_one(tmp_path: Path) -> None:
    notify = NotifySocket(abstract=False, directory=tmp_path)
    try:
        notifier = SystemdNotifier({"NOTIFY_SOCKET": notify.env, "WATCHDOG_USEC": "500000",
                                    "WATCHDOG_PID": str(os.getpid() + 1)})
        assert notifier.watchdog is None, "WATCHDOG_PID names another process: not ours to ping"
        assert notifier.notify("READY=1", "STATUS=hello")
        wait_until(lambda: notify.seen("STATUS=hello"), 5, "the datagram")
        assert notify.seen("READY=1")
        notifier.close()
    finally:
        notify.close()
    silent = SystemdNotifier({})
    assert not silent.enabled and not silent.notify("READY=1")
