"""Ambiguous request framing is refused with 400 and never forwarded."""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Site

from kongtls.testing import inThread, routeTo
from tests.support import GatewayTestCase

SMUGGLING = {
    "content-length and transfer-encoding":
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "two content-lengths": b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "content-length list": b"Content-Length: 5, 6\r\n\r\nhello!",
    "malformed chunk size": b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    "signed chunk size": b"Transfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n",
    "unknown coding": b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "space before colon": b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    "negative length": b"Content-Length: -1\r\n\r\n",
}


class Counting(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    def render(self, request: Any) -> bytes:
        self.seen += 1
        return b"ok"


def send(port: int, head: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: localhost\r\n" + head)
        return s.recv(4096).split(b"\r\n", 1)[0]


class FramingTests(GatewayTestCase):
    async def test_smuggling_shapes_are_refused(self) -> None:
        counting = Counting()
        upstream = reactor.listenTCP(0, Site(counting), interface="127.0.0.1")
        self.addCleanup(upstream.stopListening)
        gw = await self.gateway(document=routeTo(upstream.getHost().port))
        for name, head in SMUGGLING.items():
            status = await inThread(send, gw.httpPort, head)
            self.assertEqual(status, b"HTTP/1.1 400 Bad Request", name)
        self.assertEqual(counting.seen, 0)
        ok = await inThread(send, gw.httpPort, b"Content-Length: 5\r\n\r\nhello")
        self.assertEqual(ok, b"HTTP/1.1 200 OK")
        self.assertEqual(counting.seen, 1)
