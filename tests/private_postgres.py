"""A private PostgreSQL 15 server on a free loopback port, for tests that stop and start their database.

The shared servers on 5432/5433 are never stopped by a test; this one belongs to the test that made it.
initdb refuses to run as root, so when the tests run as root the cluster is created and run as ``postgres``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .helpers import free_port

BIN = Path(os.environ.get("INGESTOR_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


def _as_postgres(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    if os.geteuid() == 0:
        args = ["runuser", "-u", "postgres", "--", *args]
    return subprocess.run(args, check=True, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]


class PrivatePostgres:
    """``start()``, ``stop(mode)``, ``dsn(database)``; ``close()`` removes everything."""

    def __init__(self, ssl: tuple[Path, Path] | None = None, client_ca: Path | None = None,
                 cert_users: tuple[str, ...] = ()) -> None:
        """``ssl``: the server's certificate and key (PEM) to turn on ``ssl`` with; ``client_ca``: the CA of
        client certificates, and ``cert_users`` the users who must log in with one (``hostssl … cert``)."""
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="ingestor-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "run"
        self.socket_dir.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.socket_dir, "postgres", "postgres")
        _as_postgres([str(BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                      "-E", "UTF8", "--no-sync"])
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                       f"unix_socket_directories = '{self.socket_dir}'\nfsync = off\nmax_connections = 50\n")
            if ssl is not None:
                for source, name in zip(ssl, ("server.crt", "server.key"), strict=True):
                    target = self.data / name
                    shutil.copyfile(source, target)
                    target.chmod(0o600)
                    if os.geteuid() == 0:
                        shutil.chown(target, "postgres", "postgres")
                conf.write("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n")
                if client_ca is not None:
                    shutil.copyfile(client_ca, self.data / "client-ca.crt")
                    if os.geteuid() == 0:
                        shutil.chown(self.data / "client-ca.crt", "postgres", "postgres")
                    conf.write("ssl_ca_file = 'client-ca.crt'\n")
        if cert_users:
            hba = self.data / "pg_hba.conf"
            lines = "".join(f"hostssl all {user} 127.0.0.1/32 cert\nhost all {user} 127.0.0.1/32 reject\n"
                            for user in cert_users)
            hba.write_text(lines + hba.read_text())

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        _as_postgres([str(BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"),
                      "-w", "-t", "30", "start"])

    def stop(self, mode: str = "fast") -> None:
        """``immediate`` is a crash (no checkpoint, connections cut); ``fast`` a clean shutdown."""
        _as_postgres([str(BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop"])

    def running(self) -> bool:
        try:
            _as_postgres([str(BIN / "pg_ctl"), "-D", str(self.data), "status"])
            return True
        except subprocess.CalledProcessError:
            return False

    def close(self) -> None:
        if self.running():
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
