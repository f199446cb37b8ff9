"""The layering of docs/architecture.md, enforced: the import contracts in pyproject.toml hold, and each of
them breaks when an import runs the wrong way (planted in a copy of the source, never in the repository)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

PACKAGES = ("ingestor", "connectors", "simulators")
CONTRACTS = {
    "layers": "ingestor's packages are layered: each imports only those below it",
    "connectors": "connectors import only the contract from the daemon",
    "entry points": "the daemon finds connectors through entry points, never by import",
    "simulators": "simulators stand alone: they share no code with what they simulate for",
    "cycles": "no import cycles between sibling packages or modules",
}


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on the packages under ``root``, with the contracts of ``root/pyproject.toml``."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(Path(sys.executable).with_name("lint-imports")), "--no-cache",
                           "--config", str(root / "pyproject.toml")],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120)


def kept_and_broken(output: str) -> tuple[set[str], set[str]]:
    kept = {key for key, name in CONTRACTS.items() if f"{name} KEPT" in output}
    broken = {key for key, name in CONTRACTS.items() if f"{name} BROKEN" in output}
    return kept, broken


def test_the_import_contracts_hold() -> None:
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert kept_and_broken(result.stdout) == (set(CONTRACTS), set())


PLANTED = {
    # a connector reaching into the pipeline instead of the contract
    "connectors": ("connectors/modbus/decoding.py", "import ingestor.pipeline.queue", {"connectors"}),
    # the database side importing the pipeline that sits above it (and closing a cycle with the writer)
    "layers": ("ingestor/database/commit.py", "import ingestor.pipeline.writer", {"layers", "cycles"}),
    # the configuration importing a connector instead of finding it through its entry point
    "entry points": ("ingestor/config/model.py", "import connectors.opcua.config", {"entry points"}),
    # a simulator borrowing the connector's decoding
    "simulators": ("simulators/modbus.py", "import connectors.modbus.decoding", {"simulators"}),
    # two modules of one connector importing each other
    "cycles": ("connectors/mqtt/config.py", "import connectors.mqtt.topics", {"cycles"}),
}


@pytest.mark.parametrize("case", sorted(PLANTED))
def test_each_contract_breaks_on_a_planted_wrong_import(case: str, tmp_path: Path) -> None:
    for package in PACKAGES:
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    module, line, expected = PLANTED[case]
    with (tmp_path / module).open("a") as source:
        source.write(f"\n{line}  # planted by tests/test_architecture.py\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0, result.stdout
    kept, broken = kept_and_broken(result.stdout)
    assert broken == expected, result.stdout
    assert kept == set(CONTRACTS) - expected


def test_no_code_awaits_with_asyncios_wait_for() -> None:
    """Python 3.11's asyncio.wait_for can lose a cancellation (ingestor/contract/timeouts.py says how); the
    project's own wait_for does not.  A shutdown that waited for ever on a connector came from it."""
    repo = Path(__file__).resolve().parent.parent
    found = [f"{path.relative_to(repo)}:{number}" for package in ("ingestor", "connectors")
             for path in sorted((repo / package).rglob("*.py"))
             for number, line in enumerate(path.read_text().splitlines(), 1)
             if "asyncio.wait_for(" in line and not line.lstrip().startswith(("#", '"""'))
             and path.name != "timeouts.py"]
    assert not found, found
