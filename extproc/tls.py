"""TLS material for the ext_proc port: a self-signed certificate made at start, or files from ``--cert-path``.

Gateways connect to the EPP with TLS and no verification (as upstream), so a self-signed certificate is the
secure-by-default choice when the operator provides none.
"""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def self_signed(common_name: str = "endpoint-picker") -> tuple[bytes, bytes]:
    """Return ``(key_pem, cert_pem)`` for a fresh P-256 key and a one-year self-signed certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name), x509.DNSName("localhost")]),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def from_directory(cert_dir: Path) -> tuple[bytes, bytes]:
    """Read ``tls.key`` and ``tls.crt`` (the Kubernetes TLS secret layout) from ``cert_dir``."""
    return (cert_dir / "tls.key").read_bytes(), (cert_dir / "tls.crt").read_bytes()
