"""The API's frame: serving inside the event loop, the operator endpoints kept as they were, problem
documents, tokens, CORS, the OpenAPI contract, ``ingestor api``, and secrets never shown."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import httpx
import pytest

from ingestor.api.app import create_app
from ingestor.api.auth import load_tokens
from ingestor.api.config import READ_TOKEN_ENV, WRITE_TOKEN_ENV, HttpConfig
from ingestor.config import ConfigError, load_config

from .api_helpers import api_client, api_state, served
from .conftest import REPO, Database
from .helpers import free_port, http_get, wait_until

READ = "read-token-0123456789abcdef"
WRITE = "write-token-0123456789abcdef"
OPENAPI_FILE = REPO / "docs" / "api" / "openapi.json"

MINIMAL = """
instance_id: api-test
database: {{url: "{dsn}"}}
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
http: {{listen: "{listen}"{extra}}}
logging: {{format: json}}
"""


async def test_operator_endpoints_answer_as_before(database: Database) -> None:
    async with served(api_state(database.dsn)) as base, httpx.AsyncClient(base_url=base) as client:
        health = await client.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        ready = await client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["ready"] is True
        metrics = await client.get("/metrics")
        assert metrics.status_code == 200 and "ingestor_build_info" in metrics.text
        assert metrics.headers["content-type"].startswith("text/plain")


async def test_readyz_is_503_while_the_database_is_unreachable() -> None:
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/none"
    async with served(api_state(dead)) as base, httpx.AsyncClient(base_url=base) as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["database"]["connected"] is False
        assert (await client.get("/healthz")).status_code == 200
        # an API query while the database is down is a 503 problem, not a 500
        status = await client.get("/api/status")
        assert status.status_code == 200  # the status page itself needs no database


async def test_errors_are_problem_documents(database: Database) -> None:
    async with api_client(api_state(database.dsn)) as client:
        missing = await client.get("/api/no-such-thing")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"
        body = missing.json()
        assert body["status"] == 404 and body["title"]
        wrong_method = await client.delete("/readyz")
        assert wrong_method.status_code == 405
        assert wrong_method.headers["content-type"] == "application/problem+json"


async def test_tokens_guard_the_api_but_not_the_probes(database: Database) -> None:
    state = api_state(database.dsn, environ={READ_TOKEN_ENV: READ, WRITE_TOKEN_ENV: WRITE})
    async with api_client(state) as client:
        anonymous = await client.get("/api/status")
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"] == "Bearer"
        assert anonymous.headers["content-type"] == "application/problem+json"
        wrong = await client.get("/api/status", headers={"Authorization": "Bearer not-the-token-at-all"})
        assert wrong.status_code == 403
        for token in (READ, WRITE):  # the write token also reads
            ok = await client.get("/api/status", headers={"Authorization": f"Bearer {token}"})
            assert ok.status_code == 200, ok.text
        for path in ("/healthz", "/readyz", "/metrics"):
            assert (await client.get(path)).status_code == 200
        everything = "".join([anonymous.text, wrong.text, (await client.get("/readyz")).text])
        assert READ not in everything and WRITE not in everything


def test_tokens_from_a_credentials_file_and_the_environment_first(tmp_path: Path) -> None:
    path = tmp_path / "credentials"
    path.write_text(f"read_token: {READ}\nwrite_token: {WRITE}\n")
    config = HttpConfig(credentials_file=path)
    tokens = load_tokens(config, {})
    assert tokens.read is not None and tokens.read.get_secret_value() == READ
    assert READ not in repr(tokens) and READ not in repr(config)
    override = "from-the-environment-0123456789"
    assert load_tokens(config, {READ_TOKEN_ENV: override}).grants(override, "read")
    assert not load_tokens(config, {}).grants(READ, "write")
    assert load_tokens(config, {}).grants(WRITE, "write")


@pytest.mark.parametrize(("extra", "environ", "message"), [
    ("", {}, "needs a read token"),
    (', credentials_file: "{missing}"', {}, "cannot read the credentials file"),
    ("", {READ_TOKEN_ENV: "short"}, "shorter than 16 characters"),
])
def test_off_loopback_without_a_token_the_configuration_is_refused(
        tmp_path: Path, extra: str, environ: dict[str, str], message: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(MINIMAL.format(dsn="postgresql://postgres@127.0.0.1/db", listen="0.0.0.0:9108",
                                     extra=extra.format(missing=tmp_path / "nothing")))
    with pytest.raises(ConfigError) as raised:
        load_config(config, environ)
    assert message in str(raised.value)
    assert str(raised.value).startswith(f"{config}:")
    if not extra and not environ:  # with a token in the environment, the same file loads
        assert load_config(config, {READ_TOKEN_ENV: READ}).http.listen == "0.0.0.0:9108"


async def test_cors_allows_only_configured_origins(database: Database) -> None:
    state = api_state(database.dsn, cors_origins=["https://dashboard.plant.example"])
    async with api_client(state) as client:
        allowed = await client.get("/api/status", headers={"Origin": "https://dashboard.plant.example"})
        assert allowed.headers["access-control-allow-origin"] == "https://dashboard.plant.example"
        other = await client.get("/api/status", headers={"Origin": "https://elsewhere.example"})
        assert "access-control-allow-origin" not in other.headers


def test_the_checked_in_openapi_schema_is_the_applications() -> None:
    app = create_app(api_state("postgresql://postgres@127.0.0.1:5432/postgres"))
    served_schema = app.openapi()
    assert OPENAPI_FILE.exists(), "write it with: python -m ingestor.api.openapi > docs/api/openapi.json"
    assert json.loads(OPENAPI_FILE.read_text()) == served_schema, \
        "docs/api/openapi.json is stale; regenerate it with: python -m ingestor.api.openapi > docs/api/openapi.json"


async def test_openapi_is_served(database: Database) -> None:
    async with api_client(api_state(database.dsn)) as client:
        schema = (await client.get("/api/openapi.json")).json()
        assert schema["openapi"].startswith("3.")
        assert "/readyz" in schema["paths"]


def _run(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("w") as log_file:
        return subprocess.Popen([sys.executable, "-m", "ingestor", *args], cwd=REPO, env=env, stdout=log_file,
                                stderr=subprocess.STDOUT)


def test_ingestor_api_serves_without_connectors_and_hides_its_secrets(database: Database, tmp_path: Path) -> None:
    port = free_port()
    sentinel = "SENTINEL-token-7f3a9c0d2b"
    config = tmp_path / "config.yaml"
    config.write_text(MINIMAL.format(dsn=database.dsn, listen=f"127.0.0.1:{port}", extra=""))
    env = {k: v for k, v in os.environ.items() if k != "INGESTOR_DATABASE_URL"}
    env[READ_TOKEN_ENV] = sentinel
    log_path = tmp_path / "api.log"
    process = _run(["api", "-c", str(config)], env, log_path)
    try:
        wait_until(lambda: http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200, 30, "/readyz of ingestor api")
        bodies = [http_get(f"http://127.0.0.1:{port}{path}")[1] for path in ("/readyz", "/healthz", "/api/status")]
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/status",
                                         headers={"Authorization": f"Bearer {sentinel}"})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200
            bodies.append(response.read().decode())
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = log_path.read_text()
    assert sentinel not in output and all(sentinel not in body for body in bodies)
    assert "http listening" in output


def test_a_port_in_use_is_one_clear_line(database: Database, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        config = tmp_path / "config.yaml"
        config.write_text(MINIMAL.format(dsn=database.dsn, listen=f"127.0.0.1:{port}", extra=""))
        env = {k: v for k, v in os.environ.items() if k != "INGESTOR_DATABASE_URL"}
        for command in (["api", "-c", str(config)], ["run", "-c", str(config)]):
            log_path = tmp_path / f"{command[0]}.log"
            process = _run(command, env, log_path)
            assert process.wait(timeout=60) == 1
            output = log_path.read_text()
            assert "Traceback" not in output, output
            assert f"127.0.0.1:{port}" in output and "another process listens there" in output, output


async def test_the_server_stops_promptly_with_a_client_connected(database: Database) -> None:
    state = api_state(database.dsn)
    async with served(state) as base:
        host, port = base.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))  # an idle keep-alive client
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        assert b"200" in await reader.readline()
    writer.close()
