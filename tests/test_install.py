"""The production install on Debian, end to end, in a pristine Debian root (deploy/dev/install-root.sh).

The cached root (python3 and python3-venv only) is copied fresh for this module, the source tree is copied
in, and ``deploy/debian/install.sh`` runs there as root the way an operator runs it.  Then, inside that root:
``check-config`` as the ``ingestor`` user, the daemon as that user with the unit's ExecStart line against the
Modbus simulator on the host's loopback (a chroot shares the network) and a fresh database on the machine's
PostgreSQL, a SIGTERM drain, and both uninstalls.  systemd is not PID 1 here, so the daemon is started by
hand; the root's ``systemd-analyze verify`` still checks the installed unit against the installed files.

Needs root (debootstrap, chroot); the first run on a machine makes the cached root and the wheelhouse (about a
minute each, with the machine's apt mirror and pip configuration), later runs copy them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from .conftest import REPO, Database, _create_database, _drop_database
from .helpers import free_port, http_get, run_on, wait_until

pytestmark = pytest.mark.slow

INSTALL_ROOT = REPO / "deploy" / "dev" / "install-root.sh"
SOURCE = ("pyproject.toml", "README.md", "ingestor", "connectors", "config", "deploy")
SRC = "/usr/local/src/ingestor"  # where the operator has the clone, inside the root
PATH = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"
# The unit's ExecStart line, which the daemon is started with below.
UNIT_EXEC = "/opt/ingestor/venv/bin/ingestor run -c /etc/ingestor/config.yaml"

CONFIG = """
instance_id: install-test
database:
  url: {dsn}
plant:
  sites:
    - code: PLANT-1
      name: Plant 1
      timezone: Europe/Berlin
      areas:
        - code: A1
          name: Area 1
          work_centers:
            - code: LINE-1
              name: Line 1
              equipment:
                - {{code: PRESS-01, name: Press 1}}
connectors:
  - type: modbus
    name: press-line-1
    host: 127.0.0.1
    port: {modbus_port}
    timeout: 1s
    interval: 200ms
    reconnect: {{initial: 200ms, max: 2s}}
    devices:
      - unit_id: 1
        name: press-01
        tags:
          - {{equipment: PRESS-01, parameter: parts_total, unit: pcs, register: holding, address: 0, data_type: uint32, byte_order: CDAB}}
          - {{equipment: PRESS-01, parameter: temperature, unit: degC, register: input, address: 0, data_type: float32}}
pipeline:
  batch_rows: 50
  batch_age: 200ms
  spool_dir: /var/lib/ingestor/spool
http:
  listen: 127.0.0.1:{http_port}
logging:
  format: json
"""


def _run(args: list[str], timeout: float = 240, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def _in_root(root: Path, *command: str, user: str | None = None, check: bool = True,
             timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """A command inside the root, as root or as USER:GROUP, with a clean environment."""
    spec = [f"--userspec={user}"] if user else []
    return _run(["chroot", *spec, str(root), "env", "-i", PATH, "LANG=C.UTF-8", *command],
                timeout=timeout, check=check)


def _wheel(dest: Path) -> Path:
    """The project's wheel, built here from the clone (no simulators in it, see docs/install.md)."""
    src = dest / "src"
    src.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md", "ingestor", "connectors"):
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, src / name)
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
          "--wheel-dir", str(dest), str(src)])
    return next(dest.glob("*.whl"))


def _snapshot(root: Path) -> list[tuple[str, int, int, int, str]]:
    """What an install leaves: paths, modes, owners and the contents of the files it writes."""
    rows: list[tuple[str, int, int, int, str]] = []
    for top in ("etc/ingestor", "var/lib/ingestor", "etc/systemd/system/ingestor.service", "opt/ingestor/README.md"):
        base = root / top
        for path in [base, *sorted(base.rglob("*"))] if base.is_dir() else [base]:
            st = path.lstat()
            content = path.read_text() if path.is_file() else ""
            rows.append((str(path.relative_to(root)), st.st_mode, st.st_uid, st.st_gid, content))
    for db in ("etc/passwd", "etc/group"):
        rows += [(db, 0, 0, 0, line) for line in (root / db).read_text().splitlines() if "ingestor" in line]
    venv = root / "opt/ingestor/venv"
    rows.append(("venv files", 0, 0, 0, "\n".join(sorted(str(p.relative_to(venv)) for p in venv.rglob("*")
                                                           if "__pycache__" not in p.parts))))
    return rows


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.fail("tests/test_install.py needs root (debootstrap, chroot, useradd inside the root)", pytrace=False)
    work = tmp_path_factory.mktemp("install")
    wheel = _wheel(work / "wheel")
    wheelhouse = Path(_run([str(INSTALL_ROOT), "wheelhouse", str(wheel)], timeout=600).stdout.strip())
    fresh = work / "root"
    _run([str(INSTALL_ROOT), "fresh", str(fresh)], timeout=600)
    try:
        (fresh / SRC.lstrip("/")).mkdir(parents=True)
        for name in SOURCE:
            (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, fresh / SRC.lstrip("/") / name)
        shutil.copytree(wheelhouse, fresh / "root/wheelhouse")
        shutil.copy(wheel, fresh / "root" / wheel.name)
        yield fresh
    finally:
        _run(["rm", "-rf", "--one-file-system", str(fresh)])  # nothing is ever mounted inside it


@pytest.fixture(scope="module")
def database() -> Iterator[Database]:
    """A fresh database on the machine's PostgreSQL (127.0.0.1:5432)."""
    db = _create_database("postgres", __name__)
    yield db
    _drop_database(db)


@pytest.fixture(scope="module")
def modbus_port() -> Iterator[int]:
    """The project's Modbus simulator on the host's loopback, which the chroot shares."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "simulators.modbus", "--port", str(port), "--machines", "1"],
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def listening() -> bool:
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", port)) == 0
        wait_until(listening, 30, "the Modbus simulator to listen")
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_install_refuses_without_root_and_installs_idempotently(root: Path, database: Database,
                                                                  modbus_port: int) -> None:
    refused = _in_root(root, f"{SRC}/deploy/debian/install.sh", user="nobody:nogroup", check=False)
    assert refused.returncode != 0 and "must be run as root" in refused.stderr, refused
    assert not (root / "opt/ingestor").exists()

    # First run: the wheel is built from the source tree, offline from the wheelhouse.
    first = _in_root(root, f"{SRC}/deploy/debian/install.sh", "--wheelhouse", "/root/wheelhouse")
    assert "created the system user ingestor" in first.stdout
    assert "no daemon-reload" in first.stdout  # systemd is not running in the root
    assert (root / "etc/ingestor/config.yaml").read_text() == (REPO / "config/generate-demo.yaml").read_text()

    # Then the prebuilt wheel and the plant's own configuration; the demo configuration is kept aside.
    config = root / "root/config.yaml"
    config.write_text(CONFIG.format(dsn=database.dsn, modbus_port=modbus_port, http_port=free_port()))
    wheel = next((root / "root").glob("*.whl")).name
    again = [f"{SRC}/deploy/debian/install.sh", "--wheel", f"/root/{wheel}", "--wheelhouse", "/root/wheelhouse",
             "--config", "/root/config.yaml"]
    _in_root(root, *again)
    assert (root / "etc/ingestor/config.yaml.previous").read_text() == (REPO / "config/generate-demo.yaml").read_text()
    before = _snapshot(root)
    third = _in_root(root, *again)
    assert "created" not in third.stdout, third.stdout
    assert _snapshot(root) == before

    passwd = {line.split(":")[0]: line.split(":") for line in (root / "etc/passwd").read_text().splitlines()}
    uid, gid = int(passwd["ingestor"][2]), int(passwd["ingestor"][3])
    assert passwd["ingestor"][5:] == ["/var/lib/ingestor", "/usr/sbin/nologin"]
    assert uid < 1000  # a system account
    expected = {  # path: (mode, owner, group)
        "etc/ingestor": (0o750, 0, gid), "etc/ingestor/config.yaml": (0o640, 0, gid),
        "etc/ingestor/env": (0o600, 0, 0), "etc/ingestor/credentials": (0o700, 0, 0),
        "var/lib/ingestor": (0o750, uid, gid), "var/lib/ingestor/spool": (0o700, uid, gid),
        "var/lib/ingestor/pki": (0o700, uid, gid), "etc/systemd/system/ingestor.service": (0o644, 0, 0),
        "opt/ingestor/venv/bin/ingestor": (0o755, 0, 0),
    }
    for path, (mode, owner, group) in expected.items():
        st = (root / path).stat()
        assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (mode, owner, group), path
    assert (root / "etc/systemd/system/ingestor.service").read_text() == \
        (REPO / "deploy/systemd/ingestor.service").read_text()
    # The runtime has no simulators, and the daemon's own files are root's: the service cannot change them.
    site = next((root / "opt/ingestor/venv/lib").glob("python3*/site-packages"))
    assert (site / "ingestor").is_dir() and (site / "connectors").is_dir()
    assert not (site / "simulators").exists()


def test_check_config_and_run_as_the_ingestor_user(root: Path, database: Database) -> None:
    checked = _in_root(root, "/opt/ingestor/venv/bin/ingestor", "check-config", "/etc/ingestor/config.yaml",
                       user="ingestor:ingestor")
    assert "config.yaml: OK" in checked.stdout, checked

    http_port = int(next(line for line in (root / "etc/ingestor/config.yaml").read_text().splitlines()
                         if "listen:" in line).rsplit(":", 1)[1])
    log_path = root.parent / "daemon.log"
    with log_path.open("w") as log:  # chroot and env exec: the process is the daemon itself
        daemon = subprocess.Popen(["chroot", "--userspec=ingestor:ingestor", str(root), "env", "-i",
                                   "--chdir=/var/lib/ingestor", PATH, "LANG=C.UTF-8", "HOME=/var/lib/ingestor",
                                   *UNIT_EXEC.split()], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: http_get(f"http://127.0.0.1:{http_port}/readyz")[0] == 200, 60, "/readyz")
        ready = json.loads(http_get(f"http://127.0.0.1:{http_port}/readyz")[1])
        assert ready["connectors"]["press-line-1"]["state"] == "connected", ready

        def readings() -> int:
            counts: list[int] = []

            async def count(conn: asyncpg.Connection) -> None:
                counts.append(int(await conn.fetchval("SELECT count(*) FROM fact_sensor_event")))
            run_on(database.dsn, count)
            return counts[0]
        wait_until(lambda: readings() >= 10, 60, "Modbus readings in fact_sensor_event")
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=45) == 0, log_path.read_text()
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    stopped = [line for line in lines if line["event"] == "ingestor stopped"]
    assert stopped, log_path.read_text()
    assert stopped[0]["readings_left_in_spool"] == 0 and stopped[0]["readings_written"] == readings()
    assert not [line for line in lines if line.get("level") == "error"], log_path.read_text()
    # The spool was the ingestor user's to write.
    assert all(p.stat().st_uid == (root / "var/lib/ingestor").stat().st_uid
               for p in (root / "var/lib/ingestor").rglob("*"))


def test_installed_unit_verifies_against_the_installed_files(root: Path) -> None:
    # The root's own systemd (Debian's current one, not this machine's) checks the unit: its settings, and that
    # the ExecStart/ExecStartPre programs exist and are executable there.
    verified = _in_root(root, "systemd-analyze", "verify", "/etc/systemd/system/ingestor.service", check=False)
    assert verified.returncode == 0 and not verified.stderr.strip(), verified
    security = _in_root(root, "systemd-analyze", "security", "--offline=true",
                        "/etc/systemd/system/ingestor.service", check=False)
    match = re.search(r"Overall exposure level for ingestor\.service:\s*([0-9.]+)", security.stdout)
    assert match and float(match.group(1)) <= 2.0, security


def test_uninstall_keeps_then_purges(root: Path) -> None:
    kept = _in_root(root, f"{SRC}/deploy/debian/uninstall.sh")
    assert "kept /etc/ingestor" in kept.stdout and "kept /var/lib/ingestor" in kept.stdout, kept.stdout
    assert not (root / "opt/ingestor").exists()
    assert not (root / "etc/systemd/system/ingestor.service").exists()
    for db in ("etc/passwd", "etc/group", "etc/shadow"):
        assert not [line for line in (root / db).read_text().splitlines() if line.startswith("ingestor:")], db
    assert (root / "etc/ingestor/config.yaml").is_file() and (root / "var/lib/ingestor/spool").is_dir()

    _in_root(root, f"{SRC}/deploy/debian/uninstall.sh", "--purge")
    assert not (root / "etc/ingestor").exists() and not (root / "var/lib/ingestor").exists()
    again = _in_root(root, f"{SRC}/deploy/debian/uninstall.sh", "--purge")  # nothing left: still fine
    assert again.returncode == 0

