"""TLS towards https services: verification (service-identity), SNI, client certificate."""

from __future__ import annotations

from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
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
        #: What tells two policies' connections apart: a pooled connection is only
        #: reused by services whose policy has the same identity.
        self.identity = (verify, frozenset(_fingerprint(c) for c in caCertificates),
                         tuple(_fingerprint(c) for c in clientCertificate.chain)
                         if clientCertificate is not None else None)
        self._trust: Any = None
        if caCertificates:
            self._trust = tssl.trustRootFromCertificates([
                tssl.Certificate.loadPEM(c.public_bytes(Encoding.PEM))
                for c in caCertificates])
        # cryptography objects throughout: pyOpenSSL deprecates its own X509/PKey.
        self._tlsOptions: dict[str, Any] = {}
        if clientCertificate is not None:
            leaf, *rest = clientCertificate.chain
            self._tlsOptions = {"privateKey": clientCertificate.key, "certificate": leaf}
            if rest:
                self._tlsOptions["extraCertChain"] = rest
        self._unverifiedContext: SSL.Context | None = None

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        host = hostname.decode("idna")
        if not self.verify:
            if self._unverifiedContext is None:
                options = tssl.CertificateOptions(verify=False, **self._tlsOptions)
                self._unverifiedContext = options.getContext()
            return _Unverified(host, self._unverifiedContext)
        return tssl.optionsForClientTLS(host, trustRoot=self._trust,
                                        extraCertificateOptions=dict(self._tlsOptions))


def _fingerprint(certificate: x509.Certificate) -> bytes:
    return certificate.fingerprint(hashes.SHA256())
