"""A bare Twisted TLS server: the baseline of ``bench/handshake_cpu.py``.

A plain L{Protocol} that does nothing, under TLS made by L{CertificateOptions} from
cryptography key and certificate objects. Like the kongtls ``client-certificate``
plugin it asks for (but does not require or verify) a client certificate: VERIFY_PEER
with a callback that accepts anything, optionally naming acceptable CAs in the
CertificateRequest (``--ca-names``), with session tickets and the session cache off.

    python bench/bare_tls_server.py --port 8443 --cert server.crt --key server.key
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from OpenSSL import SSL
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import CertificateOptions
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer


def _acceptAny(conn: SSL.Connection, cert: Any, errno: int, depth: int, ok: int) -> bool:
    """Like nginx's ``ssl_verify_client optional_no_ca``: any certificate will do."""
    return True


def _noProtocol(conn: SSL.Connection, offered: list[bytes]) -> Any:
    return SSL.NO_OVERLAPPING_PROTOCOLS


@implementer(IOpenSSLServerConnectionCreator)
class RequestClientCertificate:
    """Server connections from one context that asks every client for a certificate."""

    def __init__(self, options: CertificateOptions,
                 caNames: list[x509.Certificate] | None = None) -> None:
        # getContext() is the context CertificateOptions built (and caches) from its
        # settings; it is changed once here, before any connection uses it.
        self._context = options.getContext()
        self._context.set_verify(SSL.VERIFY_PEER, _acceptAny)
        # Twisted's own ALPN callback, on every CertificateOptions context, answers a
        # client whose offer it cannot meet (curl's h2, http/1.1: these servers speak no
        # negotiated protocol) with an empty choice, which OpenSSL turns into an
        # internal_error alert. Decline the way pyOpenSSL means it to be declined.
        self._context.set_alpn_select_callback(_noProtocol)
        for ca in caNames or ():
            self._context.add_client_ca(ca)

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        return SSL.Connection(self._context, None)


class Idle(Protocol):
    """Says nothing; the client closes once its handshake is done."""


def serverOptions(certFile: str, keyFile: str) -> CertificateOptions:
    """The bare servers' TLS settings: the chain and key, no session reuse."""
    with open(certFile, "rb") as f:
        chain = x509.load_pem_x509_certificates(f.read())
    with open(keyFile, "rb") as f:
        key = load_pem_private_key(f.read(), password=None)
    return CertificateOptions(
        privateKey=key,  # type: ignore[arg-type]  # pyOpenSSL takes cryptography keys
        certificate=chain[0],  # type: ignore[arg-type]
        extraCertChain=chain[1:] or None,  # type: ignore[arg-type]
        enableSessions=False,
        enableSessionTickets=False,
    )


def serveTLS(reactor: Any, port: int, creator: Any, wrapped: Any, label: str) -> None:
    """Listen on loopback C{port} with TLS around C{wrapped}, and run the reactor."""
    factory = TLSMemoryBIOFactory(creator, False, wrapped, reactor)
    endpoint = serverFromString(reactor, f"tcp:{port}:interface=127.0.0.1")

    def listening(listeningPort: Any) -> None:
        sys.stdout.write(f"{label} listening on {listeningPort.getHost()}\n")
        sys.stdout.flush()

    def failed(failure: Any) -> None:
        sys.stderr.write(f"{label} cannot listen: {failure.getErrorMessage()}\n")
        reactor.stop()

    endpoint.listen(factory).addCallbacks(listening, failed)
    reactor.run()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True, help="PEM chain, leaf first")
    parser.add_argument("--key", required=True, help="PEM private key")
    parser.add_argument("--ca-names", help="PEM CA certificates named in CertificateRequest")
    args = parser.parse_args(argv)
    caNames: list[x509.Certificate] = []
    if args.ca_names:
        with open(args.ca_names, "rb") as f:
            caNames = x509.load_pem_x509_certificates(f.read())
    from twisted.internet import reactor

    serveTLS(reactor, args.port,
             RequestClientCertificate(serverOptions(args.cert, args.key), caNames),
             Factory.forProtocol(Idle), "bare TLS server")


if __name__ == "__main__":
    main()
