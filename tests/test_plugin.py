"""Connector plugins: a separately installed package adds a connector type without a change to this repository.

``tests/plugin`` is such a package (``ingestor-tick``, type ``tick``), depending on the daemon only through
``ingestor.contract``.  It is built and installed with pip into a directory of its own, which only the
processes started here see (``PYTHONPATH``): the same daemon and the same configuration without it refuse the
type, with it they check and run it.  The registry's handling of broken plugins is tested on entry points made
here (an import error, a wrong object, a name that does not match, two packages claiming one type).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import asyncpg
import pytest

from ingestor.config.registry import load_registry

from .conftest import REPO, Database
from .helpers import wait_until

CONFIG = """
instance_id: test-plugin
database:
  url: {dsn}
  refresh: {{view_oee_daily: 0, view_reliability_summary: 0, sensor_5min_avg: 0}}
plant:
  sites:
    - code: S1
      name: Site 1
      areas:
        - code: A1
          name: Area 1
          work_centers:
            - code: W1
              name: Work center 1
              equipment:
                - {{code: TICKER-1, name: Ticking machine}}
connectors:
  - type: {type}
    name: ticker
    interval: 20ms
    tags:
      - {{equipment: TICKER-1, parameter: count, unit: pcs}}
      - {{equipment: TICKER-1, parameter: count_too, unit: pcs}}
pipeline:
  batch_rows: 20
  batch_age: 100ms
  spool_dir: {spool}
derivation:
  enabled: false
  check_data_quality: 0
http:
  enabled: false
logging:
  format: json
"""


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example plugin, built from a copy of its source and installed into a directory of its own."""
    scratch = tmp_path_factory.mktemp("plugin")
    source = scratch / "source"
    shutil.copytree(REPO / "tests" / "plugin", source)
    target = scratch / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "--target", str(target), str(source)],
                   check=True, capture_output=True, text=True, timeout=120)
    assert (target / "ingestor_tick" / "__init__.py").exists()
    return target


def _env(plugin: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("INGESTOR_DATABASE_URL", "PYTHONPATH")}
    if plugin is not None:
        env["PYTHONPATH"] = str(plugin)
    return env


def _ingestor(*args: str, plugin: Path | None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ingestor", *args], cwd=REPO, env=_env(plugin),
                          capture_output=True, text=True, timeout=60)


def _config(tmp_path: Path, dsn: str = "postgresql://postgres@127.0.0.1:5432/unused", kind: str = "tick") -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG.format(dsn=dsn, spool=tmp_path / "spool", type=kind))
    return path


def test_the_plugins_type_is_known_only_where_the_plugin_is_installed(plugin_path: Path, tmp_path: Path) -> None:
    config = _config(tmp_path)
    without = _ingestor("check-config", str(config), plugin=None)
    assert without.returncode == 2
    assert "unknown connector type 'tick'; expected one of: generate, modbus, mqtt, opcua" in without.stderr

    checked = _ingestor("check-config", str(config), plugin=plugin_path)
    assert checked.returncode == 0, checked.stderr
    assert "connectors: 1 (tick: 1), 2 tags" in checked.stdout
    assert "- ticker (tick): 2 tags" in checked.stdout

    wrong = _ingestor("check-config", str(_config(tmp_path, kind="tock")), plugin=plugin_path)
    assert wrong.returncode == 2
    assert "expected one of: generate, modbus, mqtt, opcua, tick" in wrong.stderr


def test_the_daemon_runs_the_plugins_connector(plugin_path: Path, fresh_database: Database, tmp_path: Path) -> None:
    config = _config(tmp_path, dsn=fresh_database.dsn)
    log_path = tmp_path / "daemon.log"
    with log_path.open("w") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "ingestor", "run", "-c", str(config)], cwd=REPO,
                                   env=_env(plugin_path), stdout=log_file, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: len(_counts(fresh_database.dsn)) >= 20, 60, "the plugin's readings in fact_sensor_event")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    counts = _counts(fresh_database.dsn)
    assert counts == [float(n) for n in range(1, len(counts) + 1)]  # every tick, once, in order
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    assert any(line["event"] == "connector connected" and line.get("connector") == "ticker" for line in lines)
    stopped = next(line for line in lines if line["event"] == "ingestor stopped")
    assert stopped["readings_written"] == 2 * len(counts)


def _counts(dsn: str) -> list[float]:
    async def fetch() -> list[float]:
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch(
                "SELECT s.value FROM fact_sensor_event s JOIN dim_equipment e USING (equipment_id) "
                "WHERE e.equipment_code = 'TICKER-1' AND s.parameter = 'count' ORDER BY s.event_ts")
            return [row["value"] for row in rows]
        finally:
            await conn.close()
    try:
        return asyncio.run(fetch())
    except asyncpg.UndefinedTableError:
        return []


def _entry(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group="ingestor.connectors")


def test_a_broken_plugin_is_reported_by_name_and_keeps_the_others_usable() -> None:
    registry = load_registry([
        _entry("generate", "connectors.generate:CONNECTOR"),
        _entry("s7", "no_such_module_anywhere:CONNECTOR"),
        _entry("bacnet", "connectors.generate:GenerateConfig"),
        _entry("modbus", "connectors.generate:CONNECTOR"),
        _entry("mqtt", "connectors.mqtt:CONNECTOR"),
        _entry("mqtt", "connectors.opcua:CONNECTOR"),
        _entry("generate", "connectors.generate:CONNECTOR"),   # the same registration seen twice: harmless
    ])
    assert set(registry.types) == {"generate"}
    assert "failed to load: ModuleNotFoundError" in registry.broken["s7"]
    assert "not an ingestor.contract.ConnectorType" in registry.broken["bacnet"]
    assert "registered as 'modbus' but its configuration says type: 'generate'" in registry.broken["modbus"]
    assert registry.broken["mqtt"].startswith("more than one installed package registers this connector type")


def test_a_configuration_using_a_broken_plugin_says_why(tmp_path: Path) -> None:
    """The registry of this process has no broken plugin; make one for a subprocess with a module that fails."""
    broken = tmp_path / "site"
    (broken / "ingestor_broken").mkdir(parents=True)
    (broken / "ingestor_broken" / "__init__.py").write_text("raise ImportError('needs libsnap7, not installed')\n")
    dist = broken / "ingestor_broken-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ingestor-broken\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[ingestor.connectors]\ntick = ingestor_broken:CONNECTOR\n")
    result = _ingestor("check-config", str(_config(tmp_path)), plugin=broken)
    assert result.returncode == 2
    assert ("connector type 'tick' is installed but cannot be used: ingestor_broken:CONNECTOR (from "
            "ingestor-broken 0.1) failed to load: ImportError: needs libsnap7, not installed") in result.stderr
    other = _ingestor("check-config", str(REPO / "config" / "generate-demo.yaml"), plugin=broken)
    assert other.returncode == 0, other.stderr
