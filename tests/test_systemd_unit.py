"""The shipped systemd unit: Type=notify with a watchdog, and hardened to an exposure of 2.0 or less as
``systemd-analyze security --offline=true`` scores it (systemd 252 or later; it needs no running systemd)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from .conftest import REPO

UNIT = REPO / "deploy" / "systemd" / "ingestor.service"
MAX_EXPOSURE = 2.0


def _settings() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_unit_is_type_notify_with_a_watchdog() -> None:
    settings = _settings()
    assert settings["Type"] == ["notify"]
    assert settings["NotifyAccess"] == ["main"]
    assert int(settings["WatchdogSec"][0]) >= 10
    assert "Restart" in settings


def test_unit_reloads_with_sighup() -> None:
    # `systemctl reload ingestor`: the daemon reloads its configuration on SIGHUP (tests/test_reload.py)
    assert _settings()["ExecReload"] == ["/bin/kill -HUP $MAINPID"]


def test_unit_exposure_is_at_most_two() -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:  # never skipped silently: the check is part of the suite
        pytest.fail("systemd-analyze is not installed (apt-get install systemd); it scores the unit's hardening")
    result = subprocess.run([tool, "security", "--offline=true", str(UNIT)], capture_output=True, text=True,
                            timeout=60, check=False)
    output = result.stdout + result.stderr
    match = re.search(r"Overall exposure level for ingestor\.service:\s*([0-9.]+)", output)
    assert match, f"no exposure score in the output of systemd-analyze (exit {result.returncode}):\n{output}"
    assert float(match.group(1)) <= MAX_EXPOSURE, output
