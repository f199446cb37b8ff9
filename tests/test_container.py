"""The container image: deploy/container/build.sh builds it with buildah on a Debian base the project
debootstraps, and the image's own daemon answers /readyz against the machine's PostgreSQL.

No OCI runtime starts a container on this machine (crun and runc both fail to set RLIMIT_NOFILE: "OCI
permission denied"), so the image is run with ``buildah run --isolation=chroot``: the image's files, user and
entry point, without namespaces (it shares the host's network, hence a loopback port).  Needs root; the first
build on a machine debootstraps the base (about a minute), later ones take about 30 s.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import REPO, Database, _create_database, _drop_database
from .helpers import free_port, http_get, wait_until

pytestmark = pytest.mark.slow
TAG = "localhost/ingestor-test"


@pytest.fixture(scope="module")
def database() -> Iterator[Database]:
    db = _create_database("postgres", __name__)
    yield db
    _drop_database(db)


def test_image_builds_without_simulators_and_gets_ready(database: Database, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("tests/test_container.py needs root (debootstrap, buildah)", pytrace=False)
    build = subprocess.run([str(REPO / "deploy/container/build.sh"), TAG], capture_output=True, text=True,
                           timeout=600, check=False)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    health = subprocess.run(["buildah", "inspect", "--type", "image", "--format", "{{.Docker.Config.Healthcheck.Test}}",
                             TAG], capture_output=True, text=True, check=True).stdout
    assert "/readyz" in health and "/healthz" not in health, health

    port = free_port()
    config = tmp_path / "config.yaml"
    text = (REPO / "config/generate-demo.yaml").read_text()
    text = text.replace("postgresql://postgres@127.0.0.1:5433/ingestor", database.dsn)
    text = text.replace("listen: 127.0.0.1:9108", f"listen: 127.0.0.1:{port}")
    config.write_text(text.replace("/var/lib/ingestor/generate-demo/spool", "/var/lib/ingestor/spool"))
    container = subprocess.run(["buildah", "from", TAG], capture_output=True, text=True, check=True).stdout.strip()
    daemon = None
    try:
        subprocess.run(["buildah", "copy", "--chown", "0:10001", container, str(config), "/etc/ingestor/config.yaml"],
                       capture_output=True, check=True)
        site = subprocess.run(["buildah", "run", "--isolation=chroot", container, "--", "/opt/ingestor/venv/bin/python",
                               "-c", "import importlib.util as u; print(u.find_spec('simulators'))"],
                              capture_output=True, text=True, check=True).stdout
        assert site.strip() == "None", site
        log = (tmp_path / "daemon.log").open("w")
        daemon = subprocess.Popen(["buildah", "run", "--isolation=chroot", "--user", "ingestor", container, "--",
                                   "/opt/ingestor/venv/bin/ingestor", "run", "-c", "/etc/ingestor/config.yaml"],
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(lambda: http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200, 60, "/readyz from the image")
    finally:
        if daemon is not None:
            os.killpg(daemon.pid, 15)
            daemon.wait(timeout=60)
        subprocess.run(["buildah", "rm", container], capture_output=True, check=False)
