"""Verified TLS to the database: a private PostgreSQL with ``ssl=on`` and a CA made here, and the refusal to
start with a plain-text or unverified connection to a host that is not loopback."""

from __future__ import annotations

import asyncio
import datetime
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ingestor.cli import main
from ingestor.config import ConfigError, load_config
from ingestor.database.connection import DatabaseUnavailable, connect

from .conftest import REPO
from .private_postgres import PrivatePostgres
from .test_config import MINIMAL

_NOW = datetime.datetime.now(datetime.UTC)
CERT_USER = "cert_user"
PASSPHRASE = "key-passphrase-7"


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _ca(name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(_NOW - datetime.timedelta(hours=1))
            .not_valid_after(_NOW + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .sign(key, hashes.SHA256()))
    return cert, key


def _server(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, names: list[x509.GeneralName],
            common_name: str = "db") -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(_NOW - datetime.timedelta(hours=1)).not_valid_after(_NOW + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    return cert, key


class Tls:
    def __init__(self, root: Path) -> None:
        ca, ca_key = _ca("ingestor test CA")
        other, _ = _ca("some other CA")
        # The certificate names localhost only: 127.0.0.1 is then a host it does not name (hostname mismatch).
        server, server_key = _server(ca, ca_key, [x509.DNSName("localhost")])
        self.ca = root / "ca.pem"
        self.other_ca = root / "other-ca.pem"
        self.cert = root / "server.crt"
        self.key = root / "server.key"
        self.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        self.other_ca.write_bytes(other.public_bytes(serialization.Encoding.PEM))
        self.cert.write_bytes(server.public_bytes(serialization.Encoding.PEM))
        self.key.write_bytes(_pem(server_key))
        # a client certificate for CERT_USER, its key encrypted with a passphrase
        client, client_key = _server(ca, ca_key, [x509.DNSName(CERT_USER)], common_name=CERT_USER)
        self.client_cert = root / "client.crt"
        self.client_key = root / "client.key"
        self.client_cert.write_bytes(client.public_bytes(serialization.Encoding.PEM))
        self.client_key.write_bytes(client_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(PASSPHRASE.encode())))
        self.client_key.chmod(0o600)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return Tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def server(tls: Tls) -> Iterator[PrivatePostgres]:
    pg = PrivatePostgres(ssl=(tls.cert, tls.key), client_ca=tls.ca, cert_users=(CERT_USER,))
    pg.start()
    asyncio.run(_create_login(pg.dsn()))
    try:
        yield pg
    finally:
        pg.close()


async def _create_login(dsn: str) -> None:
    conn = await connect(dsn, 10)
    try:
        await conn.execute(f"CREATE ROLE {CERT_USER} LOGIN")
    finally:
        await conn.close()


def _url(pg: PrivatePostgres, host: str, query: str) -> str:
    return f"postgresql://postgres@{host}:{pg.port}/postgres?{query}"


async def _ssl_in_use(url: str) -> bool:
    conn = await connect(url, 10)
    try:
        return bool(await conn.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"))
    finally:
        await conn.close()


def test_verify_full_with_the_right_ca_connects_over_tls(server: PrivatePostgres, tls: Tls) -> None:
    assert asyncio.run(_ssl_in_use(_url(server, "localhost", f"sslmode=verify-full&sslrootcert={tls.ca}")))


def test_a_wrong_ca_is_refused_naming_the_certificate_problem(server: PrivatePostgres, tls: Tls) -> None:
    with pytest.raises(DatabaseUnavailable) as caught:
        asyncio.run(_ssl_in_use(_url(server, "localhost", f"sslmode=verify-full&sslrootcert={tls.other_ca}")))
    text = str(caught.value)
    assert "the server's TLS certificate was refused" in text
    assert "unable to get local issuer certificate" in text or "self-signed" in text or "verify failed" in text
    assert "does not chain to database.sslrootcert" in text


def test_verify_full_refuses_a_host_the_certificate_does_not_name(server: PrivatePostgres, tls: Tls) -> None:
    with pytest.raises(DatabaseUnavailable, match="does not name the host") as caught:
        asyncio.run(_ssl_in_use(_url(server, "127.0.0.1", f"sslmode=verify-full&sslrootcert={tls.ca}")))
    assert "mismatch" in str(caught.value).lower()
    # verify-ca checks the chain only, so the same host passes under it
    assert asyncio.run(_ssl_in_use(_url(server, "127.0.0.1", f"sslmode=verify-ca&sslrootcert={tls.ca}")))


def test_schema_apply_takes_the_tls_settings_from_the_configuration(server: PrivatePostgres, tls: Tls,
                                                                    tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(MINIMAL + f"database:\n  url: postgresql://postgres@localhost:{server.port}/postgres\n"
                      f"  sslmode: verify-full\n  sslrootcert: {tls.ca}\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("INGESTOR_DATABASE_URL", None)
    done = subprocess.run([sys.executable, "-m", "ingestor", "schema", "apply", "-c", str(config)],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "sslmode=verify-full" in done.stdout
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(config.read_text().replace(str(tls.ca), str(tls.other_ca)))
    done = subprocess.run([sys.executable, "-m", "ingestor", "schema", "status", "-c", str(wrong)],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode != 0
    assert "TLS certificate was refused" in done.stderr


def _config(tmp_path: Path, database: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(MINIMAL + "database:\n" + database)
    return path


@pytest.mark.parametrize("database", [
    "  url: postgresql://ingestor@db.plant.example:5432/ingestor\n",
    "  url: postgresql://ingestor@db.plant.example:5432/ingestor\n  sslmode: prefer\n",
    "  url: postgresql://ingestor@10.1.2.3/ingestor?sslmode=require\n",
    "  url: postgresql://ingestor@localhost,10.1.2.3/ingestor\n",
    # the configuration's sslmode wins over the URL's
    "  url: postgresql://ingestor@10.1.2.3/ingestor?sslmode=verify-full\n  sslmode: require\n",
])
def test_a_plain_or_unverified_connection_off_loopback_is_refused_at_load(
        tmp_path: Path, database: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = _config(tmp_path, database)
    with pytest.raises(ConfigError, match="is not loopback and sslmode is"):
        load_config(path, {})
    assert main(["check-config", str(path)]) == 2
    assert "database.allow_insecure" in capsys.readouterr().err


@pytest.mark.parametrize("database", [
    "  url: postgresql://ingestor@db.plant.example/ingestor\n  sslmode: verify-full\n  sslrootcert: /etc/ca.pem\n",
    "  url: postgresql://ingestor@db.plant.example/ingestor?sslmode=verify-full\n",
    "  url: postgresql://ingestor@db.plant.example/ingestor\n  allow_insecure: true\n",
    "  url: postgresql://ingestor@127.0.0.1:5432/ingestor\n",
    "  url: postgresql://ingestor@[::1]:5432/ingestor\n  sslmode: disable\n",
    "  url: postgresql://ingestor@/ingestor?host=/run/postgresql\n",
    "  url: postgresql://ingestor@%2frun%2fpostgresql/ingestor\n",
])
def test_verified_or_loopback_connections_load(tmp_path: Path, database: str) -> None:
    load_config(_config(tmp_path, database), {})


def test_the_environment_url_is_checked_too(tmp_path: Path) -> None:
    path = _config(tmp_path, "  sslrootcert: /etc/ca.pem\n")
    with pytest.raises(ConfigError, match=r"INGESTOR_DATABASE_URL: the database host 'db\.plant\.example'"):
        load_config(path, {"INGESTOR_DATABASE_URL": "postgresql://u:pw@db.plant.example/x"})
    ok = load_config(path, {"INGESTOR_DATABASE_URL": "postgresql://u:pw@db.plant.example/x?sslmode=verify-full"})
    assert ok.database.sslrootcert == "/etc/ca.pem"


def test_the_key_passphrase_comes_from_the_environment_and_is_never_shown(tmp_path: Path) -> None:
    from ingestor.database.connection import redact
    path = _config(tmp_path, "  url: postgresql://u@127.0.0.1/x\n  sslcert: /c.pem\n  sslkey: /k.pem\n")
    config = load_config(path, {})
    url = config.database.effective_url({"INGESTOR_DATABASE_SSLPASSWORD": "hunter2"})
    assert "sslpassword=hunter2" in url
    assert "hunter2" not in redact(url)
    with pytest.raises(ConfigError, match=r"sslkey is set without database\.sslcert"):
        load_config(_config(tmp_path, "  sslkey: /k.pem\n"), {})


def test_a_client_certificate_with_an_encrypted_key_logs_in(server: PrivatePostgres, tls: Tls,
                                                            tmp_path: Path) -> None:
    path = _config(tmp_path, f"  url: postgresql://{CERT_USER}@localhost:{server.port}/postgres\n"
                             f"  sslmode: verify-full\n  sslrootcert: {tls.ca}\n"
                             f"  sslcert: {tls.client_cert}\n  sslkey: {tls.client_key}\n")
    config = load_config(path, {})

    async def whoami(url: str) -> str:
        conn = await connect(url, 10)
        try:
            return str(await conn.fetchval("SELECT current_user"))
        finally:
            await conn.close()
    url = config.database.effective_url({"INGESTOR_DATABASE_SSLPASSWORD": PASSPHRASE})
    assert asyncio.run(whoami(url)) == CERT_USER
    # without the certificate the server refuses the user (pg_hba: hostssl ... cert)
    with pytest.raises(DatabaseUnavailable) as caught:
        asyncio.run(whoami(f"postgresql://{CERT_USER}@localhost:{server.port}/postgres?sslmode=verify-full"
                           f"&sslrootcert={tls.ca}"))
    assert PASSPHRASE not in str(caught.value)


def test_a_wrong_or_missing_key_passphrase_is_a_clear_error(server: PrivatePostgres, tls: Tls) -> None:
    base = (f"postgresql://{CERT_USER}@localhost:{server.port}/postgres?sslmode=verify-full&sslrootcert={tls.ca}"
            f"&sslcert={tls.client_cert}&sslkey={tls.client_key}")
    for url in (base + "&sslpassword=wrong-passphrase", base):
        with pytest.raises(DatabaseUnavailable) as caught:
            asyncio.run(_ssl_in_use(url))
        assert "wrong-passphrase" not in str(caught.value)
        assert "cannot load the client certificate or key" in str(caught.value)
