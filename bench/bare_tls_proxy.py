"""A bare Twisted TLS reverse proxy: the ceiling ``bench/proxy_bench.py`` reports beside
kongtls and nginx for keep-alive requests/s.

As little as proxying a GET over keep-alive can be on Twisted: the same TLS set-up as
``bare_tls_server.py`` (a client certificate asked for, any accepted, no session reuse),
the request head found and sent on to one upstream over pooled connections, the
response (Content-Length framed) written back whole. No phases, no header rewriting, no
routing, no request bodies, no error handling: a measure of what Twisted's TLS and
reactor cost per request, not a proxy to use.

    python bench/bare_tls_proxy.py --port 8443 --cert server.crt --key server.key \\
        --upstream 8080
"""

from __future__ import annotations

import argparse
import sys
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.protocol import ClientFactory, Factory, Protocol

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from bare_tls_server import RequestClientCertificate, serverOptions, serveTLS  # noqa: E402


class UpstreamConnection(Protocol):
    """One pooled upstream connection: a response at a time, by Content-Length."""

    def __init__(self, pool: deque[UpstreamConnection]) -> None:
        self._pool = pool
        self._buffer = b""
        self.answer: Callable[[bytes], None] | None = None

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        length = 0
        for line in self._buffer[:end].split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        size = end + 4 + length
        if len(self._buffer) < size:
            return
        response, self._buffer = self._buffer[:size], self._buffer[size:]
        answer, self.answer = self.answer, None
        self._pool.append(self)
        if answer is not None:
            answer(response)

    def connectionLost(self, reason: Any = None) -> None:
        if self in self._pool:
            self._pool.remove(self)


class DownstreamConnection(Protocol):
    """Reads a request head, has a pooled upstream connection answer it."""

    def __init__(self, proxy: BareProxy) -> None:
        self._proxy = proxy
        self._buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while (end := self._buffer.find(b"\r\n\r\n")) >= 0:
            head, self._buffer = self._buffer[:end + 4], self._buffer[end + 4:]
            self._proxy.forward(head, self._answer)

    def _answer(self, response: bytes) -> None:
        if self.transport is not None:
            self.transport.write(response)


class BareProxy(Factory):
    def __init__(self, reactor: Any, upstreamPort: int) -> None:
        self._reactor = reactor
        self._port = upstreamPort
        self._pool: deque[UpstreamConnection] = deque()

    def buildProtocol(self, addr: Any) -> DownstreamConnection:
        return DownstreamConnection(self)

    def forward(self, head: bytes, answer: Callable[[bytes], None]) -> None:
        def send(connection: UpstreamConnection) -> None:
            connection.answer = answer
            assert connection.transport is not None
            connection.transport.write(head)

        if self._pool:
            send(self._pool.popleft())
        else:
            self._reactor.connectTCP("127.0.0.1", self._port, _Connect(self._pool, send))


class _Connect(ClientFactory):
    """A new upstream connection, which then carries one request."""

    def __init__(self, pool: deque[UpstreamConnection],
                 send: Callable[[UpstreamConnection], None]) -> None:
        self._pool = pool
        self._send = send

    def buildProtocol(self, addr: Any) -> UpstreamConnection:
        return _Sending(self._pool, self._send)


class _Sending(UpstreamConnection):
    def __init__(self, pool: deque[UpstreamConnection],
                 send: Callable[[UpstreamConnection], None]) -> None:
        super().__init__(pool)
        self._sendFirst = send

    def connectionMade(self) -> None:
        self._sendFirst(self)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True, help="PEM chain, leaf first")
    parser.add_argument("--key", required=True, help="PEM private key")
    parser.add_argument("--upstream", type=int, required=True, help="upstream port")
    args = parser.parse_args(argv)
    from twisted.internet import reactor

    serveTLS(reactor, args.port, RequestClientCertificate(serverOptions(args.cert, args.key)),
             BareProxy(reactor, args.upstream), "bare TLS proxy")


if __name__ == "__main__":
    main()
