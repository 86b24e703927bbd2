"""TLS for ``sealml serve``: a development CA and server certificate (``--dev-tls``), and
the settings that turn on mutual TLS."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..fsutil import make_private_dir, write_private

DEV_DAYS = 30


@dataclass(frozen=True)
class TlsFiles:
    """Where the server's certificate chain and key are (and, for mutual TLS, the CA that
    client certificates must chain to)."""

    cert: Path
    key: Path
    client_ca: Path | None = None
    ca: Path | None = None  # the dev CA clients should trust


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _valid_for(path: Path, hosts: list[str]) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return False
    listed = {str(v) for v in names.get_values_for_type(x509.DNSName)}
    listed |= {str(v) for v in names.get_values_for_type(x509.IPAddress)}
    remaining = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    return remaining > dt.timedelta(days=1) and all(h in listed for h in hosts)


def _alt_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey, days: int
) -> x509.CertificateBuilder:
    """A certificate for *key*, valid from five minutes ago (clock skew) for *days*."""
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
    )


def issue(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    common: str,
    *,
    hosts: tuple[str, ...] = (),
    client: bool = False,
    server: bool | None = None,
    days: int = DEV_DAYS,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A leaf key and certificate signed by the CA, for client authentication, server
    authentication (the default unless *client*), or both (peers in mutual TLS, such as
    the nodes of a Ray cluster)."""
    key = ec.generate_private_key(ec.SECP256R1())
    serves = not client if server is None else server
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
    if serves:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    builder = (
        _builder(_name(common), ca_cert.subject, key, days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    )
    if hosts:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_alt_name(h) for h in hosts]), critical=False
        )
    return key, builder.sign(ca_key, hashes.SHA256())


def new_ca(
    common: str, days: int = DEV_DAYS
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(_name(common), _name(common), key, days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def dev_tls(folder: Path, host: str) -> TlsFiles:
    """A development CA and a server certificate for localhost (and *host*) in *folder*,
    reused while still valid; private keys are written 0600."""
    hosts = list(dict.fromkeys(["localhost", "127.0.0.1", "::1", host]))
    files = TlsFiles(folder / "server.pem", folder / "server-key.pem", None, folder / "ca.pem")
    if files.key.exists() and _valid_for(files.cert, hosts):
        return files
    make_private_dir(folder)
    ca_key, ca_cert = new_ca("sealml development CA")
    key, cert = issue(ca_key, ca_cert, hosts[0], hosts=tuple(hosts))
    write_private(folder / "ca-key.pem", key_pem(ca_key))
    write_private(files.key, key_pem(key))
    assert files.ca is not None
    files.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return files


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)
