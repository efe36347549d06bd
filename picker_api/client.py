"""Client side of the picker API: a channel to the picker's ext_proc port, and the three calls.

TLS. The ext_proc port serves TLS by default with a certificate the picker makes itself at start (or one
from ``--cert-path``), and proxies connect to it without verification, as upstream. gRPC Python cannot turn
verification off, so by default this client does trust-on-first-use: it fetches the certificate the server
presents (:func:`ssl.get_server_certificate`), trusts exactly that certificate as the root, and overrides the
TLS target name with a name from the certificate (its first DNS subject-alternative name, else its common
name). That gives an encrypted channel to whatever answers on the address — the same guarantee as the
proxy's — not an authenticated one. For a verified connection pass ``ca_file`` (the CA that issued the
picker's certificate) and, if the address is not a name in the certificate, ``server_name``. A picker
started with ``--secure-serving=false`` needs ``tls=False``.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID

from picker_api.stubs import picker_pb2 as pb
from picker_api.stubs import picker_pb2_grpc

DEFAULT_ADDRESS = "localhost:9002"


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> ``(host, port)`` (brackets removed)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected host:port, got {address!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def fetch_certificate(address: str, timeout: float = 5.0) -> bytes:
    """The PEM certificate the TLS server at ``address`` presents (no verification: this is how we learn it)."""
    return ssl.get_server_certificate(split_address(address), timeout=timeout).encode()


def name_in_certificate(pem: bytes) -> str | None:
    """The first DNS subject-alternative name of ``pem``, else its common name, else None."""
    cert = x509.load_pem_x509_certificate(pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = san.get_values_for_type(x509.DNSName)
        if names:
            return names[0]
    except x509.ExtensionNotFound:
        pass
    common = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if common:
        value = common[0].value
        return value if isinstance(value, str) else value.decode()
    return None


@dataclass(frozen=True, slots=True)
class Target:
    """Where the picker's API is and how to reach it."""

    address: str = DEFAULT_ADDRESS
    tls: bool = True
    ca_file: Path | None = None  # verify against this CA instead of trusting the presented certificate
    server_name: str | None = None  # TLS name to verify (default: from the certificate, or the address)
    timeout: float = 5.0  # for the certificate fetch and each unary call


async def open_channel(target: Target) -> grpc.aio.Channel:
    """A grpc.aio channel to ``target`` (see the module docstring for how TLS is handled)."""
    if not target.tls:
        return grpc.aio.insecure_channel(target.address)
    if target.ca_file is not None:
        roots = target.ca_file.read_bytes()
        override = target.server_name
    else:
        roots = await asyncio.to_thread(fetch_certificate, target.address, target.timeout)
        override = target.server_name or name_in_certificate(roots)
    options = [("grpc.ssl_target_name_override", override)] if override else []
    return grpc.aio.secure_channel(target.address, grpc.ssl_channel_credentials(root_certificates=roots),
                                   options=options)


class PickerClient:
    """The three calls over one channel; use as ``async with PickerClient(await open_channel(t), t.timeout)``."""

    def __init__(self, channel: grpc.aio.Channel, timeout: float = 5.0) -> None:
        self._channel = channel
        self._stub = picker_pb2_grpc.EndpointPickerServiceStub(channel)
        self._timeout = timeout

    async def __aenter__(self) -> PickerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._channel.close()

    async def explain(self, request_id: str) -> pb.Decision:
        reply = await self._stub.Explain(pb.ExplainRequest(request_id=request_id), timeout=self._timeout)
        return reply.decision

    async def state(self) -> pb.State:
        reply = await self._stub.GetState(pb.GetStateRequest(), timeout=self._timeout)
        return reply.state

    async def decisions(self, *, recent: int = 0, recent_only: bool = False, model: str = "",
                        limit: int = 0) -> AsyncIterator[pb.Decision]:
        """Decision records as the picker streams them (ends on ``limit``, ``recent_only`` or server close)."""
        call = self._stub.StreamDecisions(pb.StreamDecisionsRequest(
            recent=recent, recent_only=recent_only, model=model, limit=limit))
        try:
            async for reply in call:
                yield reply.decision
        finally:
            call.cancel()  # a no-op once the stream has ended; otherwise the server unsubscribes
