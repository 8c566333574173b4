"""TLS towards https services: verification (service-identity), SNI, client certificate."""

from __future__ import annotations

from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)
from OpenSSL import SSL
from twisted.internet import ssl as tssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from kongtls.config import CertificateEntry


@implementer(IOpenSSLClientConnectionCreator)
class _Unverified:
    """``tls_verify: false``: no certificate check, but SNI is still sent."""

    def __init__(self, hostname: str, context: SSL.Context) -> None:
        self._hostname = hostname.encode("idna")
        self._context = context

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        conn = SSL.Connection(self._context, None)
        conn.set_tlsext_host_name(self._hostname)
        conn.set_app_data(tlsProtocol)
        return conn


@implementer(IPolicyForHTTPS)
class ServicePolicy:
    """How one service's https connections are made (an Agent's C{contextFactory})."""

    def __init__(self, verify: bool, caCertificates: list[x509.Certificate],
                 clientCertificate: CertificateEntry | None) -> None:
        self.verify = verify
        self._trust: Any = None
        if caCertificates:
            self._trust = tssl.trustRootFromCertificates([
                tssl.Certificate.loadPEM(c.public_bytes(Encoding.PEM))
                for c in caCertificates])
        self._client: tssl.PrivateCertificate | None = None
        self._chain: list[Any] = []
        if clientCertificate is not None:
            leaf, *rest = clientCertificate.chain
            keyPEM = clientCertificate.key.private_bytes(
                Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
            self._client = tssl.PrivateCertificate.loadPEM(
                leaf.public_bytes(Encoding.PEM) + keyPEM)
            self._chain = [tssl.Certificate.loadPEM(c.public_bytes(Encoding.PEM)).original
                           for c in rest]
        self._unverifiedContext: SSL.Context | None = None

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        host = hostname.decode("idna")
        if not self.verify:
            if self._unverifiedContext is None:
                options = tssl.CertificateOptions(
                    verify=False,
                    privateKey=self._client.privateKey.original if self._client else None,
                    certificate=self._client.original if self._client else None,
                    extraCertChain=self._chain or None)
                self._unverifiedContext = options.getContext()
            return _Unverified(host, self._unverifiedContext)
        extra = {"extraCertChain": self._chain} if self._chain else None
        return tssl.optionsForClientTLS(host, trustRoot=self._trust,
                                        clientCertificate=self._client,
                                        extraCertificateOptions=extra)
