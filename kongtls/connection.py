"""What the gateway knows about one TLS connection, from its handshake onwards."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL, crypto

from kongtls._openssl import CANameList, clearClientCAList, sessionReused

if TYPE_CHECKING:
    from kongtls.runtime import Runtime


def acceptAny(conn: SSL.Connection, cert: Any, errno: int, depth: int, ok: int) -> bool:
    """``optional_no_ca``: the handshake completes whatever the client sends."""
    return True


class ConnectionTLS:
    """One TLS connection's handshake facts and the requests the PDK made of it.

    The TLS protocol (the SSL.Connection's app data) holds it as ``_kongtls``. Nothing a plugin
    keeps in a handshake phase lives here: requests only see the live TLS facts.
    """

    __slots__ = (
        "connection", "runtime", "protocol", "sni", "abortReason", "certificateRequested",
        "trustAnchors", "caNames", "caNamesOn", "noSessionReuse", "noHTTP2",
        "handshakeDone", "phasesRun", "_verdict", "__weakref__",
    )

    def __init__(self, connection: SSL.Connection, runtime: Runtime, protocol: Any) -> None:
        self.connection = connection
        self.runtime = runtime
        self.protocol = protocol
        self.sni: str | None = None
        self.abortReason: str | None = None
        self.certificateRequested = False
        self.trustAnchors: tuple[x509.Certificate, ...] = ()
        self.caNames: CANameList | None = None
        self.caNamesOn: SSL.Context | None = None
        self.phasesRun = 0
        self.noSessionReuse = False
        self.noHTTP2 = False
        self.handshakeDone = False
        self._verdict: str | None = None

    # -- certificate phase requests ---------------------------------------------------

    def requestClientCertificate(self, caCerts: Sequence[x509.Certificate],
                                 caNames: CANameList | None) -> None:
        # Every server context carries the accept-all verify callback (see
        # tls_server.customizeContext), so only the mode changes per connection.
        self.connection.set_verify(SSL.VERIFY_PEER)
        self.certificateRequested = True
        self.trustAnchors = tuple(caCerts)
        self.caNames = caNames

    def installCANames(self) -> None:
        """Right before CertificateRequest is written: put our CA names on the context.

        The server flight is written inside one ``do_handshake`` call, so no other
        connection can see them before L{restoreCANames} takes them off again.
        """
        if self.caNames is not None and self.caNamesOn is None:
            context = self.connection.get_context()
            self.caNames.install(context)
            self.caNamesOn = context

    def restoreCANames(self) -> None:
        """Take this connection's CA names off the shared context once they were sent."""
        if self.caNamesOn is not None:
            clearClientCAList(self.caNamesOn)
            self.caNamesOn = None

    def disableSessionReuse(self) -> None:
        self.noSessionReuse = True
        self.connection.set_options(SSL.OP_NO_TICKET)

    def keepOutOfSessionCache(self) -> None:
        """Called once the client's Finished is read, before OpenSSL caches the session.

        OpenSSL does not cache a session whose connection verifies its peer while no
        session-ID context is set (our contexts set none). Verify mode matters for
        nothing else this late, so setting it here keeps exactly this session out.
        """
        if self.noSessionReuse and not self.certificateRequested:
            self.connection.set_verify(SSL.VERIFY_PEER)

    # -- facts for later phases -----------------------------------------------------

    @property
    def resumed(self) -> bool:
        return sessionReused(self.connection)

    def peerCertificates(self) -> list[x509.Certificate] | None:
        """Leaf first, then what the client sent after it; None if nothing was sent."""
        conn = self.connection
        leaf = conn.get_peer_certificate(as_cryptography=True)
        if leaf is None:
            return None
        rest = conn.get_peer_cert_chain(as_cryptography=True)
        if rest is None:
            return None if self.resumed else [leaf]
        if rest and rest[0] == leaf:
            rest = rest[1:]
        return [leaf, *rest]

    def fullChainPEM(self) -> str | None:
        if self.resumed:
            return None
        certs = self.peerCertificates()
        if not certs:
            return None
        return "".join(c.public_bytes(Encoding.PEM).decode("ascii") for c in certs)

    def clientVerify(self) -> str:
        """The handshake's verdict: NONE, SUCCESS or FAILED:<reason>, against ca_certs."""
        if self._verdict is None:
            self._verdict = self._computeVerdict()
        return self._verdict

    def _computeVerdict(self) -> str:
        conn = self.connection
        leaf = conn.get_peer_certificate(as_cryptography=True)
        if leaf is None:
            return "NONE"
        rest = conn.get_peer_cert_chain(as_cryptography=True) or []
        store = crypto.X509Store()
        for anchor in self.trustAnchors:
            store.add_cert(crypto.X509.from_cryptography(anchor))
        chain = [crypto.X509.from_cryptography(c) for c in rest if c != leaf]
        try:
            crypto.X509StoreContext(store, crypto.X509.from_cryptography(leaf),
                                    chain).verify_certificate()
        except crypto.X509StoreContextError as e:
            reason = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
            return f"FAILED:{reason}"
        return "SUCCESS"

    @property
    def version(self) -> str:
        return self.connection.get_protocol_version_name()

    @property
    def cipher(self) -> str | None:
        return self.connection.get_cipher_name()
