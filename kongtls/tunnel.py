"""WebSocket (and other HTTP/1.1 ``Upgrade``) tunnels: after the upstream answers 101,
bytes flow both ways untouched, with backpressure each way."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers

from kongtls.http1 import statusLine
from kongtls.upstream_client import MAX_HEAD


def isUpgrade(request: Any) -> bool:
    """An HTTP/1.1 request asking to switch protocols (``Connection: upgrade``)."""
    if (request.clientproto != b"HTTP/1.1"
            or b"Upgrade" not in request.requestHeaders._rawHeaders):
        return False
    tokens = b",".join(request.requestHeaders.getRawHeaders(b"connection", [])).lower()
    return b"upgrade" in [t.strip() for t in tokens.split(b",")]


def parseHead(head: bytes) -> tuple[int, Headers]:
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise ValueError("not an HTTP/1.x response head")
    headers = Headers()
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if not sep:
            raise ValueError("malformed header line")
        headers.addRawHeader(name.strip(), value.strip())
    return int(parts[1]), headers


def formatHead(status: int, headers: Headers) -> bytes:
    # An upstream that refuses the upgrade answers with its own status; its bytes still
    # flow as they come, and the connection ends when the upstream's does.
    lines = [statusLine(status)]
    for name, values in headers.getAllRawHeaders():
        lines.extend(name + b": " + v for v in values)
    return b"\r\n".join(lines) + b"\r\n\r\n"


class UpstreamTunnel(Protocol):
    """The upstream side: sends the request head, waits for the response head, then
    relays raw bytes to the client."""

    def __init__(self, requestHead: bytes) -> None:
        self._requestHead = requestHead
        self.head: Deferred[bytes] = Deferred()
        self.closed: Deferred[None] = Deferred()
        self._buffer = b""
        self._peer: Any = None

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self._requestHead)

    def dataReceived(self, data: bytes) -> None:
        if self._peer is not None:
            self._peer.write(data)
            return
        self._buffer += data
        if self.head.called:
            return
        end = self._buffer.find(b"\r\n\r\n")
        if end >= 0:
            head, self._buffer = self._buffer[:end + 4], self._buffer[end + 4:]
            self.head.callback(head)
        elif len(self._buffer) > MAX_HEAD:
            assert self.transport is not None
            self.transport.loseConnection()

    def splice(self, downstream: Any) -> None:
        """From now on, everything from the upstream goes to C{downstream}."""
        self._peer = downstream
        if self._buffer:
            downstream.write(self._buffer)
            self._buffer = b""
        # Each side pauses the other when its buffers fill up.
        downstream.registerProducer(self.transport, True)
        assert self.transport is not None
        self.transport.registerProducer(downstream, True)  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure | None = None) -> None:
        if not self.head.called:
            self.head.errback(reason or Failure(ConnectionError("upstream closed")))
        if self._peer is not None:
            self._peer.loseConnection()
        self.closed.callback(None)


class DownstreamTunnel(Protocol):
    """The client side, installed in place of the HTTP channel after the 101."""

    def __init__(self, upstream: UpstreamTunnel) -> None:
        self._upstream = upstream

    def dataReceived(self, data: bytes) -> None:
        transport = self._upstream.transport
        if transport is not None:
            transport.write(data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        transport = self._upstream.transport
        if transport is not None:
            transport.loseConnection()


async def openTunnel(reactor: Any, host: str, port: int, tlsCreator: Any,
                     timeout: float, requestHead: bytes) -> UpstreamTunnel:
    endpoint: Any = HostnameEndpoint(reactor, host, port, timeout=timeout)
    if tlsCreator is not None:
        endpoint = wrapClientTLS(tlsCreator, endpoint)
    tunnel = UpstreamTunnel(requestHead)
    await connectProtocol(endpoint, tunnel)
    return tunnel


def switchDownstream(request: Any, head: bytes, upstream: UpstreamTunnel) -> None:
    """Write the 101 head to the client and hand its connection to the tunnel."""
    channel = request.channel
    transport = channel.transport
    transport.write(head)
    downstream = DownstreamTunnel(upstream)
    pending = channel.switchProtocol(downstream)
    upstream.splice(transport)
    if pending:
        downstream.dataReceived(pending)
