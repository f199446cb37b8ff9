"""Independent peers written in JavaScript (tests/peers/), run as child processes on free loopback ports.

Our simulators share asyncua with the connector, so they cannot show where asyncua and another implementation
disagree; node-opcua can.  ``deploy/dev/setup.sh`` installs the packages (``npm ci`` from the lock file); when
they are missing, the first test that needs them installs them the same way.  Node.js and npm are required: a
missing one is a failed test, never a skipped one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
from pathlib import Path

from .helpers import free_port

PEERS = Path(__file__).resolve().parent / "peers"


def ensure_installed() -> None:
    """``npm ci`` in tests/peers unless its node_modules matches the lock file already."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise AssertionError(f"{tool} is needed for the tests against node-opcua (apt-get install nodejs npm)")
    installed = PEERS / "node_modules" / ".package-lock.json"
    if installed.is_file() and installed.stat().st_mtime >= (PEERS / "package-lock.json").stat().st_mtime:
        return
    result = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=PEERS, capture_output=True, text=True,
                            timeout=600)
    if result.returncode:
        raise AssertionError(f"npm ci in {PEERS} failed:\n{result.stdout}\n{result.stderr}")


class NodeOpcUaServer:
    """``tests/peers/opcua_server.js``: ``endpoint`` once started; ``secure`` offers only
    Basic256Sha256/SignAndEncrypt and trusts no client certificate."""

    def __init__(self, pki: Path, *, secure: bool = False) -> None:
        self.port = free_port()
        self.pki = pki
        self.secure = secure
        self.endpoint = f"opc.tcp://127.0.0.1:{self.port}"
        self.output: list[str] = []
        self._process: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 60.0) -> None:
        ensure_installed()
        args = [str(self.port), str(self.pki), *(["secure"] if self.secure else [])]
        self._process = await asyncio.create_subprocess_exec(
            "node", str(PEERS / "opcua_server.js"), *args, cwd=PEERS, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env={**os.environ, "HOME": str(self.pki)})
        assert self._process.stdout is not None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    line = (await self._process.stdout.readline()).decode(errors="replace")
                    if not line:
                        raise AssertionError("node-opcua server exited:\n" + "".join(self.output))
                    self.output.append(line)
                    if line.startswith("LISTENING "):
                        break
        except BaseException:
            await self.stop()
            raise
        self._drain = asyncio.create_task(self._read_rest())

    async def _read_rest(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        while line := await self._process.stdout.readline():
            self.output.append(line.decode(errors="replace"))

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def __aenter__(self) -> NodeOpcUaServer:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()
        drain, self._drain = self._drain, None
        if drain is not None:
            drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drain
