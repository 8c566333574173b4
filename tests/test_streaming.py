"""Bodies stream with backpressure: a client that stops reading stops the upstream."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import deferLater
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from zope.interface import implementer

from kongtls.testing import ClientConnection, clientContext, inThread, routeTo
from tests.support import GatewayTestCase

CHUNK = b"x" * 65536
TOTAL = 256 * 1024 * 1024


@implementer(IPushProducer)
class Firehose:
    """Writes CHUNKs as fast as the transport takes them, up to TOTAL bytes."""

    def __init__(self, request: Any) -> None:
        self.request = request
        self.sent = 0
        self.paused = False
        self.stopped = False
        request.registerProducer(self, True)
        self._pump()

    def _pump(self) -> None:
        while not self.paused and not self.stopped and self.sent < TOTAL:
            self.request.write(CHUNK)
            self.sent += len(CHUNK)
            if self.sent % (4 * 1024 * 1024) == 0:
                reactor.callLater(0, self._pump)
                return
        if self.sent >= TOTAL and not self.stopped:
            self.stopped = True
            self.request.unregisterProducer()
            self.request.finish()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        if self.paused:
            self.paused = False
            reactor.callLater(0, self._pump)

    def stopProducing(self) -> None:
        self.stopped = True


class FirehoseResource(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.hoses: list[Firehose] = []

    def render_GET(self, request: Any) -> Any:
        request.setHeader(b"content-length", str(TOTAL).encode())
        self.hoses.append(Firehose(request))
        return NOT_DONE_YET


class BackpressureTests(GatewayTestCase):
    async def test_slow_client_pauses_the_upstream(self) -> None:
        resource = FirehoseResource()
        upstream = reactor.listenTCP(0, Site(resource), interface="127.0.0.1")
        self.addCleanup(upstream.stopListening)
        gw = await self.gateway(document=routeTo(upstream.getHost().port))

        def startAndStall(port: int) -> ClientConnection:
            conn = ClientConnection(port, clientContext(self.pki))
            conn.sock.sendall(b"GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n")
            conn.sock.recv(1024)  # the response has started; now read nothing
            return conn

        conn = await inThread(startAndStall, gw.httpsPort)
        self.addCleanup(inThread, conn.sock.close)
        await deferLater(reactor, 1.5, lambda: None)
        sent = resource.hoses[0].sent
        self.assertTrue(resource.hoses[0].paused)
        # Socket buffers and a few queued chunks, not the whole 256 MiB body.
        self.assertLess(sent, 48 * 1024 * 1024, sent)

        def drain(conn: ClientConnection) -> int:
            total = 0
            while total < TOTAL:
                data = conn.sock.recv(1 << 20)
                if not data:
                    break
                total += len(data)
            return total

        received = await inThread(drain, conn)
        self.assertGreaterEqual(received, TOTAL - 1024)
