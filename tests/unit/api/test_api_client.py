"""Client helpers: address parsing and the TLS name taken from the picker's certificate."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from extproc import tls
from picker_api.client import name_in_certificate, split_address


def test_split_address() -> None:
    assert split_address("localhost:9002") == ("localhost", 9002)
    assert split_address("127.0.0.1:1") == ("127.0.0.1", 1)
    assert split_address("[::1]:9002") == ("::1", 9002)
    for bad in ("localhost", ":9002", "host:port"):
        with pytest.raises(ValueError):
            split_address(bad)


def test_name_comes_from_the_picker_certificate() -> None:
    _, cert = tls.self_signed()  # what the picker serves without --cert-path
    assert name_in_certificate(cert) == "endpoint-picker"


def _cert(subject: x509.Name, san: list[x509.GeneralName] | None) -> bytes:
    import datetime

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
               .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1)))
    if san is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(Encoding.PEM)


def test_name_falls_back_to_the_common_name_then_none() -> None:
    import ipaddress

    cn = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "epp.example")])
    assert name_in_certificate(_cert(cn, None)) == "epp.example"
    assert name_in_certificate(_cert(cn, [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])) == "epp.example"
    assert name_in_certificate(_cert(x509.Name([]), None)) is None
