"""OPC UA security: our client certificate, and checking the server's before trusting it.

The client certificate and key come from files; when neither exists they are generated on first start (a
self-signed application instance certificate with our ApplicationUri, valid five years) and the path is
logged so an operator can trust it on the server.

The server's certificate is taken from its endpoint description (GetEndpoints on an unsecured discovery
channel, as the specification intends) and checked *before* the secure channel is opened:

- ``server_certificate`` pins it: the server must present exactly that certificate;
- otherwise the trust directory (``trust_dir``, default ``PKI_DIR/trusted``) must hold either that
  certificate or the CA certificate that issued it.

An untrusted certificate is refused with an error that names its subject, ApplicationUri and SHA-256
fingerprint, and is saved to ``rejected/`` beside the trust directory, so that trusting it is one ``mv``.
An expired or not-yet-valid certificate is refused even when trusted.
"""

from __future__ import annotations

import datetime
import os
import socket
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.crypto import cert_gen, security_policies, uacrypto
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from connectors.opcua.config import SecurityConfig
from ingestor.contract import ConnectionLost, get_logger

log = get_logger(__name__)

CERTIFICATE_DAYS = 5 * 365


class OpcUaSetupError(ConnectionLost):
    """The connection cannot be set up as configured (certificates, credentials, security policy)."""


class ServerCertificateRejected(OpcUaSetupError):
    """The server presented a certificate that is not pinned or trusted."""


def policy_class(name: str) -> type[security_policies.SecurityPolicy]:
    return getattr(security_policies, f"SecurityPolicy{name}")  # type: ignore[no-any-return]


def fingerprint(certificate: x509.Certificate) -> str:
    return certificate.fingerprint(hashes.SHA256()).hex(":").upper()


def describe(certificate: x509.Certificate) -> str:
    uris = application_uris(certificate)
    return (f"subject {certificate.subject.rfc4514_string()!r}"
            + (f", ApplicationUri {uris[0]}" if uris else "")
            + f", SHA-256 {fingerprint(certificate)}")


def application_uris(certificate: x509.Certificate) -> list[str]:
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(names.get_values_for_type(x509.UniformResourceIdentifier))


def load_certificate_file(path: Path) -> x509.Certificate:
    """A certificate from a DER or PEM file (recognised by content, not by name)."""
    data = path.read_bytes()
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def ensure_client_certificate(certificate: Path, private_key: Path, application_uri: str, connector: str) -> bool:
    """Generate the client certificate and key when neither file exists; True when they were generated."""
    has_cert, has_key = certificate.is_file(), private_key.is_file()
    if has_cert and has_key:
        return False
    if has_cert or has_key:
        present, missing = (certificate, private_key) if has_cert else (private_key, certificate)
        raise OpcUaSetupError(f"{present} exists but {missing} does not; give both files, or remove the other one "
                              "so a new pair is generated")
    host = socket.gethostname()
    key = cert_gen.generate_private_key()
    cert = cert_gen.generate_self_signed_app_certificate(
        key, f"ingestor {connector}@{host}", {"organizationName": "ingestor"},
        [x509.UniformResourceIdentifier(application_uri), x509.DNSName(host)],
        [ExtendedKeyUsageOID.CLIENT_AUTH], days=CERTIFICATE_DAYS)
    try:
        private_key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        certificate.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(private_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(cert_gen.dump_private_key_as_pem(key))
        certificate.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    except OSError as exc:
        raise OpcUaSetupError(f"cannot write the generated client certificate to {certificate}: {exc}") from exc
    log.warning("generated an OPC UA client certificate; trust it on the server (copy it into the server's "
                "trusted certificates)", connector=connector, certificate=str(certificate),
                private_key=str(private_key), application_uri=application_uri, sha256=fingerprint(cert))
    return True


def check_server_certificate(certificate: x509.Certificate, security: SecurityConfig, endpoint: str,
                             now: datetime.datetime | None = None) -> None:
    """Raise :class:`ServerCertificateRejected` unless the certificate is pinned or trusted and valid now."""
    now = now or datetime.datetime.now(datetime.UTC)
    if security.server_certificate is not None:
        try:
            pinned = load_certificate_file(security.server_certificate)
        except (OSError, ValueError) as exc:
            raise OpcUaSetupError(f"cannot read the pinned server certificate {security.server_certificate}: "
                                  f"{exc}") from exc
        if pinned != certificate:
            raise ServerCertificateRejected(
                f"{endpoint} presented a certificate that is not the pinned one: presented {describe(certificate)}; "
                f"pinned {security.server_certificate} has SHA-256 {fingerprint(pinned)}")
    else:
        trust_dir = security.trust_directory()
        if not _trusted(certificate, trust_dir):
            saved = _save_rejected(certificate, security.rejected_directory())
            raise ServerCertificateRejected(
                f"{endpoint} presented an untrusted certificate ({describe(certificate)}); to trust it, move "
                f"{saved or 'it'} into {trust_dir}/ (or pin it with security.server_certificate)")
    if certificate.not_valid_after_utc < now or certificate.not_valid_before_utc > now:
        raise ServerCertificateRejected(
            f"{endpoint} presented a certificate valid only from {certificate.not_valid_before_utc:%Y-%m-%d} to "
            f"{certificate.not_valid_after_utc:%Y-%m-%d} ({describe(certificate)})")


def _trusted(certificate: x509.Certificate, trust_dir: Path) -> bool:
    """The certificate itself, or a CA certificate that issued it, is in the trust directory."""
    try:
        files = sorted(p for p in trust_dir.iterdir() if p.is_file())
    except OSError:
        return False
    for path in files:
        try:
            anchor = load_certificate_file(path)
        except (OSError, ValueError):
            continue
        if anchor == certificate:
            return True
        if anchor.subject == certificate.issuer and anchor.subject != certificate.subject:
            try:
                certificate.verify_directly_issued_by(anchor)
                return True
            except (ValueError, TypeError, InvalidSignature):
                continue
    return False


def _save_rejected(certificate: x509.Certificate, directory: Path) -> Path | None:
    path = directory / f"{fingerprint(certificate).replace(':', '')[:16].lower()}.der"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        path.write_bytes(certificate.public_bytes(serialization.Encoding.DER))
    except OSError as exc:
        log.debug("cannot save the rejected server certificate", path=str(path), error=str(exc))
        return None
    return path


async def fetch_server_certificate(endpoint: str, policy: str, mode: str, timeout: float) -> x509.Certificate:
    """Ask the server for its endpoints (unsecured discovery) and return the certificate of the one we use."""
    discovery = Client(endpoint, timeout=timeout)
    endpoints = await discovery.connect_and_get_server_endpoints()
    wanted_policy, wanted_mode = policy_class(policy).URI, getattr(ua.MessageSecurityMode, mode)
    for description in endpoints:
        if description.SecurityPolicyUri == wanted_policy and description.SecurityMode == wanted_mode:
            certificate = uacrypto.x509_from_der(description.ServerCertificate)  # type: ignore[no-untyped-call]
            if certificate is None:
                raise OpcUaSetupError(f"{endpoint} offers {policy}/{mode} but sends no certificate")
            return certificate  # type: ignore[no-any-return]
    offered = sorted({f"{d.SecurityPolicyUri.rpartition('#')[2]}/{d.SecurityMode.name.rstrip('_')}"
                      for d in endpoints})
    raise OpcUaSetupError(f"{endpoint} does not offer security {policy}/{mode}; it offers: {', '.join(offered)}")


async def configure_security(client: Client, security: SecurityConfig, connector: str, endpoint: str,
                             timeout: float) -> None:
    """Set up the client's certificate and the checked server certificate, before ``client.connect()``."""
    cert_path, key_path = security.certificate_paths(connector)
    ensure_client_certificate(cert_path, key_path, security.default_application_uri(), connector)
    try:
        certificate = load_certificate_file(cert_path)
        key_data = key_path.read_bytes()
    except (OSError, ValueError) as exc:
        raise OpcUaSetupError(f"cannot read the client certificate or key: {exc}") from exc
    uris = application_uris(certificate)
    client.application_uri = security.application_uri or (uris[0] if uris else security.default_application_uri())
    if client.application_uri not in uris:
        log.warning("the client certificate does not carry our ApplicationUri; servers may refuse it",
                    connector=connector, certificate=str(cert_path), application_uri=client.application_uri)
    password: str | None = None
    if security.private_key_password_env:
        password = os.environ.get(security.private_key_password_env)
        if password is None:
            raise OpcUaSetupError(f"environment variable {security.private_key_password_env} "
                                  "(security.private_key_password_env) is not set")
    mode = security.effective_mode
    server_certificate = await fetch_server_certificate(endpoint, security.policy, mode, timeout)
    check_server_certificate(server_certificate, security, endpoint)
    key_format = "pem" if key_data.lstrip().startswith(b"-----BEGIN") else "der"
    arguments: dict[str, Any] = {
        "certificate": uacrypto.CertProperties(certificate.public_bytes(serialization.Encoding.DER), "der"),
        "private_key": uacrypto.CertProperties(key_data, key_format, password),
        "server_certificate": uacrypto.CertProperties(
            server_certificate.public_bytes(serialization.Encoding.DER), "der"),
        "mode": getattr(ua.MessageSecurityMode, mode),
    }
    try:
        await client.set_security(policy_class(security.policy), **arguments)
    except (ValueError, TypeError) as exc:
        raise OpcUaSetupError(f"cannot use the client key {key_path}: {exc}") from exc
