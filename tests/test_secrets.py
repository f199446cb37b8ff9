"""Secrets never leave the process: a database password in any form it may be given (URL userinfo,
``?password=``, libpq keywords) and the API's tokens appear in no log line, HTTP body or printed output of a
whole run.  A sentinel is planted and every byte the run produced is searched for it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ingestor.database.connection import redact

from .conftest import REPO
from .helpers import free_port, http_get, wait_until

SENTINEL = "Sentinel-pw-4b1d9e77"
TOKEN = "Sentinel-token-0c5e2a91f3"


@pytest.mark.parametrize("url", [
    f"postgresql://ingest:{SENTINEL}@db.plant:5432/mes",
    f"postgresql://ingest@db.plant/mes?password={SENTINEL}&sslmode=require",
    f"postgresql://ingest@db.plant/mes?sslmode=verify-full&sslpassword={SENTINEL}",
    f"postgres://ingest:{SENTINEL}@[::1]:5432/mes?password={SENTINEL}",
    f"host=db.plant user=ingest password={SENTINEL} dbname=mes",
    f"host=db.plant password='{SENTINEL} with space' dbname=mes",
    f"postgresql://ingest:{SENTINEL}@@db.plant/mes",
])
def test_redact_hides_every_form_of_password(url: str) -> None:
    shown = redact(url)
    assert SENTINEL not in shown
    assert "***" in shown or shown == "<unparseable database URL>"


CONFIG = """
instance_id: secrets-test
database:
  url: "{url}"
  reconnect: {{initial: 100ms, max: 200ms}}
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
              equipment: [{{code: M1, name: Machine 1}}]
connectors:
  - type: generate
    name: gen
    interval: 100ms
    tags:
      - {{equipment: M1, parameter: temperature, signal: sine, min: 20, max: 80, period: 10s}}
pipeline:
  spool_dir: {spool}
  shutdown_timeout: 1s
http: {{listen: "127.0.0.1:{port}"}}
logging: {{format: json, level: debug, library_level: debug}}
"""


@pytest.mark.parametrize("form", ["userinfo", "query", "environment"])
def test_a_whole_run_never_shows_the_password_or_the_token(tmp_path: Path, form: str) -> None:
    dead = free_port()  # nothing listens: the daemon keeps failing to connect, and says so everywhere
    urls = {"userinfo": f"postgresql://ingest:{SENTINEL}@127.0.0.1:{dead}/mes",
            "query": f"postgresql://ingest@127.0.0.1:{dead}/mes?password={SENTINEL}",
            "environment": f"postgresql://ingest@127.0.0.1:{dead}/mes"}
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(url=urls[form], spool=tmp_path / "spool", port=port))
    env = {k: v for k, v in os.environ.items() if k != "INGESTOR_DATABASE_URL"}
    env["INGESTOR_API_READ_TOKEN"] = TOKEN
    if form == "environment":
        env["INGESTOR_DATABASE_URL"] = f"postgresql://ingest:{SENTINEL}@127.0.0.1:{dead}/mes?password={SENTINEL}"
    outputs: list[str] = []
    check = subprocess.run([sys.executable, "-m", "ingestor", "check-config", str(config)], cwd=REPO,
                           env=env, capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    outputs += [check.stdout, check.stderr]
    log_path = tmp_path / "daemon.log"
    with log_path.open("w") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "ingestor", "run", "-c", str(config)], cwd=REPO,
                                   env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "last_error" in http_get(f"http://127.0.0.1:{port}/readyz")[1]
                   and http_get(f"http://127.0.0.1:{port}/readyz")[0] == 503, 30, "/readyz to report the outage")
        wait_until(lambda: log_path.read_text().count("database") >= 2, 30, "the outage in the log")
        for path in ("/readyz", "/healthz", "/metrics", "/api/status", "/api/openapi.json", "/nothing"):
            outputs.append(http_get(f"http://127.0.0.1:{port}{path}")[1])
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    outputs.append(log_path.read_text())
    everything = "\n".join(outputs)
    assert "last_error" in everything and "cannot connect" in everything  # the run did report the outage
    assert SENTINEL not in everything
    assert TOKEN not in everything
