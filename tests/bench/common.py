"""Helpers the benchmark scripts share: free ports, scratch databases, process CPU time, metric scrapes."""

from __future__ import annotations

import os
import re
import socket
import urllib.request
from pathlib import Path
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
