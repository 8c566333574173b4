"""The TLS side of a listener: OpenSSL callbacks as Kong's handshake phases.

* the servername callback is the *client_hello* phase: the certificate for the SNI is
  chosen, then ``client_hello`` handlers run (ALPN is not chosen yet);
* the info callback, once the ClientHello has been read and before anything is
  written, is the *certificate* phase;
* a handler that fails aborts that one handshake: the server flight is dropped and a
  fatal ``internal_error`` alert is sent instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator, IReactorTime
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from twisted.protocols.tls import (
    BufferingTLSTransport,
    TLSMemoryBIOFactory,
    TLSMemoryBIOProtocol,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from kongtls._openssl import bufferedBytes
from kongtls.connection import ConnectionTLS, acceptAny
from kongtls.handshake import runHandshakePhase
from kongtls.phases import Phase
from kongtls.turn_sender import sendAtTurnEnd, useLargeBuffers

if TYPE_CHECKING:
    from twisted.internet.interfaces import IProtocolFactory

    from kongtls.runtime import Runtime

log = Logger(namespace="kongtls.tls")

#: A TLS record: alert, TLS 1.2 record version, 2 bytes: fatal (2), internal_error (80).
INTERNAL_ERROR_ALERT = bytes([21, 3, 3, 0, 2, 2, 80])

#: The most plaintext taken from OpenSSL per read (Twisted's size).
RECV_SIZE = 1 << 15

_READ_CLIENT_HELLO = b"SSLv3/TLS read client hello"
_WRITE_CERTIFICATE_REQUEST = b"SSLv3/TLS write certificate request"
# The server messages written right before a CertificateRequest.
_BEFORE_CR_TLS12 = (b"SSLv3/TLS write certificate", b"SSLv3/TLS write key exchange")
_BEFORE_CR_TLS13 = b"TLSv1.3 write encrypted extensions"
_READ_FINISHED = b"SSLv3/TLS read finished"
_HANDSHAKE_DONE = SSL.SSL_CB_HANDSHAKE_DONE
_ACCEPT_LOOP = SSL.SSL_CB_ACCEPT_LOOP


def _state(conn: SSL.Connection) -> ConnectionTLS:
    # Twisted makes the TLS protocol the connection's app data.
    state: ConnectionTLS = conn.get_app_data()._kongtls
    return state


def _onServerName(conn: SSL.Connection) -> None:
    state = _state(conn)
    try:
        raw = conn.get_servername()
        state.sni = raw.decode("ascii").lower() if raw else None
        selected = state.runtime.certificates.select(state.sni)
        if selected is not conn.get_context():
            conn.set_context(selected)
        # Once per connection, even when a HelloRetryRequest brings a second ClientHello.
        if not state.phasesRun & Phase.client_hello:
            state.phasesRun |= Phase.client_hello
            runHandshakePhase(state, Phase.client_hello)
    except Exception:
        _abort(state, "client_hello", Failure())


def _onInfo(conn: SSL.Connection, where: int, ret: int) -> None:
    # Called at every state change (about 20 times a handshake): return early.
    state = _state(conn)
    if state.handshakeDone:
        return
    if where & _HANDSHAKE_DONE:
        state.handshakeDone = True
        state.restoreCANames()
        return
    if not where & _ACCEPT_LOOP or not (
            state.caNames is not None or state.noSessionReuse or state.caNamesOn is not None
            or not state.phasesRun & Phase.certificate):
        return
    stage = conn.get_state_string()
    if stage == _READ_CLIENT_HELLO:
        if state.abortReason is None and not state.phasesRun & Phase.certificate:
            state.phasesRun |= Phase.certificate
            try:
                runHandshakePhase(state, Phase.certificate)
            except Exception:
                _abort(state, "certificate", Failure())
    elif state.caNames is not None and (
            stage == _BEFORE_CR_TLS13 or (stage in _BEFORE_CR_TLS12 and
                                          conn.get_protocol_version() != SSL.TLS1_3_VERSION)):
        state.installCANames()
    elif stage == _READ_FINISHED:
        state.keepOutOfSessionCache()
    else:
        state.restoreCANames()


def _abort(state: ConnectionTLS, phase: str, failure: Failure) -> None:
    state.abortReason = phase
    state.restoreCANames()
    log.failure("{phase} phase failed for SNI {sni!r}: handshake aborted",
                failure, phase=phase, sni=state.sni)


def _selectALPN(conn: SSL.Connection, offered: Sequence[bytes]) -> Any:
    state = _state(conn)
    for proto in state.runtime.alpn:
        if proto in offered and not (proto == b"h2" and state.noHTTP2):
            return proto
    return SSL.NO_OVERLAPPING_PROTOCOLS


def customizeContext(ctx: SSL.Context) -> None:
    """Install the gateway's callbacks on a server context being built."""
    ctx.set_tlsext_servername_callback(_onServerName)
    ctx.set_alpn_select_callback(_selectALPN)
    ctx.set_info_callback(_onInfo)
    ctx.set_verify(SSL.VERIFY_NONE, acceptAny)


class GatewayTLSProtocol(BufferingTLSTransport):
    """A TLS transport that can replace an aborted handshake's flight with an alert,
    and that does less Python work per record.

    Twisted's own C{_write} hands OpenSSL 16 KiB at a time and reads the records back
    one by one; over a 1 GiB download that per-record work was a fifth of the proxy's
    CPU. Here a write goes to OpenSSL whole (a memory BIO takes every record) and comes
    back in one read of exactly what is waiting; reads that could only raise
    C{WantReadError} are not made.
    """

    _kongtls: ConnectionTLS | None = None

    def __init__(self, factory: Any, wrappedProtocol: Any, _connectWrapped: bool = True
                 ) -> None:
        super().__init__(factory, wrappedProtocol, _connectWrapped)
        self.aggregateWrites(False)

    def aggregateWrites(self, aggregate: bool) -> None:
        """Whether small writes wait for the end of the reactor turn to go out together
        (Twisted's BufferingTLSTransport does so always). The HTTP/1.1 channel writes
        each response in as few writes as it can, so it turns this off; twisted.web's
        HTTP/2 writes frame by frame and turns it back on."""
        self.write = (self._aggregator.write if aggregate  # type: ignore[method-assign]
                      else self._directWrite)

    def _directWrite(self, data: bytes) -> None:
        TLSMemoryBIOProtocol.write(self, data)

    def writeSequence(self, sequence: Any) -> None:
        self.write(b"".join(sequence))

    def makeConnection(self, transport: Any) -> None:
        # Bigger socket reads, and fewer pause/resume turns per megabyte written.
        useLargeBuffers(transport)
        super().makeConnection(transport)

    def _write(self, data: bytes) -> None:
        if self._lostTLSConnection:
            return
        conn = self._tlsConnection
        view = memoryview(data)
        while view:
            try:
                sent = conn.send(view)
            except SSL.WantReadError:
                self._bufferedWrite(bytes(view))
                return
            except SSL.Error:
                self._tlsShutdownFinished(Failure())
                return
            view = view[sent:]
            self._flushSendBIO()

    def _flushSendBIO(self) -> None:
        state = self._kongtls
        if state is not None and state.abortReason is not None and not state.handshakeDone:
            self._sendAbortAlert()
            return
        conn = self._tlsConnection
        waiting = bufferedBytes(conn._from_ssl)
        if waiting:
            sendAtTurnEnd(self.transport, conn.bio_read(waiting))

    def _flushReceiveBIO(self) -> None:
        # Twisted's loop, except that it stops when nothing is left to decrypt instead
        # of asking OpenSSL once more and catching WantReadError (per request, twice).
        conn = self._tlsConnection
        while not self._lostTLSConnection:
            try:
                data = conn.recv(RECV_SIZE)
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:
                self._shutdownTLS()
                self._tlsShutdownFinished(None)
            except SSL.Error:
                self._tlsShutdownFinished(Failure())
            else:
                if not self._aborted:
                    ProtocolWrapper.dataReceived(self, data)
                if not conn.pending() and not bufferedBytes(conn._into_ssl):
                    break
        self._flushSendBIO()

    def _sendAbortAlert(self) -> None:
        conn = self._tlsConnection
        while True:
            try:
                conn.bio_read(2**16)
            except SSL.WantReadError:
                break
        if self.transport is not None and not getattr(self, "_kongtlsAlertSent", False):
            self._kongtlsAlertSent = True
            self.transport.write(INTERNAL_ERROR_ALERT)
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self._kongtls is not None:
            self._kongtls.restoreCANames()
        super().connectionLost(reason)  # type: ignore[arg-type]


@implementer(IOpenSSLServerConnectionCreator)
class GatewayConnectionCreator:
    """Makes each server connection from the runtime current at accept time."""

    def __init__(self, currentRuntime: Callable[[], Runtime]) -> None:
        self._currentRuntime = currentRuntime

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        runtime = self._currentRuntime()
        conn = SSL.Connection(runtime.certificates.default, None)
        tlsProtocol._kongtls = ConnectionTLS(conn, runtime, tlsProtocol)
        return conn


class GatewayTLSFactory(TLSMemoryBIOFactory):
    """TLS around the HTTP factory, with the gateway's handshake phases."""

    protocol = GatewayTLSProtocol

    def __init__(self, currentRuntime: Callable[[], Runtime], wrapped: IProtocolFactory,
                 clock: IReactorTime) -> None:
        super().__init__(GatewayConnectionCreator(currentRuntime), False, wrapped, clock)
