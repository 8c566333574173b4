"""The gateway's HTTP/1.1 server: a lean channel under the PhaseTracker.

twisted.web's C{HTTPChannel} and C{Request} do much per request that a proxy has no use
for (a line receiver, a request object with sessions and resources, address lookups,
timers); profiled under keep-alive load they cost as much as the proxying. This channel
parses the request head in one pass, refuses ambiguous framing (request smuggling)
before anything is forwarded, buffers small bodies and streams large ones, and writes
the response as the PhaseTracker produces it. A connection that negotiated ``h2`` by ALPN
is handed to twisted.web's HTTP/2 stack instead.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from email.utils import formatdate
from io import BytesIO
from typing import Any

from twisted.internet.interfaces import (
    IAddress,
    IHalfCloseableProtocol,
    IProtocolFactory,
    ISSLTransport,
    ITCPTransport,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import RESPONSES
from twisted.web.http_headers import Headers
from zope.interface import implementer

from kongtls.request_body import STREAM_OVER, RequestBodyStream
from kongtls.web import fieldAdder

log = Logger(namespace="kongtls.http1")

#: A request head (request line and fields) longer than this is refused with 431.
MAX_HEAD = 65536
#: Keep-alive connections idle this long are closed (nginx's ``keepalive_timeout``).
IDLE_TIMEOUT = 75.0
#: A request head not whole this long after its first byte, or a buffered body that
#: makes no progress for this long, is answered 408 and the connection closed.
HEAD_TIMEOUT = 60.0
#: A connection still open this long after the gateway began closing it is aborted (a
#: TLS client that never answers close_notify, one that never reads its response's end).
LINGER_TIMEOUT = 30.0
#: A client that takes nothing of its response for this long is cut off (nginx's
#: ``send_timeout``): it would hold its connection and the upstream's forever.
SEND_TIMEOUT = 60.0
#: Pipelined bytes held while a request is in flight before the client is paused.
PIPELINE_HIGH_WATER = 65536

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_DIGITS = re.compile(rb"[0-9]{1,18}\Z")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,15})[ \t]*(;.*)?\Z")
_BAD_CHARACTER = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
#: An absolute-form request target (RFC 9112 section 3.2.2): scheme, authority, rest.
_ABSOLUTE = re.compile(rb"https?://([^/?#@]+)([/?].*)?\Z", re.IGNORECASE | re.DOTALL)
_NO_BODY = frozenset({204, 304})
#: Set by this channel, never copied from the PhaseTracker's response fields.
_FRAMING_FIELDS = frozenset({b"Connection", b"Transfer-Encoding", b"Keep-Alive"})


class MalformedRequestError(Exception):
    """The client's bytes are not a request this gateway will forward."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class _Date:
    """The ``Date`` field, formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def now(self) -> bytes:
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._value = formatdate(second, usegmt=True).encode("ascii")
        return self._value


_date = _Date()
_statusLines: dict[int, bytes] = {}


def statusLine(code: int) -> bytes:
    """C{HTTP/1.1 <code> <reason>}, made once per code."""
    line = _statusLines.get(code)
    if line is None:
        line = b"HTTP/1.1 %d %s" % (code, RESPONSES.get(code, b"Unknown"))
        if 100 <= code <= 999:
            _statusLines[code] = line
    return line


def parseHead(head: bytes) -> tuple[bytes, bytes, bytes, Headers]:
    """The request line and fields of one head (without its blank line)."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _TOKEN.match(parts[0]) or not parts[1]:
        raise MalformedRequestError("malformed request line")
    method, target, version = parts
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise MalformedRequestError("unsupported HTTP version", 505 if version.startswith(b"HTTP/")
                         else 400)
    if _BAD_CHARACTER.search(head) or head.count(b"\r") != len(lines) - 1 \
            or head.count(b"\n") != len(lines) - 1:
        raise MalformedRequestError("control character or bare CR/LF in the request head")
    headers = Headers()
    add = fieldAdder(headers)
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name:
            raise MalformedRequestError("malformed header field")
        try:
            # Refuses a name with whitespace before the colon, or an obsolete fold.
            add(name, value.strip(b" \t"))
        except ValueError as e:
            raise MalformedRequestError("malformed header field") from e
    return method, target, version, headers


def bodyFraming(version: bytes, headers: Headers) -> int | None:
    """The body's length, or None for chunked; refuses every ambiguous framing."""
    raw = headers._rawHeaders  # canonical names: no lookup through the name cache
    codings = raw.get(b"Transfer-Encoding")
    lengths = raw.get(b"Content-Length")
    if codings is not None:
        if lengths is not None:
            raise MalformedRequestError("both Content-Length and Transfer-Encoding")
        if version != b"HTTP/1.1" or len(codings) != 1 or codings[0].lower() != b"chunked":
            raise MalformedRequestError("unsupported Transfer-Encoding")
        return None
    if lengths is None:
        return 0
    if len(lengths) != 1 or not _DIGITS.match(lengths[0]):
        raise MalformedRequestError("invalid Content-Length")
    return int(lengths[0])


class ChunkedBody:
    """Decodes a chunked request body strictly (RFC 9112 section 7.1)."""

    MAX_LINE = 4096

    def __init__(self, deliver: Callable[[bytes], None]) -> None:
        self._deliver = deliver
        self._remaining = 0
        self._state = "size"  # size, data, data-end, trailer
        self._pending = b""
        self.done = False

    def feed(self, data: bytes) -> bytes:
        """Consume what belongs to the body; returns what follows it."""
        while data and not self.done:
            state = self._state
            if state == "data":
                piece, data = data[:self._remaining], data[self._remaining:]
                self._remaining -= len(piece)
                self._deliver(piece)
                if self._remaining == 0:
                    self._state = "data-end"
                continue
            end = data.find(b"\r\n")
            if end < 0:
                if len(data) > self.MAX_LINE:
                    raise MalformedRequestError("chunk line too long")
                self._pending = data
                return b""
            line, data = data[:end], data[end + 2:]
            if state == "size":
                match = _CHUNK_SIZE.match(line)
                if match is None:
                    raise MalformedRequestError("malformed chunk size")
                self._remaining = int(match.group(1), 16)
                self._state = "data" if self._remaining else "trailer"
            elif state == "data-end":
                if line:
                    raise MalformedRequestError("chunk data longer than its size")
                self._state = "size"
            elif not line:  # trailer section: fields are read and dropped
                self.done = True
        return data

    def take(self, data: bytes) -> bytes:
        """L{feed} with what an earlier call left incomplete."""
        if self._pending:
            data, self._pending = self._pending + data, b""
        return self.feed(data)


class DownstreamRequest:
    """One HTTP/1.1 request: what the PDK, the proxy and the serializer read, and the
    response the PhaseTracker writes (the parts of twisted.web's C{Request} they use)."""

    defaultContentType: bytes | None = None

    def __init__(self, channel: HTTP1Channel, method: bytes, uri: bytes, version: bytes,
                 headers: Headers) -> None:
        self.channel = channel
        self.method = method
        self.uri = uri
        self.path = uri.partition(b"?")[0]
        self.clientproto = version
        self.requestHeaders = headers
        self.responseHeaders = Headers()
        self.code = 200
        self.content: BytesIO = _EMPTY
        self.bodyStream: RequestBodyStream | None = None
        self.persistent = _keepAlive(version, headers)
        self.startedWriting = False
        self.finished = False
        self._disconnected = False
        self._chunked = False
        self._noBody = method == b"HEAD"
        self._goneCallbacks: list[Callable[[], object]] = []
        #: Since when the client has taken none of the response (its transport full).
        self.sendStalledSince: float | None = None

    # -- the request -------------------------------------------------------------------

    def getHeader(self, name: Any) -> Any:
        values = self.requestHeaders.getRawHeaders(name)
        return values[-1] if values else None

    def getHost(self) -> IAddress:
        return self.channel.hostAddress()

    def getClientAddress(self) -> IAddress:
        return self.channel.peerAddress()

    def isSecure(self) -> bool:
        return self.channel.secure

    # -- the response ------------------------------------------------------------------

    def setResponseCode(self, code: int) -> None:
        self.code = code

    def setHeader(self, name: bytes | str, value: bytes | str) -> None:
        self.responseHeaders.setRawHeaders(name, [value])

    def _head(self) -> bytes:
        """The status line and fields; sent with the first body bytes (one TLS record
        and one send for a small response)."""
        self.startedWriting = True
        code = self.code
        headers = self.responseHeaders
        raw = headers._rawHeaders
        if code in _NO_BODY or code < 200:
            self._noBody = True
            raw.pop(b"Content-Length", None)
        elif b"Content-Length" not in raw:
            if self._noBody:
                pass  # HEAD: the upstream's framing fields (if any) pass as they are
            elif self.clientproto == b"HTTP/1.1":
                self._chunked = True
            else:
                self.persistent = False  # HTTP/1.0: the end of the body is the close
        if self.persistent and self.channel.bodyArriving():
            self.persistent = False  # answered early: the rest of the body is not read
        lines = [statusLine(code)]
        if b"Date" not in raw:
            lines.append(b"Date: " + _date.now())
        for name, values in raw.items():
            if name in _FRAMING_FIELDS:
                continue
            for value in values:
                lines.append(name + b": " + value)
        if self._chunked:
            lines.append(b"Transfer-Encoding: chunked")
        if not self.persistent:
            lines.append(b"Connection: close")
        elif self.clientproto == b"HTTP/1.0":
            lines.append(b"Connection: keep-alive")
        lines.append(b"\r\n")
        return b"\r\n".join(lines)

    def write(self, data: bytes) -> None:
        if self.finished or self._disconnected:
            return
        head = b"" if self.startedWriting else self._head()
        if not data or self._noBody:
            if head:
                self.channel.writeOut(head)
            return
        if self._chunked:
            self.channel.writeOut(b"%s%x\r\n%s\r\n" % (head, len(data), data))
        elif head:
            self.channel.writeOut(head + data)
        else:
            self.channel.writeOut(data)

    def finish(self) -> None:
        if self.finished or self._disconnected:
            return
        head = b"" if self.startedWriting else self._head()
        if self._chunked:
            self.channel.writeOut(head + b"0\r\n\r\n")
        elif head:
            self.channel.writeOut(head)
        self.finished = True
        self._goneCallbacks = []
        self.channel.requestDone(self)

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.channel.transport.registerProducer(producer, streaming)  # type: ignore

    def unregisterProducer(self) -> None:
        transport: Any = self.channel.transport
        if transport is not None:
            transport.unregisterProducer()

    def whenGone(self, onGone: Callable[[], object]) -> None:
        """Call C{onGone} if the client leaves before the response is finished."""
        self._goneCallbacks.append(onGone)

    def connectionLost(self, reason: Failure) -> None:
        self._disconnected = True
        callbacks, self._goneCallbacks = self._goneCallbacks, []
        for onGone in callbacks:
            onGone()
        stream = self.bodyStream
        if stream is not None and not stream.complete:
            stream.clientLost(reason)


_EMPTY = BytesIO()
#: The reason reading pauses while pipelined bytes wait (see L{HTTP1Channel.pauseReading}).
_PIPELINED = "pipelined"


def _keepAlive(version: bytes, headers: Headers) -> bool:
    tokens = headers._rawHeaders.get(b"Connection")
    if tokens is None:
        return version == b"HTTP/1.1"
    joined = b",".join(tokens).lower()
    options = {t.strip() for t in joined.split(b",")}
    if b"close" in options:
        return False
    return version == b"HTTP/1.1" or b"keep-alive" in options


@implementer(IHalfCloseableProtocol)
class HTTP1Channel(Protocol):
    """One client connection speaking HTTP/1.1 (or 1.0), one request at a time."""

    def __init__(self, factory: GatewayHTTPFactory) -> None:
        self._factory = factory
        self._buffer = b""
        self._request: DownstreamRequest | None = None
        self._body: BytesIO | None = None
        self._bodyLeft = 0
        self._chunked: ChunkedBody | None = None
        self._stream: RequestBodyStream | None = None
        self._parsing = False
        self._pausedFor: set[object] = set()
        self._checkedALPN = False
        self._upgraded: Protocol | None = None
        self._closing = False
        self._closingSince = 0.0
        self._host: IAddress | None = None
        self._peer: IAddress | None = None
        self._peerIP: bytes | None = None
        self.secure = False
        #: When the wait the idle sweep times began: for the next request (the connection
        #: made, or the last response done), a head's first byte, a buffered body's last.
        self.lastActive = 0.0

    def connectionMade(self) -> None:
        self.secure = ISSLTransport.providedBy(self.transport)
        self.lastActive = time.monotonic()
        self._factory.channels.add(self)

    def hostAddress(self) -> IAddress:
        if self._host is None:
            assert self.transport is not None
            self._host = self.transport.getHost()
        return self._host

    def peerAddress(self) -> IAddress:
        if self._peer is None:
            assert self.transport is not None
            self._peer = self.transport.getPeer()
        return self._peer

    def peerIP(self) -> bytes:
        """The client's address as bytes (X-Forwarded-For, X-Real-IP), found once."""
        if self._peerIP is None:
            self._peerIP = str(getattr(self.peerAddress(), "host", "")).encode("ascii")
        return self._peerIP

    # -- bytes in ----------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._upgraded is not None:
            self._upgraded.dataReceived(data)
            return
        if self._closing:
            return  # a TLS connection reads until close_notify: none of it is kept
        if not self._checkedALPN:
            self._checkedALPN = True
            if getattr(self.transport, "negotiatedProtocol", None) == b"h2":
                self._handOverToHTTP2(data)
                return
        if self._request is None:
            if not self._buffer:
                self.lastActive = time.monotonic()  # a head begins: not reset until whole
        elif self._body is not None:
            self.lastActive = time.monotonic()  # a buffered body advances
        self._buffer += data
        if not self._parsing:
            self._parse()

    def _parse(self) -> None:
        self._parsing = True
        try:
            while self._buffer and not self._closing and self._upgraded is None:
                if self._request is None:
                    if not self._readHead():
                        break
                elif self.bodyArriving():
                    self._readBody()
                else:
                    # A request is in flight and its body is in: hold pipelined bytes.
                    if len(self._buffer) > PIPELINE_HIGH_WATER:
                        self.pauseReading(_PIPELINED)
                    break
        except MalformedRequestError as e:
            self._refuse(e)
        finally:
            self._parsing = False

    def bodyArriving(self) -> bool:
        """The request in flight still has body bytes to come."""
        return self._body is not None or self._chunked is not None or (
            self._stream is not None and not self._stream.complete)

    def _readHead(self) -> bool:
        buffer = self._buffer
        while buffer.startswith(b"\r\n"):  # RFC 9112 2.2: ignore empty lines before
            buffer = buffer[2:]
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            self._buffer = buffer
            if len(buffer) > MAX_HEAD:
                raise MalformedRequestError("request head too large", 431)
            return False
        if end > MAX_HEAD:
            raise MalformedRequestError("request head too large", 431)
        head, self._buffer = buffer[:end], buffer[end + 4:]
        method, target, version, headers = parseHead(head)
        if not (target.startswith(b"/") or target == b"*"):
            absolute = _ABSOLUTE.match(target)
            if absolute is None:
                raise MalformedRequestError("malformed request target")
            # The target's authority is the host; a Host field is ignored (RFC 9112 3.2.2).
            authority, rest = absolute.groups()
            headers.setRawHeaders(b"host", [authority])
            target = rest if rest and rest.startswith(b"/") else b"/" + (rest or b"")
        hosts = headers._rawHeaders.get(b"Host")
        if (hosts is None and version == b"HTTP/1.1") or (hosts is not None and
                                                           len(hosts) != 1):
            raise MalformedRequestError("a request needs exactly one Host field")
        length = bodyFraming(version, headers)
        request = DownstreamRequest(self, method, target, version, headers)
        self._request = request
        if length == 0:
            self._dispatch(request)
            return True
        expect = headers._rawHeaders.get(b"Expect")
        if expect and expect[0].lower() == b"100-continue" and version == b"HTTP/1.1":
            self.writeOut(b"HTTP/1.1 100 Continue\r\n\r\n")
        if length is not None and length <= STREAM_OVER:
            self._body = BytesIO()
            self._bodyLeft = length
            self.lastActive = time.monotonic()
            return True
        self._stream = request.bodyStream = RequestBodyStream(self, length)
        if length is None:
            self._chunked = ChunkedBody(self._stream.feed)
        else:
            self._bodyLeft = length
        self._dispatch(request)
        return True

    def _readBody(self) -> None:
        data, self._buffer = self._buffer, b""
        if self._chunked is not None:
            rest = self._chunked.take(data)
            if self._chunked.done:
                self._chunked = None
                assert self._stream is not None
                self._stream.finish()
            self._buffer = rest
            return
        piece, rest = data[:self._bodyLeft], data[self._bodyLeft:]
        self._bodyLeft -= len(piece)
        self._buffer = rest
        if self._body is not None:
            self._body.write(piece)
            if self._bodyLeft == 0:
                body, self._body = self._body, None
                body.seek(0)
                request = self._request
                assert request is not None
                request.content = body
                self._dispatch(request)
        else:
            assert self._stream is not None
            if piece:
                self._stream.feed(piece)
            if self._bodyLeft == 0:
                self._stream.finish()

    def _dispatch(self, request: DownstreamRequest) -> None:
        try:
            self._factory.serve(request)
        except Exception:
            log.failure("request failed")
            if not request.startedWriting:
                self._refuse(MalformedRequestError("internal error", 500))

    def _refuse(self, error: MalformedRequestError) -> None:
        """Answer a request that cannot be forwarded, then close."""
        request = self._request
        self._closing = True
        self._buffer = b""
        if request is not None and request.startedWriting:
            # The response has begun: the client must see a cut, not a whole.
            self._abort()
            return
        if request is not None:
            request.connectionLost(Failure(error))  # the PhaseTracker stops writing
        status = error.status
        body = b'{"message":"%s"}' % RESPONSES.get(status, b"Bad Request")
        self.writeOut(b"HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Type: application/json; "
                      b"charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                      % (status, RESPONSES.get(status, b"Bad Request"), _date.now(),
                         len(body), body))
        self._close(linger=True)  # its body, or the rest of its head, may be coming

    # -- bytes out ---------------------------------------------------------------------

    def writeOut(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not self._upgraded:
            transport.write(data)

    def requestDone(self, request: DownstreamRequest) -> None:
        """The response is written: close, or read the next request."""
        if request is not self._request:
            return
        self.lastActive = time.monotonic()
        if not request.persistent or self.bodyArriving():
            # A body still arriving must not be read as the next request.
            if self._stream is not None and not self._stream.complete:
                self._stream.discarding = True
                self._stream.stopProducing()
            self._close()
            return
        self._request = None
        self._stream = None
        # Whatever paused reading for this request (its pipelined successors, or a body
        # nobody consumed, as when a plugin answered) is over.
        self._resumeAll()
        if self._buffer and not self._parsing:
            self._parse()

    # -- flow control ------------------------------------------------------------------

    def pauseReading(self, reason: object) -> None:
        """Stop reading the client for C{reason} (pipelined bytes held, or a streamed
        body the upstream is slow to take) until L{resumeReading} with the same reason;
        reading resumes once no reason is left."""
        if not self._pausedFor:
            transport: Any = self.transport
            transport.pauseProducing()
        self._pausedFor.add(reason)

    def resumeReading(self, reason: object) -> None:
        if reason in self._pausedFor:
            self._pausedFor.discard(reason)
            if not self._pausedFor:
                transport: Any = self.transport
                transport.resumeProducing()

    def _resumeAll(self) -> None:
        if self._pausedFor:
            self._pausedFor.clear()
            transport: Any = self.transport
            transport.resumeProducing()

    def _abort(self) -> None:
        transport: Any = self.transport
        abort = getattr(transport, "abortConnection", None) or transport.loseConnection
        abort()

    def closeWhenDone(self) -> None:
        """The gateway is stopping: close now if idle, else after this response."""
        if self._closing:
            return
        if self._request is None:
            self._close()
        else:
            self._request.persistent = False

    def _close(self, linger: bool = False) -> None:
        """Close once what is written is sent. Nothing more is kept from the client, but
        reading resumes: TLS waits for the client's close_notify, and plain TCP with
        request bytes still to come lingers, as nginx's lingering close does: a socket
        closed with unread bytes (or bytes that arrive after) answers with a reset, and
        a reset can make the client's stack drop the response it has not read yet. So
        it sends a FIN after the response and reads and drops until the client closes
        (or the sweep's linger timeout aborts). C{linger}: even with no bytes known to
        be coming (a refused request, whose body's framing may never have been read)."""
        linger = not self.secure and (linger or self.bodyArriving() or bool(self._buffer))
        self._closing = True
        self._closingSince = time.monotonic()
        self._buffer = b""
        self._resumeAll()
        transport: Any = self.transport
        assert transport is not None
        if linger and ITCPTransport.providedBy(transport):
            transport.loseWriteConnection()
        else:
            transport.loseConnection()

    def readConnectionLost(self) -> None:
        """The client's FIN, on plain TCP. While lingering it is the close waited for:
        what is still queued of the response goes out first. Otherwise the client has
        gone, as before half-closes were taken (nginx too takes it for an abort): the
        request in flight is cancelled and nothing more is sent."""
        transport: Any = self.transport
        if self._closing:
            transport.loseConnection()
        else:
            transport.abortConnection()

    def writeConnectionLost(self) -> None:
        """The FIN of a lingering close is sent; reading goes on until the client's."""

    def sweep(self, now: float) -> None:
        """Close the connection if it waited too long: for a request (keep-alive), for
        the rest of a head, or for more of a buffered body (both answered 408); abort
        it if it is still closing after the linger timeout."""
        factory = self._factory
        if self._closing:
            if now - self._closingSince > factory.lingerTimeout:
                self._abort()
            return
        if self._request is None:
            if not self._buffer:
                if now - self.lastActive > factory.idleTimeout:
                    self._close()
            elif now - self.lastActive > factory.headTimeout:
                self._refuse(MalformedRequestError("request head timed out", 408))
        elif self._body is not None and now - self.lastActive > factory.headTimeout:
            self._refuse(MalformedRequestError("request body timed out", 408))
        elif (stalled := self._request.sendStalledSince) is not None \
                and now - stalled > factory.sendTimeout:
            self._abort()  # the response has begun: a cut, not an error response

    # -- switching protocols -----------------------------------------------------------

    def switchProtocol(self, protocol: Protocol) -> bytes:
        """Give the connection to C{protocol} (an upgraded tunnel); returns the bytes
        that arrived after the request head. The idle sweep forgets the connection:
        it carries no more requests."""
        self._upgraded = protocol
        self._request = None
        self._factory.forget(self)
        transport: Any = self.transport
        self._resumeAll()
        pending, self._buffer = self._buffer, b""
        protocol.makeConnection(transport)
        return pending

    def _handOverToHTTP2(self, data: bytes) -> None:
        transport: Any = self.transport
        self._factory.forget(self)
        h2 = self._factory.http2.buildProtocol(self.peerAddress())
        assert h2 is not None
        transport.wrappedProtocol = h2  # the TLS layer now feeds twisted.web's HTTP/2
        aggregate = getattr(transport, "aggregateWrites", None)
        if aggregate is not None:
            aggregate(True)  # it writes frame by frame
        h2.makeConnection(transport)
        h2.dataReceived(data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._factory.forget(self)
        if self._upgraded is not None:
            self._upgraded.connectionLost(reason)  # type: ignore[arg-type]
            return
        request = self._request
        if request is not None and not request.finished:
            request.connectionLost(reason or Failure(ConnectionError("client gone")))


class GatewayHTTPFactory(Factory):
    """Makes an L{HTTP1Channel} per connection; each request goes to C{serve}.

    @ivar http2: the factory for connections that negotiated ``h2`` (twisted.web's).
    """

    noisy = False

    def __init__(self, serve: Callable[[DownstreamRequest], None], http2: IProtocolFactory,
                 clock: Any, idleTimeout: float = IDLE_TIMEOUT,
                 headTimeout: float = HEAD_TIMEOUT,
                 lingerTimeout: float = LINGER_TIMEOUT,
                 sendTimeout: float = SEND_TIMEOUT) -> None:
        self.serve = serve
        self.http2 = http2
        self.channels: set[HTTP1Channel] = set()
        self._clock = clock
        self.idleTimeout = idleTimeout
        self.headTimeout = headTimeout
        self.lingerTimeout = lingerTimeout
        self.sendTimeout = sendTimeout
        self._sweeper: LoopingCall | None = None
        self._listening = 0

    def buildProtocol(self, addr: IAddress | None) -> HTTP1Channel:
        return HTTP1Channel(self)

    def startFactory(self) -> None:
        self._listening += 1
        if self._sweeper is None:
            # One periodic sweep for all connections costs less than a timer per request.
            self._sweeper = LoopingCall(self.closeIdle)
            self._sweeper.clock = self._clock
            self._sweeper.start(min(self.idleTimeout, self.headTimeout, self.lingerTimeout,
                                    self.sendTimeout) / 4,
                                now=False)

    def stopFactory(self) -> None:
        self._listening -= 1
        self._sweepWhileNeeded()

    def forget(self, channel: HTTP1Channel) -> None:
        """C{channel} closed or no longer carries requests: the sweep leaves it."""
        self.channels.discard(channel)
        self._sweepWhileNeeded()

    def _sweepWhileNeeded(self) -> None:
        # Connections outlive the listening ports (a linger, a TLS close waiting for
        # close_notify, a stalled response): they are swept until the last one goes.
        if self._listening <= 0 and not self.channels and self._sweeper is not None:
            self._sweeper.stop()
            self._sweeper = None

    def closeAll(self) -> None:
        """Close every connection once its response (if any) is written: the gateway
        stops, and keep-alive connections would wait for requests it no longer wants."""
        for channel in list(self.channels):
            channel.closeWhenDone()

    def closeIdle(self) -> None:
        """Close connections that waited past their timeout (see L{HTTP1Channel.sweep})."""
        now = time.monotonic()
        for channel in list(self.channels):
            try:
                channel.sweep(now)
            except Exception:  # one broken connection must not stop the sweeps
                log.failure("idle sweep failed for a connection")
