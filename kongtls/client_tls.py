"""``kong.client.tls``: mutual TLS controls for the current connection, as in Kong."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from cryptography import x509

from kongtls.phases import Phase, phases

if TYPE_CHECKING:
    from kongtls.pdk import PhaseSource

from kongtls._openssl import CANameList
from kongtls.connection import ConnectionTLS

CERTIFICATE = phases(Phase.certificate)
CLIENT_HELLO = phases(Phase.client_hello)
CHAIN_PHASES = phases(Phase.rewrite, Phase.access, Phase.balancer, Phase.response, Phase.log)
VERIFY_PHASES = phases(Phase.rewrite, Phase.access, Phase.balancer, Phase.response)

NOT_TLS = "server does not have TLS enabled"
CHAIN_NOT_TLS = "connection is not TLS"

CACertificate = x509.Certificate | str | bytes


def _toCertificates(caCerts: Iterable[CACertificate]) -> list[x509.Certificate]:
    certs: list[x509.Certificate] = []
    for item in caCerts:
        if isinstance(item, x509.Certificate):
            certs.append(item)
        elif isinstance(item, (str, bytes)):
            data = item.encode("ascii") if isinstance(item, str) else item
            certs.extend(x509.load_pem_x509_certificates(data))
        else:
            raise TypeError(f"ca_certs: expected certificates or PEM, got {type(item).__name__}")
    return certs


_parsed: dict[tuple[object, ...], tuple[list[x509.Certificate], CANameList | None]] = {}


def _parsedCACerts(caCerts: Iterable[CACertificate] | None
                   ) -> tuple[list[x509.Certificate], CANameList | None]:
    """Parse once per distinct list: plugins pass the same list on every handshake."""
    if not caCerts:
        return [], None
    key = tuple(caCerts)
    cached = _parsed.get(key)
    if cached is None:
        certs = _toCertificates(key)
        cached = (certs, CANameList([c.subject for c in certs]) if certs else None)
        if len(_parsed) > 256:
            _parsed.clear()
        _parsed[key] = cached
    return cached


def checkClientVerify(value: object) -> str:
    """Kong's check of a ``set_client_verify`` value."""
    if not isinstance(value, str):
        raise TypeError(f"bad argument #1 to 'set_client_verify' (string expected, got "
                        f"{type(value).__name__})")
    if value in ("SUCCESS", "NONE") or value.startswith("FAILED:"):
        return value
    raise ValueError(f'unknown client verify value: {value} accepted values are: '
                     f'"SUCCESS", "NONE" or "FAILED:<reason>"')


class KongClientTLS:
    """Adapts Kong's ``kong.client.tls`` calls to the connection's pyOpenSSL handle."""

    def __init__(self, source: PhaseSource, connection: ConnectionTLS | None) -> None:
        self._source = source
        self._connection = connection

    def request_client_certificate(
        self, ca_certs: Iterable[CACertificate] | None = None
    ) -> tuple[bool | None, str | None]:
        """Ask for (not require) a client certificate; C{ca_certs} names acceptable CAs."""
        CERTIFICATE.check(self._source.phase)
        if self._connection is None:
            return None, NOT_TLS
        try:
            certs, names = _parsedCACerts(ca_certs)
        except (ValueError, TypeError) as e:
            return None, f"failed to parse ca_certs: {e}"
        self._connection.requestClientCertificate(certs, names)
        return True, None

    def disable_session_reuse(self) -> tuple[bool | None, str | None]:
        """This connection's session will not be resumed: no ticket, not cached."""
        CERTIFICATE.check(self._source.phase)
        if self._connection is None:
            return None, NOT_TLS
        self._connection.disableSessionReuse()
        return True, None

    def get_full_client_certificate_chain(self) -> tuple[str | None, str | None]:
        """The client's certificate then its intermediates, as PEM, unverified."""
        CHAIN_PHASES.check(self._source.phase)
        if self._connection is None:
            return None, CHAIN_NOT_TLS
        return self._connection.fullChainPEM(), None

    def set_client_verify(self, value: str) -> None:
        """Override what the log serializer reports as ``request.tls.client_verify``."""
        VERIFY_PHASES.check(self._source.phase)
        self._source.setClientVerify(checkClientVerify(value))

    def disable_http2_alpn(self) -> tuple[bool | None, str | None]:
        """Refuse ``h2`` in this connection's ALPN, so the client speaks HTTP/1.1."""
        CLIENT_HELLO.check(self._source.phase)
        if self._connection is None:
            return False, NOT_TLS
        self._connection.noHTTP2 = True
        return True, None

    # -- kongtls additions ------------------------------------------------------------

    def get_facts(self) -> dict[str, str]:
        """What the handshake settled: version, cipher, SNI, ALPN, client certificate.

        A kongtls addition (nginx's ``$ssl_*`` variables in spirit); request phases.
        """
        CHAIN_PHASES.check(self._source.phase)
        conn = self._connection
        if conn is None:
            return {}
        leaf = conn.connection.get_peer_certificate(as_cryptography=True)
        alpn = conn.connection.get_alpn_proto_negotiated()
        facts = {
            "Version": conn.version,
            "Cipher": conn.cipher or "",
            "SNI": conn.sni or "",
            "ALPN": alpn.decode("ascii") if alpn else "",
            "Client-Cert-Sent": "yes" if leaf is not None else "no",
            "Session-Reused": "yes" if conn.resumed else "no",
            "Client-Verify": conn.clientVerify(),
        }
        if leaf is not None:
            facts["Client-Cert-Subject"] = leaf.subject.rfc4514_string()
        return facts
