"""A spool directory the daemon cannot use ends ``ingestor run`` with one clear line and exit code 2, never a
traceback: read-only file system, no write permission, a regular file, a ``spool.sqlite3`` that is no SQLite
file.

Real processes.  The tests run as root, and root ignores permission bits, so the permission case runs the
daemon as root *without* the capabilities that override them (``setpriv`` drops CAP_DAC_OVERRIDE and
CAP_DAC_READ_SEARCH): a real permission check by the kernel, on a directory of mode 0555.  (Running it as
``nobody`` does not work here: the interpreter lives under /root, which only root may enter.)  The read-only
case mounts a tmpfs and remounts it read-only.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .conftest import REPO

CONFIG = """
database: {{url: "postgresql://postgres@127.0.0.1:1/unused", apply_schema: false}}
plant:
  sites: [{{code: S, name: S, timezone: UTC, areas: [{{code: A, name: A, work_centers: [{{code: W, name: W,
           equipment: [{{code: M1, name: M1}}]}}]}}]}}]
connectors:
  - {{type: generate, name: gen, tags: [{{equipment: M1, parameter: t, unit: degC}}]}}
pipeline: {{spool_dir: "{spool}"}}
http: {{enabled: false}}
"""


NO_DAC_OVERRIDE = ["setpriv", "--bounding-set=-dac_override,-dac_read_search",
                   "--inh-caps=-dac_override,-dac_read_search", "--"]


@pytest.fixture
def place() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="spool-errors-") as name:
        os.chmod(name, 0o755)
        yield Path(name)


def run_daemon(place: Path, spool: Path, bound_by_permissions: bool = False) -> subprocess.CompletedProcess[str]:
    config = place / "config.yaml"
    config.write_text(CONFIG.format(spool=spool))
    env = {k: v for k, v in os.environ.items() if k != "INGESTOR_DATABASE_URL"}
    prefix = NO_DAC_OVERRIDE if bound_by_permissions else []
    return subprocess.run([*prefix, sys.executable, "-m", "ingestor", "run", "-c", str(config)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


def read_only(place: Path) -> Path:
    spool = place / "ro"
    spool.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(spool)], check=True)
    subprocess.run(["mount", "-o", "remount,ro", str(spool)], check=True)
    return spool


def not_writable(place: Path) -> Path:
    spool = place / "locked"
    spool.mkdir(mode=0o555)
    spool.chmod(0o555)
    return spool


def a_file(place: Path) -> Path:
    spool = place / "spool-file"
    spool.write_text("not a directory\n")
    return spool


def not_sqlite(place: Path) -> Path:
    spool = place / "spool"
    spool.mkdir()
    (spool / "spool.sqlite3").write_bytes(b"this is no SQLite database, just text " * 200)
    return spool


CASES: list[tuple[str, Callable[[Path], Path], bool, str, str]] = [
    ("read-only", read_only, False, "", "is on a read-only file system"),
    ("no-permission", not_writable, True, "", "no permission to write"),
    ("regular-file", a_file, False, "", "is a file, not a directory"),
    ("not-sqlite", not_sqlite, False, "/spool.sqlite3", "is not a SQLite database"),
]


@pytest.mark.parametrize(("make", "bound_by_permissions", "suffix", "problem"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_an_unusable_spool_is_one_clear_line_and_exit_2(place: Path, make: Callable[[Path], Path],
                                                        bound_by_permissions: bool, suffix: str, problem: str) -> None:
    spool = make(place)
    try:
        result = run_daemon(place, spool, bound_by_permissions)
    finally:
        if spool.is_mount():
            subprocess.run(["umount", "-l", str(spool)], check=False)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"{spool}{suffix}: ")]
    assert len(lines) == 1 and problem in lines[0], result.stderr
