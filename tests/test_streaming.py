"""Bodies stream with backpressure: a client that stops reading stops the upstream."""

from __future__ import annotations

import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
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
            while total < TOTAL - 1024:  # the first recv took the head and a little body
                data = conn.sock.recv(1 << 20)
                if not data:
                    break
                total += len(data)
            return total

        received = await inThread(drain, conn)
        self.assertGreaterEqual(received, TOTAL - 1024)

    async def test_client_taking_nothing_is_cut_off_after_the_send_timeout(self) -> None:
        resource = FirehoseResource()
        upstream = reactor.listenTCP(0, Site(resource), interface="127.0.0.1")
        self.addCleanup(upstream.stopListening)
        gw = await self.gateway(document=routeTo(upstream.getHost().port))
        channels = gw.gateway.http1
        channels.sendTimeout = 0.5

        def startAndStall(port: int) -> ClientConnection:
            conn = ClientConnection(port, clientContext(self.pki))
            conn.sock.sendall(b"GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n")
            conn.sock.recv(1024)
            return conn

        conn = await inThread(startAndStall, gw.httpsPort)
        self.addCleanup(inThread, conn.sock.close)
        await deferLater(reactor, 0.3, lambda: None)
        channels.closeIdle()
        self.assertFalse(resource.hoses[0].stopped)  # stalled, but not for long yet
        await deferLater(reactor, 1.0, lambda: None)
        channels.closeIdle()
        await deferLater(reactor, 0.5, lambda: None)
        self.assertTrue(resource.hoses[0].stopped)  # the upstream request went too

        def drain(conn: ClientConnection) -> int:
            total = 0
            try:
                while data := conn.sock.recv(1 << 20):
                    total += len(data)
            except OSError:
                pass
            return total

        received = await inThread(drain, conn)
        self.assertLess(received, TOTAL // 2)  # cut off: the connection ended early


class SlowSink(Protocol):
    """A raw upstream that reads a request body only when told to, then answers 200
    with the number of body bytes it read."""

    instances: list[SlowSink] = []

    def __init__(self) -> None:
        self.head = b""
        self.body = 0
        self.length: int | None = None
        SlowSink.instances.append(self)

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.pauseProducing()  # read nothing until the test says so

    def dataReceived(self, data: bytes) -> None:
        if self.length is None:
            self.head += data
            if b"\r\n\r\n" not in self.head:
                return
            head, rest = self.head.split(b"\r\n\r\n", 1)
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    self.length = int(value)
            assert self.length is not None, head
            data = rest
        self.body += len(data)
        if self.body >= self.length:
            answer = str(self.body).encode()
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                                 % (len(answer), answer))


class UploadStreamingTests(GatewayTestCase):
    async def test_slow_upstream_pauses_the_client(self) -> None:
        import threading

        from twisted.internet.protocol import Factory

        SlowSink.instances.clear()
        upstream = reactor.listenTCP(0, Factory.forProtocol(SlowSink), interface="127.0.0.1")
        self.addCleanup(upstream.stopListening)
        gw = await self.gateway(document=routeTo(upstream.getHost().port))
        size = 128 * 1024 * 1024
        sent = [0]

        def upload(port: int) -> bytes:
            conn = ClientConnection(port, clientContext(self.pki))
            conn.sock.sendall(b"POST /up HTTP/1.1\r\nHost: localhost\r\n"
                              b"Content-Length: %d\r\n\r\n" % size)
            block = b"u" * 65536
            while sent[0] < size:
                conn.sock.sendall(block)
                sent[0] += len(block)
            import http.client

            answer = http.client.HTTPResponse(conn.sock)  # type: ignore[arg-type]
            answer.begin()
            reply = b"%d %s" % (answer.status, answer.read())
            conn.sock.close()
            return reply

        done = inThread(upload, gw.httpsPort)
        await deferLater(reactor, 1.5, lambda: None)
        self.assertEqual(len(SlowSink.instances), 1)
        # The upstream reads nothing, so the gateway stops reading the client.
        self.assertLess(sent[0], 48 * 1024 * 1024, sent[0])
        SlowSink.instances[0].transport.resumeProducing()  # type: ignore[union-attr]
        reply = await done
        self.assertEqual(reply, b"200 %d" % size)
        del threading

    async def test_small_bodies_are_still_buffered(self) -> None:
        seen: list[Any] = []

        class Peek:
            def access(self, kong, conf):  # type: ignore[no-untyped-def]
                seen.append(kong.request.get_raw_body())

        gw = await self.gateway([{"name": "peek"}], {"peek": Peek()})
        conn = await inThread(ClientConnection, gw.httpsPort, clientContext(self.pki))
        self.addCleanup(inThread, conn.close)
        small = await inThread(conn.request, "/", "POST", None, b"s" * 1000)
        big = await inThread(conn.request, "/", "POST", None, b"b" * (2 << 20))
        self.assertEqual(small.json()["body_size"], 1000)
        self.assertEqual(big.json()["body_size"], 2 << 20)
        self.assertEqual(seen, [b"s" * 1000, None])

    async def test_early_answer_to_a_streaming_upload_closes_the_connection(self) -> None:
        from tests.plugins import Exiter

        gw = await self.gateway([{"name": "exiter", "config": {"status": 403}}],
                                {"exiter": Exiter()})

        def upload(port: int) -> tuple[int, bytes]:
            import http.client

            conn = ClientConnection(port, clientContext(self.pki))
            conn.sock.sendall(b"POST / HTTP/1.1\r\nHost: localhost\r\n"
                              b"Content-Length: %d\r\n\r\n" % (8 << 20) + b"x" * 65536)
            answer = http.client.HTTPResponse(conn.sock)  # type: ignore[arg-type]
            answer.begin()
            status = answer.status
            answer.read()
            rest = b""
            try:
                rest = conn.sock.recv(100)  # the gateway closes: b"" (or a reset)
            except OSError:
                pass
            conn.sock.close()
            return status, rest

        status, rest = await inThread(upload, gw.httpsPort)
        self.assertEqual((status, rest), (403, b""))
        again = await inThread(lambda: ClientConnection(gw.httpsPort, clientContext(
            self.pki)).request("/"))
        self.assertEqual(again.status, 403)


class CutShort(Protocol):
    """An upstream that promises 1 MiB and dies after 100 kB."""

    def dataReceived(self, data: bytes) -> None:
        if b"\r\n\r\n" in data and self.transport is not None:
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n"
                                 + b"c" * 100000)
            reactor.callLater(0.05, self.transport.abortConnection)


class Waiting(Protocol):
    """An upstream that reads the request and never answers; notes when it is dropped."""

    lost: list[bool] = []

    def connectionLost(self, reason: Any = None) -> None:
        Waiting.lost.append(True)


class FailureTests(GatewayTestCase):
    async def test_upstream_dying_mid_body_closes_the_client(self) -> None:
        import http.client

        from twisted.internet.protocol import Factory

        upstream = reactor.listenTCP(0, Factory.forProtocol(CutShort), interface="127.0.0.1")
        self.addCleanup(upstream.stopListening)
        gw = await self.gateway(document=routeTo(upstream.getHost().port))

        def get(port: int) -> str:
            conn = ClientConnection(port, clientContext(self.pki))
            conn.sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            answer = http.client.HTTPResponse(conn.sock)  # type: ignore[arg-type]
            answer.begin()
            try:
                answer.read()
            except http.client.IncompleteRead as e:
                return f"incomplete after {len(e.partial)}"
            finally:
                conn.sock.close()
            return "complete"

        self.assertEqual(await inThread(get, gw.httpsPort), "incomplete after 100000")

    async def test_client_going_away_cancels_the_upstream_request(self) -> None:
        from twisted.internet.protocol import Factory

        Waiting.lost.clear()
        upstream = reactor.listenTCP(0, Factory.forProtocol(Waiting), interface="127.0.0.1")
        self.addCleanup(upstream.stopListening)
        gw = await self.gateway(document=routeTo(upstream.getHost().port))

        def leave(port: int) -> None:
            conn = ClientConnection(port, clientContext(self.pki))
            conn.sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            time.sleep(0.3)  # the upstream has the request by now
            conn.sock.close()

        await inThread(leave, gw.httpsPort)
        for _ in range(50):
            if Waiting.lost:
                break
            await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(Waiting.lost, [True])
