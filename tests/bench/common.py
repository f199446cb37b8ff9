"""Helpers the benchmark scripts share: free ports, scratch databases, process CPU time, metric scrapes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dsn_for(server_dsn: str, database: str) -> str:
    """The server's DSN with another database name."""
    return urlunsplit(urlsplit(server_dsn)._replace(path=f"/{database}"))


async def admin(server_dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(server_dsn, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS      # utime, stime


def scrape(port: int) -> dict[str, float]:
    """The daemon's ingestor_* metrics, each summed over its labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    totals: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r"^(ingestor_[a-z_]+)(?:\{[^}]*\})? ([0-9.e+-]+)$", line)
        if match:
            totals[match.group(1)] = totals.get(match.group(1), 0.0) + float(match.group(2))
    return totals


REPO = Path(__file__).resolve().parents[2]


def start_ingestor(command: str, config: dict[str, Any], tmp: Path) -> subprocess.Popen[bytes]:
    """``ingestor COMMAND -c TMP/COMMAND.yaml`` with ``config`` written there, without the caller's
    ``INGESTOR_*`` environment; its stderr goes to ``TMP/COMMAND.log``."""
    path = tmp / f"{command}.yaml"
    path.write_text(json.dumps(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("INGESTOR_")}
    return subprocess.Popen([sys.executable, "-m", "ingestor", command, "-c", str(path)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=(tmp / f"{command}.log").open("w"))


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


async def wait_ready(port: int, process: subprocess.Popen[bytes], what: str, timeout: float = 60) -> None:
    """Until ``/readyz`` on the port answers 200; exits the benchmark when the process ended or time ran out."""
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(_ready, port):
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{what} did not become ready (exit {process.poll()}); see its log")
        await asyncio.sleep(0.2)
