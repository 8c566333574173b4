"""A lean HTTP/1.1 client for the upstream calls, with a keep-alive connection pool.

twisted.web's C{Agent} was over half of the gateway's CPU per proxied request (URL
parsing, a request object graph, several Deferreds and timers). Here a request is one
C{transport.write}, a response head is parsed in one pass, body bytes go on as they
arrived, and each connection has one timer that serves as read, write and idle timeout.

Pooled connections are kept per (scheme, host, port, TLS identity), so services with
different client certificates or trust never share one.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import CancelledError, Deferred, DeferredList
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.error import ConnectionDone, ConnectionLost, TimeoutError
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.internet.protocol import ClientFactory, Protocol, connectionDone
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH
from zope.interface import implementer

from kongtls.turn_sender import sendAtTurnEnd, useLargeBuffers
from kongtls.web import CANONICAL_NAMES, encodeName

#: RFC 9110 section 7.6.1 connection-specific fields, never forwarded.
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
    b"transfer-encoding", b"upgrade", b"proxy-authenticate", b"proxy-authorization",
})
_FRAMING = HOP_BY_HOP | {b"content-length"}
#: The same names as Twisted canonicalizes them, to the lower-case ones above.
_FRAMING_KEYS = {encodeName(name): name for name in _FRAMING}

#: A response head (or a chunk-size or trailer line) longer than this is refused.
MAX_HEAD = 65536
#: Idle connections kept per pool key, and for how long (Kong's upstream keepalive).
MAX_IDLE_PER_KEY = 128
IDLE_TIMEOUT = 60.0
#: Methods whose request carries C{Content-Length: 0} when it has no body.
_BODY_METHODS = frozenset({b"POST", b"PUT", b"PATCH"})
_SMALL_WRITE = 65536

_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}[ \t]*(?:;[^\r\n\x00]*)?")
_DIGITS = re.compile(rb"[0-9]{1,18}")

#: The body length of a chunked response.
_CHUNKED = -1

# What the connection parses next.
_HEAD, _LENGTH, _CHUNK_LINE, _CHUNK_DATA, _CHUNK_END, _TRAILER, _UNTIL_CLOSE, _DONE = range(8)


class BadResponseError(Exception):
    """The upstream's answer is not HTTP/1.x, or its framing is ambiguous."""


class Timeouts(NamedTuple):
    """Seconds, as in Kong: to connect, between two writes, between two reads."""

    connect: float
    write: float
    read: float


#: (scheme, host, port, the TLS policy's identity or None).
PoolKey = tuple[str, str, int, Any]


class UpstreamPool:
    """Idle keep-alive connections per L{PoolKey}, and the requests made over them."""

    def __init__(self, reactor: Any, maxIdlePerKey: int = MAX_IDLE_PER_KEY,
                 idleTimeout: float = IDLE_TIMEOUT) -> None:
        self.reactor = reactor
        self.maxIdlePerKey = maxIdlePerKey
        self.idleTimeout = idleTimeout
        self._idle: dict[PoolKey, list[_Connection]] = {}
        self.closing: set[_Connection] = set()

    def request(self, host: str, port: int, tls: Any, method: bytes, target: bytes,
                headers: Headers, body: bytes | Any | None, timeouts: Timeouts
                ) -> UpstreamRequest:
        """Send one request: over an idle connection to C{host}:C{port} made under the
        same TLS policy, or a new one.

        C{tls}: None for http; for https, the service's policy (its C{creatorForNetloc}
        is asked only when a connection is made). C{body}: None, the bytes of a
        buffered body, or a L{kongtls.request_body.RequestBodyStream}.
        """
        key: PoolKey = ("https", host, port, tls.identity) if tls is not None else \
            ("http", host, port, None)
        request = UpstreamRequest(self, key, tls, _formatHead(method, target, headers, body),
                                  method == b"HEAD", body, timeouts)
        idle = self._idle.get(key)
        connection = idle.pop() if idle else None
        request.send(connection or self._connect(key, tls, timeouts))
        return request

    def _connect(self, key: PoolKey, tls: Any, timeouts: Timeouts) -> _Connection:
        _, host, port, _ = key
        connection = _Connection(self, key)
        factory: Any = _ConnectionFactory(connection)
        if tls is not None:
            creator = tls.creatorForNetloc(host.encode("idna"), port)
            factory = TLSMemoryBIOFactory(creator, True, factory, clock=self.reactor)
        if isIPAddress(host) or isIPv6Address(host):
            connector = self.reactor.connectTCP(host, port, factory, timeout=timeouts.connect)
            connection.cancelConnect = connector.stopConnecting
        else:
            endpoint = HostnameEndpoint(self.reactor, host, port, timeout=timeouts.connect)
            connecting = endpoint.connect(factory)
            connecting.addErrback(connection.connectFailed)
            connection.cancelConnect = connecting.cancel
        return connection

    def _release(self, connection: _Connection) -> None:
        idle = self._idle.setdefault(connection.key, [])
        if len(idle) >= self.maxIdlePerKey:
            connection.close()
        else:
            idle.append(connection)

    def _forget(self, connection: _Connection) -> None:
        idle = self._idle.get(connection.key)
        if idle and connection in idle:
            idle.remove(connection)

    def closeCachedConnections(self) -> Deferred[None]:
        """Close every idle connection; fires once they (and others closing) are gone."""
        for idle in list(self._idle.values()):
            for connection in list(idle):
                connection.close()
        self._idle.clear()
        waits = [c.gone for c in self.closing]
        return DeferredList(waits).addCallback(lambda _: None)


class UpstreamRequest:
    """One request in flight; C{response} fires with its L{UpstreamResponse}."""

    def __init__(self, pool: UpstreamPool, key: PoolKey, tls: Any, head: bytes, headOnly: bool,
                 body: bytes | Any | None, timeouts: Timeouts) -> None:
        self.response: Deferred[UpstreamResponse] = Deferred()
        self.pool = pool
        self.key = key
        self.tls = tls
        self.head = head
        self.headOnly = headOnly
        self.body = body
        self.timeouts = timeouts
        self.retried = False
        self.connection: _Connection | None = None

    def send(self, connection: _Connection) -> None:
        self.connection = connection
        connection.send(self)

    @property
    def resendable(self) -> bool:
        """Can it go again on another connection (its body is bytes, or not started)?"""
        body = self.body
        return body is None or isinstance(body, bytes) or not body.started

    def retryFresh(self) -> None:
        """The pooled connection was stale: once more, on a new connection."""
        self.retried = True
        self.send(self.pool._connect(self.key, self.tls, self.timeouts))

    def fail(self, error: BaseException) -> None:
        self.connection = None
        if not self.response.called:
            self.response.errback(Failure(error))

    def cancel(self) -> None:
        """The client left before the response head: drop the upstream connection."""
        if self.response.called:
            return
        connection = self.connection
        if connection is not None:
            connection.abort()
        self.fail(CancelledError())


class UpstreamResponse:
    """The upstream's status, headers (hop-by-hop removed) and a body to pull."""

    #: Chunks read ahead before the upstream is paused.
    HIGH_WATER = 8

    def __init__(self, status: int, headers: Headers, connection: _Connection | None) -> None:
        self.status = status
        self.headers = headers
        self._connection = connection  # None once the body is complete
        self._chunks: deque[bytes] = deque()
        self._done = False
        self._error: BaseException | None = None
        self._waiting: Deferred[None] | None = None
        self._paused = False
        self._discarded = False

    def _push(self, data: bytes, done: bool, error: BaseException | None = None) -> None:
        """From the connection: body bytes, and whether (and how) the body ended."""
        if data and not self._discarded:
            chunks = self._chunks
            chunks.append(data)
            if len(chunks) >= self.HIGH_WATER and not self._paused and not done:
                connection = self._connection
                if connection is not None:
                    self._paused = True
                    connection.pauseReading()
        if done:
            self._done = True
            self._error = error
            self._connection = None
            self._paused = False
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.callback(None)

    async def nextChunk(self) -> bytes | None:
        """The next chunk; None at a complete end; raises if the body was cut short
        (or nothing came for the read timeout)."""
        chunks = self._chunks
        while not chunks:
            if self._done:
                if self._error is not None:
                    raise self._error
                return None
            waiting: Deferred[None] = Deferred()
            self._waiting = waiting
            await waiting
        data = chunks.popleft()
        if self._paused and len(chunks) <= 1:
            self._paused = False
            connection = self._connection
            if connection is not None:
                connection.resumeReading()
        return data

    def bodyIfComplete(self) -> bytes | None:
        """The whole body if all of it has already arrived intact (as a small one
        usually has by the time its head is parsed), else None."""
        if not self._done or self._error is not None:
            return None
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        return data

    async def readAll(self) -> bytes:
        """The whole body (Kong's ``response`` phase buffers it)."""
        chunks = []
        while (chunk := await self.nextChunk()) is not None:
            chunks.append(chunk)
        return b"".join(chunks)

    def discard(self) -> None:
        """Stop reading: the client is gone or the body is replaced. An unfinished body
        closes its connection."""
        self._discarded = True
        self._chunks.clear()
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.abort()


class _ConnectionFactory(ClientFactory):
    noisy = False  # no log line per upstream connection

    def __init__(self, connection: _Connection) -> None:
        self.connection = connection

    def buildProtocol(self, addr: Any) -> _Connection:
        return self.connection

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.connection.connectFailed(reason)


class _Connection(Protocol):
    """One upstream connection: writes a request, parses its response, then goes back
    to the pool (keep-alive) or closes.

    C{abort} and C{close} detach the request and response in flight: whoever calls
    them tells those what happened.
    """

    cancelConnect: Callable[[], object] | None = None

    def __init__(self, pool: UpstreamPool, key: PoolKey) -> None:
        self.key = key
        self._pool = pool
        self._seconds = pool.reactor.seconds
        self._callLater = pool.reactor.callLater
        self._connected = False
        self._closed = False
        self.gone: Deferred[None] = Deferred()  # fires when closed (see closing)
        self.reused = False
        self._request: UpstreamRequest | None = None
        self._response: UpstreamResponse | None = None
        self._timeouts: Timeouts | None = None
        self._mode = _DONE
        self._buffer = b""
        self._left = 0
        self._persistent = False
        self._received = False
        self._sender: _BodySender | None = None
        self._readPaused = False
        self._timer: Any = None
        self._deadline = 0.0
        self._limit = 0.0

    # -- the request ------------------------------------------------------------------

    def send(self, request: UpstreamRequest) -> None:
        self._request = request
        self._timeouts = request.timeouts
        self._mode = _HEAD
        self._received = False
        if self._connected:
            self._write()

    def connectionMade(self) -> None:
        self._connected = True
        self.cancelConnect = None
        useLargeBuffers(self.transport)
        if self._request is not None:
            self._write()

    def connectFailed(self, reason: Failure) -> None:
        self.cancelConnect = None
        self._closed = True
        self._gone()
        request, self._request = self._request, None
        if request is not None:
            request.fail(reason.value)

    def _write(self) -> None:
        request = self._request
        transport: Any = self.transport
        assert request is not None and transport is not None
        body = request.body
        if body is None:
            sendAtTurnEnd(transport, request.head)
        elif isinstance(body, bytes):
            if len(body) <= _SMALL_WRITE:
                sendAtTurnEnd(transport, request.head + body)
            else:
                transport.writeSequence([request.head, body])
        else:
            transport.write(request.head)
            self._arm(request.timeouts.write)
            self._sender = _BodySender(self, body, request.timeouts.write)
            self._sender.start()
            return
        self._arm(request.timeouts.read)

    def wrote(self) -> None:
        """The streamed body made progress: restart the write timeout."""
        assert self._timeouts is not None
        self._arm(self._timeouts.write)

    def bodySent(self) -> None:
        self._sender = None
        if self._request is not None or self._response is not None:
            assert self._timeouts is not None
            self._arm(self._timeouts.read)

    def bodyFailed(self, reason: Failure) -> None:
        """The client's body did not arrive whole: the upstream must not see an end."""
        self._sender = None
        request, response = self._request, self._response
        self.abort()
        if request is not None:
            request.fail(reason.value)
        if response is not None:
            response._push(b"", True, reason.value)

    # -- the response -----------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        request = self._request
        if request is None and self._response is None:
            self.abort()  # nothing was asked: a broken upstream
            return
        self._received = True
        self._deadline = self._seconds() + self._limit  # progress, whichever way
        mode = self._mode
        if mode == _LENGTH and len(data) < self._left:
            self._left -= len(data)
            self._deliver(data)
            return
        if mode == _UNTIL_CLOSE:
            self._deliver(data)
            return
        answered: UpstreamResponse | None = None
        if request is not None:  # mode == _HEAD
            if self._buffer:
                data, self._buffer = self._buffer + data, b""
            try:
                start = self._parseHeads(data, request)
            except BadResponseError as e:
                self._request = None
                self.abort()
                request.fail(e)
                return
            if start < 0:
                return
            answered = self._response
            data = data[start:] if start else data
            if self._mode == _DONE:
                if data:
                    self._persistent = False  # bytes after a response without body
                self._finished(b"")
        if data and self._mode != _DONE:
            self._body(data)
        if answered is not None:
            assert request is not None
            if answered._error is not None:
                request.fail(answered._error)  # broken before anyone saw it: a 502
            else:
                request.connection = None
                request.response.callback(answered)

    def _parseHeads(self, data: bytes, request: UpstreamRequest) -> int:
        """Parse response heads (skipping 1xx) from C{data}; the body's start, or -1."""
        start = 0
        while True:
            end, bodyStart = _headEnd(data, start)
            if end < 0:
                if len(data) - start > MAX_HEAD:
                    raise BadResponseError("response head too long")
                self._buffer = data[start:]
                return -1
            status, headers, length, persistent = _parseHead(data[start:end],
                                                             request.headOnly)
            start = bodyStart
            if status >= 200:
                break
            if status == 101:
                raise BadResponseError("101 Switching Protocols to a request without Upgrade")
        self._persistent = persistent
        self._request = None
        self._response = UpstreamResponse(status, headers, self)
        if length is None:
            self._mode = _UNTIL_CLOSE
        elif length == _CHUNKED:
            self._mode = _CHUNK_LINE
        elif length:
            self._mode = _LENGTH
            self._left = length
        else:
            self._mode = _DONE
        return start

    def _body(self, data: bytes) -> None:
        """Body bytes that follow the head (or continue it)."""
        mode = self._mode
        if mode == _UNTIL_CLOSE:
            self._deliver(data)
        elif mode == _LENGTH:
            left = self._left
            if len(data) < left:
                self._left = left - len(data)
                self._deliver(data)
            else:
                if len(data) > left:
                    self._persistent = False  # more than was announced
                    data = data[:left]
                self._left = 0
                self._finished(data)
        else:
            try:
                pieces = self._dechunk(data)
            except BadResponseError as e:
                self._broken(e)
                return
            if self._mode == _DONE:
                self._finished(b"".join(pieces))
            elif pieces:
                self._deliver(pieces[0] if len(pieces) == 1 else b"".join(pieces))

    def _dechunk(self, data: bytes) -> list[bytes]:
        """The chunk data in C{data} (slices of it); _DONE once past the trailers."""
        pieces: list[bytes] = []
        if self._buffer:
            data, self._buffer = self._buffer + data, b""
        pos, size = 0, len(data)
        while pos < size:
            mode = self._mode
            if mode == _CHUNK_DATA:
                take = min(self._left, size - pos)
                pieces.append(data if take == size else data[pos:pos + take])
                pos += take
                self._left -= take
                if not self._left:
                    self._mode = _CHUNK_END
            elif mode == _CHUNK_END:
                if size - pos < 2:
                    self._buffer = data[pos:]
                    break
                if data[pos:pos + 2] != b"\r\n":
                    raise BadResponseError("chunk data not followed by CRLF")
                pos += 2
                self._mode = _CHUNK_LINE
            elif mode == _DONE:
                self._persistent = False  # bytes after the end
                break
            else:
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    if size - pos > MAX_HEAD:
                        raise BadResponseError("chunk line too long")
                    self._buffer = data[pos:]
                    break
                line = data[pos:eol]
                pos = eol + 2
                if mode == _TRAILER:
                    if not line:
                        self._mode = _DONE
                elif not _CHUNK_SIZE.fullmatch(line):
                    raise BadResponseError("malformed chunk size")
                else:
                    self._left = int(line.split(b";", 1)[0], 16)
                    self._mode = _CHUNK_DATA if self._left else _TRAILER
        return pieces

    def _deliver(self, data: bytes) -> None:
        response = self._response
        if response is not None:
            response._push(data, False)

    def _finished(self, data: bytes) -> None:
        """The response is complete: keep the connection or close it, then tell."""
        response, self._response = self._response, None
        self._mode = _DONE
        self._buffer = b""
        if self._readPaused:
            self._readPaused = False
            if not self._closed:
                self.transport.resumeProducing()  # type: ignore[union-attr]
        sender, self._sender = self._sender, None
        if sender is not None:
            sender.stopProducing()  # answered before the body was all sent
            self.abort()
        elif self._persistent and not self._closed:
            self.reused = True
            self._arm(self._pool.idleTimeout)
            self._pool._release(self)
        else:
            self.close()
        if response is not None:
            response._push(data, True)

    def _broken(self, error: BaseException) -> None:
        """The body cannot be trusted any more (cut short, malformed, timed out)."""
        response, self._response = self._response, None
        self._mode = _DONE
        self.abort()
        if response is not None:
            response._push(b"", True, error)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._connected = False
        self._closed = True
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
        self._pool._forget(self)
        request, self._request = self._request, None
        if request is not None:
            # Our own aborts detach the request first: this loss came from outside.
            if self.reused and not self._received and not request.retried \
                    and request.resendable:
                request.retryFresh()  # a stale keep-alive connection
            else:
                request.fail(_neverAnswered(reason))
        if self._response is not None:
            if self._mode == _UNTIL_CLOSE:
                self._finished(b"")
            else:
                self._broken(_cutShort(reason))
        self._gone()

    def _gone(self) -> None:
        self._pool.closing.discard(self)
        if not self.gone.called:
            self.gone.callback(None)

    # -- flow control, timeouts, closing ---------------------------------------------

    def pauseReading(self) -> None:
        if not self._readPaused and not self._closed:
            self._readPaused = True
            self.transport.pauseProducing()  # type: ignore[union-attr]

    def resumeReading(self) -> None:
        if self._readPaused and not self._closed:
            self._readPaused = False
            self.transport.resumeProducing()  # type: ignore[union-attr]
            self._arm(self._limit)

    def _arm(self, limit: float) -> None:
        """Time out after C{limit} seconds without progress (one timer, moved lazily)."""
        self._limit = limit
        deadline = self._deadline = self._seconds() + limit
        timer = self._timer
        if timer is None:
            self._timer = self._callLater(limit, self._expire)
        elif timer.getTime() > deadline:
            timer.reset(limit)

    def _expire(self) -> None:
        self._timer = None
        if self._closed or (self._readPaused and self._sender is None):
            return  # resumeReading arms it again
        left = self._deadline - self._seconds()
        if left > 0:
            self._timer = self._callLater(left, self._expire)
            return
        request, response = self._request, self._response
        if request is None and response is None:
            self.close()  # idle for too long
            return
        what = "response" if request is not None else "data"
        error = TimeoutError(f"no {what} from the upstream for {self._limit:g} s")
        self.abort()
        if request is not None:
            request.fail(error)
        if response is not None:
            response._push(b"", True, error)

    def close(self) -> None:
        """Close gracefully: an idle connection, or one without keep-alive."""
        self._closeWith(False)

    def abort(self) -> None:
        """Drop the connection now (or stop connecting)."""
        self._closeWith(True)

    def _closeWith(self, abort: bool) -> None:
        self._request = self._response = None
        self._mode = _DONE
        self._pool._forget(self)
        if self._closed:
            return
        self._pool.closing.add(self)
        transport: Any = self.transport
        if transport is not None:
            if abort:
                transport.abortConnection()
            else:
                transport.loseConnection()
        elif self.cancelConnect is not None:
            cancel, self.cancelConnect = self.cancelConnect, None
            try:
                cancel()
            except Exception:
                pass  # connected or failed meanwhile: nothing to stop


@implementer(IConsumer, IPushProducer)
class _BodySender:
    """Streams a request body to the upstream: the consumer of the client's body and the
    producer the upstream transport pauses."""

    def __init__(self, connection: _Connection, stream: Any, writeTimeout: float) -> None:
        self._connection = connection
        self._transport: Any = connection.transport
        self._stream = stream
        self._chunked = stream.length is UNKNOWN_LENGTH
        self._seconds = connection._seconds
        self._writeTimeout = writeTimeout
        self._stopped = False

    def start(self) -> None:
        self._transport.registerProducer(self, True)
        self._stream.startProducing(self).addCallbacks(self._done, self._failed)

    def write(self, data: bytes) -> None:
        if self._stopped or not data:
            return
        if self._chunked:
            self._transport.write(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            self._transport.write(data)
        # Progress: the connection's timer (already set) looks at the deadline lazily.
        self._connection._deadline = self._seconds() + self._writeTimeout

    def _done(self, _: object) -> None:
        if self._stopped:
            return
        if self._chunked:
            self._transport.write(b"0\r\n\r\n")
        self._transport.unregisterProducer()
        self._stopped = True
        self._connection.bodySent()

    def _failed(self, reason: Failure) -> None:
        if not self._stopped:
            self._stopped = True
            self._connection.bodyFailed(reason)

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        pass  # the stream is our producer already

    def unregisterProducer(self) -> None:
        pass

    def pauseProducing(self) -> None:
        if not self._stopped:
            self._stream.pauseProducing()

    def resumeProducing(self) -> None:
        if not self._stopped:
            self._connection.wrote()
            self._stream.resumeProducing()

    def stopProducing(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._stream.stopProducing()


# -- the wire format ------------------------------------------------------------------


def requestHead(method: bytes, target: bytes, headers: Headers, *framing: bytes) -> bytes:
    """The request line, C{headers} and any C{framing} fields, as sent upstream."""
    lines = [method + b" " + target + b" HTTP/1.1"]
    for name, values in headers.getAllRawHeaders():
        for value in values:
            lines.append(name + b": " + value)
    lines.extend(framing)
    lines.append(b"\r\n")
    return b"\r\n".join(lines)


def _formatHead(method: bytes, target: bytes, headers: Headers, body: bytes | Any | None
                ) -> bytes:
    """The request line and headers, with the framing of C{body}."""
    if body is None:
        if method in _BODY_METHODS:
            return requestHead(method, target, headers, b"Content-Length: 0")
        return requestHead(method, target, headers)
    if isinstance(body, bytes):
        return requestHead(method, target, headers, b"Content-Length: %d" % len(body))
    if body.length is UNKNOWN_LENGTH:
        return requestHead(method, target, headers, b"Transfer-Encoding: chunked")
    return requestHead(method, target, headers, b"Content-Length: %d" % body.length)


def _headEnd(data: bytes, start: int) -> tuple[int, int]:
    """Where the head starting at C{start} ends (before its blank line), and where
    what follows begins; (-1, -1) while incomplete. Bare LF line ends are accepted."""
    end = data.find(b"\r\n\r\n", start)
    if end >= 0 and data.find(b"\n\n", start, end) < 0:
        return end, end + 4
    lf = data.find(b"\n\n", start)
    crlf = data.find(b"\n\r\n", start)
    if lf < 0 and crlf < 0:
        return -1, -1
    if crlf < 0 or 0 <= lf < crlf:
        return lf, lf + 2
    return crlf, crlf + 3


def _parseHead(head: bytes, headOnly: bool
               ) -> tuple[int, Headers, int | None, bool]:
    """Status, end-to-end headers, body length (bytes, L{_CHUNKED}, or None: until
    close) and keep-alive, of one response head."""
    crlf = head.count(b"\r\n")
    if head.count(b"\r") != crlf or b"\x00" in head:
        raise BadResponseError("bare CR or NUL in the response head")
    if head.count(b"\n") == crlf:
        lines = head.split(b"\r\n")
    else:  # bare LF line ends (RFC 9112 section 2.2 lets a recipient accept them)
        lines = head.replace(b"\r\n", b"\n").split(b"\n")
    version, _, rest = lines[0].partition(b" ")
    code = rest[:3]
    if version not in (b"HTTP/1.1", b"HTTP/1.0") or len(code) != 3 or not code.isdigit() \
            or rest[3:4] not in (b"", b" ") or code[0:1] == b"0":
        raise BadResponseError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    status = int(code)
    headers = Headers()
    raw = headers._rawHeaders  # names canonical from the cache, values checked above
    cached = CANONICAL_NAMES.get
    lengths: list[bytes] = []
    codings: list[bytes] = []
    tokens: list[bytes] = []
    name = b""
    try:
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name:
                raise BadResponseError(f"malformed header line: {line[:80]!r}")
            key = cached(name) or encodeName(name)
            value = value.strip(b" \t")
            framing = _FRAMING_KEYS.get(key)
            if framing is not None:
                if framing == b"content-length":
                    lengths.append(value)
                elif framing == b"transfer-encoding":
                    codings.append(value)
                    continue
                elif framing == b"connection":
                    folded = value.lower()
                    if folded in (b"keep-alive", b"close"):
                        tokens.append(folded)
                    else:
                        tokens.extend([t.strip(b" \t") for t in folded.split(b",")])
                    continue
                else:
                    continue
            values = raw.get(key)
            if values is None:
                raw[key] = [value]
            else:
                values.append(value)
    except ValueError as e:  # not a token (space before the colon, a fold...)
        raise BadResponseError(f"malformed header name: {name[:80]!r}") from e
    length: int | None = None
    if codings:
        if lengths:
            raise BadResponseError("both Content-Length and Transfer-Encoding")
        if b",".join(codings).strip(b" \t").lower() != b"chunked":
            raise BadResponseError("a transfer coding other than chunked")
        length = _CHUNKED
    elif len(lengths) == 1 and lengths[0].isdigit():
        length = int(lengths[0])
    elif lengths:
        distinct = {v.strip(b" \t") for value in lengths for v in value.split(b",")}
        if len(distinct) != 1:
            raise BadResponseError("differing Content-Length values")
        value = distinct.pop()
        if not _DIGITS.fullmatch(value):
            raise BadResponseError("malformed Content-Length")
        length = int(value)
        if len(lengths) > 1 or b"," in lengths[0]:
            raw[b"Content-Length"] = [value]
    if version == b"HTTP/1.1":
        persistent = b"close" not in tokens
    else:
        persistent = b"keep-alive" in tokens
    for token in tokens:
        if token not in _FRAMING and token != b"close":
            try:
                headers.removeHeader(token)  # a field the Connection header names
            except ValueError:
                pass  # not a field name
    if headOnly or status in (204, 304) or status < 200:
        length = 0
    elif length is None:
        persistent = False  # its body ends when the connection does
    return status, headers, length, persistent


def _neverAnswered(reason: Failure) -> BaseException:
    if reason.check(ConnectionDone):
        return ConnectionLost("the upstream closed the connection without a response")
    return reason.value


def _cutShort(reason: Failure) -> BaseException:
    if reason.check(ConnectionDone, ConnectionLost) is not None:
        return ConnectionLost("the upstream closed the connection before the body ended")
    return reason.value
