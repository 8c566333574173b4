"""The upstream HTTP/1.1 client: keep-alive reuse, stale connections, response framing,
pools kept apart by TLS identity, and its timeouts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cryptography.x509.oid import NameOID
from twisted.internet import reactor
from twisted.internet import ssl as tssl
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, TimeoutError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.http_headers import Headers

from kongtls.testing import ClientConnection, clientContext, fetchMany, inThread, routeTo
from kongtls.upstream_client import BadResponseError, Timeouts, UpstreamPool
from tests.support import GatewayTestCase

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

#: (the upstream's side of the connection, request head, body) -> the bytes to answer,
#: or None to close the connection without an answer.
Answer = Callable[["Scripted", bytes, bytes], bytes | None]


class Scripted(Protocol):
    """A raw upstream that reads requests (head and Content-Length body) and answers
    each as its server's C{answer} says."""

    def __init__(self, server: ScriptedUpstream) -> None:
        self.server = server
        self.number = len(server.connections)  # the how-manyth connection
        self.buffer = b""
        self.served = 0  # requests answered on it

    def connectionMade(self) -> None:
        self.server.connections.append(self)

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, rest = self.buffer.split(b"\r\n\r\n", 1)
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(rest) < length:
                return
            body, self.buffer = rest[:length], rest[length:]
            self.server.requests.append((self.number, head, body))
            assert self.transport is not None
            answer = self.server.answer(self, head, body)
            self.served += 1
            if answer is None:
                self.transport.loseConnection()
                return
            self.transport.write(answer)
            if self.server.closeAfter:
                self.transport.loseConnection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.server.lost += 1


class ScriptedUpstream(Factory):
    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.connections: list[Scripted] = []
        self.requests: list[tuple[int, bytes, bytes]] = []
        self.lost = 0
        self.closeAfter = False

    def buildProtocol(self, addr: Any) -> Scripted:
        return Scripted(self)


def listen(test: TestCase, answer: Answer, tls: Any = None) -> ScriptedUpstream:
    upstream = ScriptedUpstream(answer)
    if tls is None:
        port = reactor.listenTCP(0, upstream, interface="127.0.0.1")
    else:
        port = reactor.listenSSL(0, upstream, tls, interface="127.0.0.1")
    test.addCleanup(port.stopListening)
    upstream.port = port.getHost().port  # type: ignore[attr-defined]
    return upstream


def always(response: bytes) -> Answer:
    return lambda connection, head, body: response


class ReuseTests(GatewayTestCase):
    async def test_sequential_requests_share_one_connection(self) -> None:
        upstream = listen(self, always(OK))
        gw = await self.gateway(document=routeTo(upstream.port))  # type: ignore[attr-defined]
        responses = await fetchMany(gw.httpsPort, ["/1", "/2", "/3", "/4"], pki=self.pki)
        self.assertEqual([(r.status, r.body) for r in responses], [(200, b"ok")] * 4)
        self.assertEqual(len(upstream.connections), 1)
        self.assertEqual([r[1].split(b" ")[1] for r in upstream.requests],
                         [b"/1", b"/2", b"/3", b"/4"])

    async def test_connection_close_is_not_reused(self) -> None:
        upstream = listen(self, always(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"))
        gw = await self.gateway(document=routeTo(upstream.port))  # type: ignore[attr-defined]
        responses = await fetchMany(gw.httpsPort, ["/", "/"], pki=self.pki)
        self.assertEqual([r.body for r in responses], [b"ok", b"ok"])
        self.assertEqual(len(upstream.connections), 2)

    async def test_http10_keeps_alive_only_when_asked(self) -> None:
        plain = listen(self, always(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"))
        kept = listen(self, always(b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\n"
                                   b"Content-Length: 2\r\n\r\nok"))
        for upstream, connections in ((plain, 2), (kept, 1)):
            gw = await self.gateway(document=routeTo(upstream.port))  # type: ignore
            responses = await fetchMany(gw.httpsPort, ["/", "/"], pki=self.pki)
            self.assertEqual([r.body for r in responses], [b"ok", b"ok"])
            self.assertEqual(len(upstream.connections), connections)

    async def test_upstream_hop_by_hop_headers_are_not_passed_on(self) -> None:
        upstream = listen(self, always(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n"
            b"Keep-Alive: timeout=5\r\nX-End: 2\r\nContent-Length: 2\r\n\r\nok"))
        gw = await self.gateway(document=routeTo(upstream.port))  # type: ignore[attr-defined]
        [response] = await fetchMany(gw.httpsPort, ["/"], pki=self.pki)
        self.assertEqual(response.headers["x-end"], "2")
        self.assertEqual(response.headers["content-length"], "2")
        self.assertNotIn("x-hop", response.headers)
        self.assertNotIn("keep-alive", response.headers)

    async def test_request_framing(self) -> None:
        upstream = listen(self, always(OK))
        gw = await self.gateway(document=routeTo(upstream.port))  # type: ignore[attr-defined]
        conn = await inThread(ClientConnection, gw.httpsPort, clientContext(self.pki))
        self.addCleanup(inThread, conn.close)
        await inThread(conn.request, "/get")
        await inThread(conn.request, "/post", "POST")
        await inThread(conn.request, "/put", "PUT", None, b"12345")
        heads = [head.lower().split(b"\r\n") for _, head, _ in upstream.requests]
        self.assertNotIn(b"content-length: 0", heads[0])
        self.assertIn(b"content-length: 0", heads[1])
        self.assertIn(b"content-length: 5", heads[2])
        self.assertEqual(upstream.requests[2][2], b"12345")
        self.assertEqual(len(upstream.connections), 1)


class StaleConnectionTests(GatewayTestCase):
    async def test_closed_on_reuse_is_retried_on_a_new_connection(self) -> None:
        # The first connection answers once, then drops the next request unanswered:
        # what a keep-alive timeout racing our reuse looks like.
        def answer(connection: Scripted, head: bytes, body: bytes) -> bytes | None:
            if connection.number == 0 and connection.served == 1:
                return None
            return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)

        upstream = listen(self, answer)
        gw = await self.gateway(document=routeTo(upstream.port))  # type: ignore[attr-defined]
        conn = await inThread(ClientConnection, gw.httpsPort, clientContext(self.pki))
        self.addCleanup(inThread, conn.close)
        first = await inThread(conn.request, "/", "POST", None, b"one")
        second = await inThread(conn.request, "/", "POST", None, b"two")
        self.assertEqual((first.status, first.body), (200, b"one"))
        self.assertEqual((second.status, second.body), (200, b"two"))
        self.assertEqual([(c, b) for c, _, b in upstream.requests],
                         [(0, b"one"), (0, b"two"), (1, b"two")])

    async def test_idle_connection_closed_by_the_upstream_is_dropped(self) -> None:
        def answer(connection: Scripted, head: bytes, body: bytes) -> bytes:
            assert connection.transport is not None
            reactor.callLater(0.05, connection.transport.loseConnection)
            return OK

        upstream = listen(self, answer)
        gw = await self.gateway(document=routeTo(upstream.port))  # type: ignore[attr-defined]
        for _ in range(3):
            [response] = await fetchMany(gw.httpsPort, ["/"], pki=self.pki)
            self.assertEqual(response.status, 200)
            await deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(len(upstream.connections), 3)
        self.assertEqual(len(upstream.requests), 3)  # each went once: nothing was stale

    async def test_a_fresh_connection_closing_is_not_retried(self) -> None:
        upstream = listen(self, lambda connection, head, body: None)
        gw = await self.gateway(document=routeTo(upstream.port))  # type: ignore[attr-defined]
        [response] = await fetchMany(gw.httpsPort, ["/"], pki=self.pki)
        self.assertEqual(response.status, 502)
        self.assertEqual(len(upstream.requests), 1)

    async def test_a_started_stream_is_not_sent_again(self) -> None:
        def answer(connection: Scripted, head: bytes, body: bytes) -> bytes | None:
            return OK if connection.served == 0 else None

        upstream = listen(self, answer)
        gw = await self.gateway(document=routeTo(upstream.port))  # type: ignore[attr-defined]
        conn = await inThread(ClientConnection, gw.httpsPort, clientContext(self.pki))
        self.addCleanup(inThread, conn.close)
        first = await inThread(conn.request, "/")
        big = await inThread(conn.request, "/", "POST", None, b"b" * (2 << 20))
        self.assertEqual((first.status, big.status), (200, 502))
        self.assertEqual(len(upstream.connections), 1)


class ResponseFramingTests(GatewayTestCase):
    async def fetchVia(self, answer: Answer, paths: list[str], closeAfter: bool = False
                       ) -> tuple[list[Any], ScriptedUpstream]:
        upstream = listen(self, answer)
        upstream.closeAfter = closeAfter
        gw = await self.gateway(document=routeTo(upstream.port))  # type: ignore[attr-defined]
        return await fetchMany(gw.httpsPort, paths, pki=self.pki), upstream

    async def test_chunked_body_is_decoded(self) -> None:
        chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"5;name=value\r\nhello\r\n1\r\n \r\nA \r\n0123456789\r\n"
                   b"0\r\nX-Trailer: t\r\n\r\n")
        responses, upstream = await self.fetchVia(always(chunked), ["/", "/"])
        self.assertEqual([(r.status, r.body) for r in responses],
                         [(200, b"hello 0123456789")] * 2)
        self.assertNotIn("x-trailer", responses[0].headers)
        self.assertEqual(len(upstream.connections), 1)  # a chunked end keeps it alive

    async def test_close_delimited_body(self) -> None:
        responses, upstream = await self.fetchVia(always(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end"), ["/", "/"],
            closeAfter=True)
        self.assertEqual([(r.status, r.body) for r in responses],
                         [(200, b"until the end")] * 2)
        self.assertEqual(len(upstream.connections), 2)

    async def test_no_body_for_head_204_and_304(self) -> None:
        # Each promises a body it does not send; the next answer must still be read
        # from the same connection as its own.
        def answer(connection: Scripted, head: bytes, body: bytes) -> bytes:
            if head.startswith(b"HEAD"):
                return b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"
            if b"/204" in head:
                return b"HTTP/1.1 204 No Content\r\n\r\n"
            if b"/304" in head:
                return b"HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n"
            return OK

        upstream = listen(self, answer)
        gw = await self.gateway(document=routeTo(upstream.port))  # type: ignore[attr-defined]
        conn = await inThread(ClientConnection, gw.httpsPort, clientContext(self.pki))
        self.addCleanup(inThread, conn.close)
        head = await inThread(conn.request, "/", "HEAD")
        after = [await inThread(conn.request, path) for path in ("/", "/204", "/", "/304", "/")]
        self.assertEqual((head.status, head.body, head.headers["content-length"]),
                         (200, b"", "100"))
        self.assertEqual([(r.status, r.body) for r in after],
                         [(200, b"ok"), (204, b""), (200, b"ok"), (304, b""), (200, b"ok")])
        self.assertEqual(len(upstream.connections), 1)

    async def test_interim_responses_are_skipped(self) -> None:
        responses, _ = await self.fetchVia(always(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n"
            b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ndone"), ["/"])
        self.assertEqual((responses[0].status, responses[0].body), (201, b"done"))
        self.assertNotIn("link", responses[0].headers)

    async def test_bare_lf_heads_are_read(self) -> None:
        responses, _ = await self.fetchVia(always(
            b"HTTP/1.1 200 OK\nX-Old: yes\nContent-Length: 2\n\nok"), ["/"])
        self.assertEqual((responses[0].body, responses[0].headers["x-old"]), (b"ok", "yes"))

    async def test_malformed_or_ambiguous_framing_is_502(self) -> None:
        bad = {
            "content-length and transfer-encoding":
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"2\r\nok\r\n0\r\n\r\n",
            "two content-lengths":
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!",
            "content-length list": b"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nok!",
            "signed content-length": b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok",
            "unknown coding": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                              b"0\r\n\r\n",
            "malformed chunk size": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                    b"+2\r\nok\r\n0\r\n\r\n",
            "space before colon": b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok",
            "folded header": b"HTTP/1.1 200 OK\r\nX-A: 1\r\n  more\r\nContent-Length: 2"
                             b"\r\n\r\nok",
            "no colon": b"HTTP/1.1 200 OK\r\nnonsense\r\nContent-Length: 2\r\n\r\nok",
            "bare CR": b"HTTP/1.1 200 OK\r\nX-A: 1\rX-B: 2\r\nContent-Length: 2\r\n\r\nok",
            "not HTTP": b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
            "short status": b"HTTP/1.1 20 OK\r\nContent-Length: 2\r\n\r\nok",
            "HTTP/2 status line": b"HTTP/2 200\r\nContent-Length: 2\r\n\r\nok",
            "unasked 101": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
        }
        for name, response in bad.items():
            responses, upstream = await self.fetchVia(always(response), ["/"])
            self.assertEqual(responses[0].status, 502, name)
            self.assertEqual(len(upstream.requests), 1, name)  # a bad answer: no retry

    async def test_identical_content_lengths_are_one(self) -> None:
        responses, _ = await self.fetchVia(always(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok"), ["/"])
        self.assertEqual((responses[0].status, responses[0].body), (200, b"ok"))
        self.assertEqual(responses[0].headers["content-length"], "2")


class Identify(Protocol):
    """A TLS upstream answering, keep-alive, with the client certificate it was shown."""

    def __init__(self, server: IdentifyingUpstream) -> None:
        self.server = server

    def connectionMade(self) -> None:
        self.server.connections += 1

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        peer = self.transport.getPeerCertificate()  # type: ignore[attr-defined]
        who = b"none" if peer is None else peer.to_cryptography().subject \
            .get_attributes_for_oid(NameOID.COMMON_NAME)[0].value.encode()
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(who), who))


class IdentifyingUpstream(Factory):
    def __init__(self) -> None:
        self.connections = 0

    def buildProtocol(self, addr: Any) -> Identify:
        return Identify(self)


class TLSTests(GatewayTestCase):
    def tlsUpstream(self) -> tuple[IdentifyingUpstream, int]:
        """A TLS upstream that asks for (and does not require) a client certificate."""
        server = self.pki.server.keyedChain()
        root = tssl.Certificate.loadPEM(self.pki.root.cert_pem.bytes()).original
        options = tssl.CertificateOptions(
            privateKey=server.key, certificate=server.chain[0], verify=True,
            requireCertificate=False, caCerts=[root])
        upstream = IdentifyingUpstream()
        port = reactor.listenSSL(0, upstream, options, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return upstream, port.getHost().port

    def document(self, *services: dict[str, Any]) -> dict[str, Any]:
        client = self.pki.client
        return {
            "_format_version": "3.0",
            "ca_certificates": [{"id": "root", "cert": self.pki.caPEM(self.pki.root)}],
            "certificates": [{"id": "client", "cert": client.fullChainPEM,
                              "key": client.keyPEM.decode()}],
            "services": [{"ca_certificates": ["root"], **s} for s in services]}

    async def test_client_certificates_do_not_share_connections(self) -> None:
        upstream, port = self.tlsUpstream()
        url = f"https://localhost:{port}"
        gw = await self.gateway(document=self.document(
            {"name": "with", "url": url, "client_certificate": {"id": "client"},
             "routes": [{"name": "with", "paths": ["/with"]}]},
            {"name": "without", "url": url,
             "routes": [{"name": "without", "paths": ["/without"]}]}))
        responses = await fetchMany(gw.httpsPort, ["/with", "/without", "/with", "/without"],
                                    pki=self.pki)
        self.assertEqual([r.body for r in responses],
                         [b"kongtls test client", b"none"] * 2)
        self.assertEqual(upstream.connections, 2)  # one per identity, each reused

    async def test_ip_literal_host_is_verified_and_kept(self) -> None:
        upstream, port = self.tlsUpstream()
        gw = await self.gateway(document=self.document(
            {"name": "ip", "url": f"https://127.0.0.1:{port}",
             "routes": [{"name": "ip", "paths": ["/"]}]}))
        responses = await fetchMany(gw.httpsPort, ["/", "/"], pki=self.pki)
        self.assertEqual([(r.status, r.body) for r in responses], [(200, b"none")] * 2)
        self.assertEqual(upstream.connections, 1)


# -- the client alone, on a memory reactor ----------------------------------------------


#: Seconds to connect, between writes, between reads.
TIMEOUTS = Timeouts(1, 2, 3)


class ClientTests(TestCase):
    """Byte-level cases: what arrives in pieces, and the timeouts, with a fake clock."""

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.pool = UpstreamPool(self.reactor, idleTimeout=30)

    def send(self, method: bytes = b"GET", timeouts: Timeouts = TIMEOUTS
             ) -> tuple[Any, Any, StringTransport]:
        call = self.pool.request("127.0.0.1", 80, None, method, b"/x",
                                 Headers({b"host": [b"h"]}), None, timeouts)
        _, _, factory, timeout, _ = self.reactor.tcpClients[-1]
        self.assertEqual(timeout, timeouts.connect)
        transport = StringTransport()
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(transport)
        return call, protocol, transport

    def body(self, response: Any) -> bytes:
        result: bytes = self.successResultOf(Deferred.fromCoroutine(response.readAll()))
        return result

    def test_connect_timeout(self) -> None:
        call = self.pool.request("127.0.0.1", 80, None, b"GET", b"/",
                                 Headers({b"host": [b"h"]}), None, TIMEOUTS)
        _, _, factory, timeout, _ = self.reactor.tcpClients[-1]
        self.assertEqual(timeout, TIMEOUTS.connect)
        factory.clientConnectionFailed(None, Failure(TimeoutError()))
        self.failureResultOf(call.response, TimeoutError)

    def test_request_is_one_write(self) -> None:
        call, protocol, transport = self.send(b"POST")
        self.assertEqual(transport.value(),
                         b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n")

    def test_chunked_body_arriving_byte_by_byte(self) -> None:
        call, protocol, transport = self.send()
        wire = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nabc\r\n10;x=y\r\n0123456789abcdef\r\n0\r\nT: 1\r\n\r\n")
        for i in range(len(wire)):
            protocol.dataReceived(wire[i:i + 1])
        response = self.successResultOf(call.response)
        self.assertEqual(self.body(response), b"abc0123456789abcdef")
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.pool._idle[("http", "127.0.0.1", 80, None)], [protocol])

    def test_body_chunks_are_the_bytes_received(self) -> None:
        call, protocol, transport = self.send()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
        response = self.successResultOf(call.response)
        for piece in (b"0123", b"45", b"6789"):
            protocol.dataReceived(piece)
        chunks = [self.successResultOf(Deferred.fromCoroutine(response.nextChunk()))
                  for _ in range(4)]
        self.assertEqual(chunks, [b"0123", b"45", b"6789", None])

    def test_slow_reader_pauses_the_upstream(self) -> None:
        call, protocol, transport = self.send()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        response = self.successResultOf(call.response)
        for _ in range(response.HIGH_WATER):
            protocol.dataReceived(b"x")
        self.assertEqual(transport.producerState, "paused")
        for _ in range(response.HIGH_WATER - 1):
            self.successResultOf(Deferred.fromCoroutine(response.nextChunk()))
        self.assertEqual(transport.producerState, "producing")

    def test_no_response_within_the_read_timeout(self) -> None:
        call, protocol, transport = self.send()
        self.reactor.advance(2.9)
        self.assertNoResult(call.response)
        self.reactor.advance(0.2)
        self.failureResultOf(call.response, TimeoutError)
        self.assertTrue(transport.disconnecting)

    def test_read_timeout_counts_from_the_last_byte(self) -> None:
        call, protocol, transport = self.send()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n")
        response = self.successResultOf(call.response)
        reading = Deferred.fromCoroutine(response.readAll())
        for _ in range(3):
            self.reactor.advance(2)
            protocol.dataReceived(b"x")  # 6 s in all, never 3 s without data
        self.reactor.advance(2.9)
        self.assertNoResult(reading)
        self.reactor.advance(0.2)
        self.failureResultOf(reading, TimeoutError)

    def test_idle_connection_closes_after_the_idle_timeout(self) -> None:
        call, protocol, transport = self.send()
        protocol.dataReceived(OK)
        self.assertEqual(self.body(self.successResultOf(call.response)), b"ok")
        self.reactor.advance(29)
        self.assertFalse(transport.disconnecting)
        self.reactor.advance(2)
        self.assertTrue(transport.disconnecting)

    def test_cut_short_body_raises(self) -> None:
        call, protocol, transport = self.send()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        response = self.successResultOf(call.response)
        protocol.connectionLost(Failure(ConnectionDone()))
        reading = Deferred.fromCoroutine(response.readAll())
        self.failureResultOf(reading, Exception)

    def test_malformed_chunk_after_the_head_fails_the_body(self) -> None:
        call, protocol, transport = self.send()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        response = self.successResultOf(call.response)
        protocol.dataReceived(b"2\r\nokXX")
        self.failureResultOf(Deferred.fromCoroutine(response.readAll()), BadResponseError)
        self.assertTrue(transport.disconnecting)

    def test_discarding_an_unfinished_body_closes(self) -> None:
        call, protocol, transport = self.send()
        protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        self.successResultOf(call.response).discard()
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.pool._idle.get(("http", "127.0.0.1", 80, None), []), [])

    def stream(self, length: Any) -> Any:
        """A request body that streams (a L{RequestBodyStream} on a fake channel)."""
        from kongtls.request_body import RequestBodyStream

        channel = type("Channel", (), {"transport": StringTransport(),
                                       "pauseReading": lambda self, reason: None,
                                       "resumeReading": lambda self, reason: None})()
        return RequestBodyStream(channel, length)

    def sendStream(self, body: Any) -> tuple[Any, Any, StringTransport]:
        call = self.pool.request("127.0.0.1", 80, None, b"POST", b"/up",
                                 Headers({b"host": [b"h"]}), body, TIMEOUTS)
        _, _, factory, _, _ = self.reactor.tcpClients[-1]
        transport = StringTransport()
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(transport)
        return call, protocol, transport

    def test_streamed_body_of_unknown_length_is_chunked(self) -> None:
        body = self.stream(None)
        call, protocol, transport = self.sendStream(body)
        body.feed(b"hello")
        body.feed(b" world")
        body.finish()
        self.assertEqual(transport.value(),
                         b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        self.assertIsNone(transport.producer)  # unregistered once sent
        protocol.dataReceived(OK)
        self.assertEqual(self.body(self.successResultOf(call.response)), b"ok")

    def test_streamed_body_of_known_length_and_backpressure(self) -> None:
        body = self.stream(6)
        call, protocol, transport = self.sendStream(body)
        self.assertIn(b"\r\nContent-Length: 6\r\n\r\n", transport.value())
        transport.producer.pauseProducing()  # the upstream's buffers are full
        body.feed(b"abc")
        self.assertFalse(transport.value().endswith(b"abc"))
        transport.producer.resumeProducing()
        self.assertTrue(transport.value().endswith(b"abc"))

    def test_write_timeout_counts_between_writes(self) -> None:
        body = self.stream(None)
        call, protocol, transport = self.sendStream(body)
        for _ in range(3):
            self.reactor.advance(1.5)
            body.feed(b"x")  # 4.5 s in all, never 2 s without a write
        self.assertNoResult(call.response)
        self.reactor.advance(2.1)
        self.failureResultOf(call.response, TimeoutError)
        self.assertTrue(transport.disconnecting)

    def test_the_client_leaving_mid_body_aborts_the_upstream(self) -> None:
        body = self.stream(100)
        call, protocol, transport = self.sendStream(body)
        body.feed(b"part")
        body.clientLost(Failure(ConnectionDone()))
        self.failureResultOf(call.response, ConnectionDone)
        self.assertTrue(transport.disconnected)  # aborted: no clean end for the upstream

    def test_cancel_drops_a_reused_connection_without_a_retry(self) -> None:
        from twisted.internet.defer import CancelledError

        call, protocol, transport = self.send()
        protocol.dataReceived(OK)
        self.successResultOf(call.response)
        second = self.pool.request("127.0.0.1", 80, None, b"GET", b"/y",
                                   Headers({b"host": [b"h"]}), None, TIMEOUTS)
        self.assertEqual(len(self.reactor.tcpClients), 1)  # the pooled one
        second.cancel()
        self.failureResultOf(second.response, CancelledError)
        self.assertTrue(transport.disconnected)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(len(self.reactor.tcpClients), 1)  # and no retry on a new one
