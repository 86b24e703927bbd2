"""Remote sources: HTTPS only, verified certificates, an allowlist, pins; SQL databases."""

from __future__ import annotations

import datetime
import hashlib
import http.server
import sqlite3
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sealml.data.sources import SourcePolicy, fetch
from sealml.errors import IntegrityError, UsageError

CSV = b"a,b\n1,2\n"


def _certificate(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    """A local HTTPS server with a self-signed certificate, serving data.csv."""
    cert, key = _certificate(tmp_path)
    root = tmp_path / "www"
    root.mkdir()
    (root / "data.csv").write_bytes(CSV)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://localhost:{server.server_address[1]}/data.csv", cert, root
    server.shutdown()
    server.server_close()


ALLOW = ("https://localhost:*",)


def test_self_signed_certificate_is_refused(tls_server: tuple[str, Path, Path]) -> None:
    url, _, _ = tls_server
    with pytest.raises(UsageError, match="certificate verification failed"):
        fetch(url, SourcePolicy(allowed=ALLOW))


def test_trusted_private_ca_works_and_pin_holds(tls_server: tuple[str, Path, Path]) -> None:
    url, cert, root = tls_server
    policy = SourcePolicy(allowed=ALLOW, ca_bundle=cert)
    fetched = fetch(url, policy)
    assert fetched.data == CSV and fetched.sha256 == hashlib.sha256(CSV).hexdigest()
    assert fetch(url, policy, sha256=fetched.sha256).data == CSV
    (root / "data.csv").write_bytes(CSV + b"3,4\n")
    with pytest.raises(IntegrityError, match="changed: pinned sha256"):
        fetch(url, policy, sha256=fetched.sha256)


def test_allowlist_and_plain_http(tls_server: tuple[str, Path, Path]) -> None:
    url, cert, _ = tls_server
    with pytest.raises(UsageError, match="not in \\[data\\] allowed_sources"):
        fetch(url, SourcePolicy(ca_bundle=cert))
    with pytest.raises(UsageError, match="plain HTTP is refused"):
        fetch(url.replace("https", "http"), SourcePolicy(allowed=("*",)))


def test_local_file_pin(tmp_path: Path) -> None:
    path = tmp_path / "local.csv"
    path.write_bytes(CSV)
    digest = hashlib.sha256(CSV).hexdigest()
    assert fetch(path, SourcePolicy(), sha256=digest).data == CSV
    path.write_bytes(CSV.replace(b"2", b"9"))
    with pytest.raises(IntegrityError):
        fetch(path, SourcePolicy(), sha256=digest)


def test_sql_source(tmp_path: Path) -> None:
    database = tmp_path / "source.db"
    connection = sqlite3.connect(database)
    with connection:
        connection.execute("CREATE TABLE people (name TEXT, age INTEGER)")
        connection.executemany("INSERT INTO people VALUES (?, ?)", [("ann", 31), ("bob", 42)])
    connection.close()
    url = f"sqlite:///{database}"
    policy = SourcePolicy(allowed=("sqlite:///*",))
    fetched = fetch(url, policy, query="people")
    assert fetched.data == b"name,age\nann,31\nbob,42\n"
    assert fetch(url, policy, query="SELECT name FROM people WHERE age > 40").data == b"name\nbob\n"
    with pytest.raises(UsageError, match="query failed"):
        fetch(url, policy, query="no_such_table")
    with pytest.raises(UsageError, match="allowed_sources"):
        fetch(url, SourcePolicy(), query="people")
