"""The gateway's own HTTP/1.1 server (kongtls.http1), spoken to over raw sockets."""

from __future__ import annotations

import json
import socket
import ssl
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.interfaces import ITCPTransport
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase
from twisted.web.http_headers import Headers
from zope.interface import implementer

from kongtls.http1 import (
    PIPELINE_HIGH_WATER,
    ChunkedBody,
    DownstreamRequest,
    GatewayHTTPFactory,
    HTTP1Channel,
    MalformedRequestError,
)
from kongtls.request_body import HIGH_WATER
from kongtls.testing import ClientConnection, clientContext, inThread
from kongtls.web import fieldAdder
from tests.support import GatewayTestCase


def exchange(port: int, data: bytes, tls: ssl.SSLContext | None = None,
             until: int = 1) -> bytes:
    """Send C{data}, read until C{until} responses' worth of blank lines or the close."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        s: Any = tls.wrap_socket(raw, server_hostname="localhost") if tls else raw
        s.sendall(data)
        received = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            received += chunk
            if _complete(received) >= until:
                break
        return received


def _complete(data: bytes) -> int:
    """How many whole Content-Length-framed responses C{data} holds."""
    count = 0
    while True:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return count
        head = data[:end].lower()
        length = 0
        for line in head.split(b"\r\n"):
            if line.startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        if len(data) < end + 4 + length:
            return count
        data = data[end + 4 + length:]
        count += 1


def responses(data: bytes) -> list[tuple[bytes, dict[bytes, bytes], bytes]]:
    """Status lines, fields and bodies of Content-Length-framed responses."""
    found = []
    while data:
        end = data.find(b"\r\n\r\n")
        lines = data[:end].split(b"\r\n")
        fields = {k.strip().lower(): v.strip()
                  for k, _, v in (line.partition(b":") for line in lines[1:])}
        length = int(fields.get(b"content-length", b"0"))
        body = data[end + 4:end + 4 + length]
        found.append((lines[0], fields, body))
        data = data[end + 4 + length:]
    return found


GET = b"GET /one HTTP/1.1\r\nHost: localhost\r\n\r\n"


class HTTP1Tests(GatewayTestCase):
    async def test_pipelined_requests_answer_in_order(self) -> None:
        gw = await self.gateway()
        data = b"".join(b"GET /n%d HTTP/1.1\r\nHost: localhost\r\n\r\n" % i for i in range(3))
        got = responses(await inThread(exchange, gw.httpPort, data, until=3))
        self.assertEqual([s for s, _, _ in got], [b"HTTP/1.1 200 OK"] * 3)
        self.assertEqual([json.loads(b)["path"] for _, _, b in got], ["/n0", "/n1", "/n2"])

    async def test_keep_alive_over_tls(self) -> None:
        gw = await self.gateway()
        got = responses(await inThread(exchange, gw.httpsPort, GET + GET,
                                       tls=clientContext(self.pki), until=2))
        self.assertEqual(len(got), 2)
        self.assertNotIn(b"connection", got[1][1])
        self.assertIn(b"date", got[0][1])

    async def test_http10_closes_unless_keep_alive_asked(self) -> None:
        gw = await self.gateway()
        plain = await inThread(exchange, gw.httpPort,
                               b"GET / HTTP/1.0\r\n\r\n" + GET, until=2)
        got = responses(plain)
        self.assertEqual(len(got), 1)  # the second request was never read
        self.assertEqual(got[0][1][b"connection"], b"close")
        kept = responses(await inThread(
            exchange, gw.httpPort,
            b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" + GET, until=2))
        self.assertEqual(len(kept), 2)
        self.assertEqual(kept[0][1][b"connection"], b"keep-alive")

    async def test_connection_close_is_honoured(self) -> None:
        gw = await self.gateway()
        got = responses(await inThread(
            exchange, gw.httpPort,
            b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n" + GET,
            until=2))
        self.assertEqual(len(got), 1)
        self.assertEqual(got[0][1][b"connection"], b"close")

    async def test_chunked_upload_is_proxied(self) -> None:
        gw = await self.gateway()
        body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\n"
        got = responses(await inThread(
            exchange, gw.httpPort,
            b"POST /up HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
            + body))
        self.assertEqual(got[0][0], b"HTTP/1.1 200 OK")
        self.assertEqual(json.loads(got[0][2])["body"], "hello world")

    async def test_head_has_no_body(self) -> None:
        gw = await self.gateway()
        raw = await inThread(exchange, gw.httpPort,
                             b"HEAD / HTTP/1.1\r\nHost: localhost\r\n\r\n" + GET, until=1)
        status, fields, _ = raw.partition(b"\r\n\r\n")
        self.assertTrue(status.startswith(b"HTTP/1.1 200 OK"))
        # The next response follows the head directly: nothing came in between.
        rest = await inThread(exchange, gw.httpPort,
                              b"HEAD / HTTP/1.1\r\nHost: localhost\r\n\r\n" + GET, until=2)
        heads = rest.split(b"\r\n\r\n", 1)
        self.assertTrue(heads[1].startswith(b"HTTP/1.1 200 OK"))

    async def test_refusals(self) -> None:
        gw = await self.gateway()
        cases = {
            b"GET / HTTP/1.1\r\n\r\n": b"400",  # no Host
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n": b"400",
            b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n": b"400",
            b"GET / HTTP/2.0\r\nHost: a\r\n\r\n": b"505",
            b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n": b"400",
            b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"y" * 70000 + b"\r\n\r\n": b"431",
        }
        for request, status in cases.items():
            answer = await inThread(exchange, gw.httpPort, request)
            self.assertEqual(answer.split(b" ")[1], status, request[:60])
            self.assertIn(b"Connection: close", answer)

    async def test_absolute_form_targets(self) -> None:
        """The path and query are forwarded, and the target's authority is the host."""
        gw = await self.gateway()
        cases = {
            b"http://example.com?x=1": ("/", "x=1"),
            b"HTTP://Example.com:8080/p?x=1": ("/p", "x=1"),
            b"https://example.com": ("/", ""),
        }
        for target, (path, query) in cases.items():
            got = responses(await inThread(
                exchange, gw.httpPort,
                b"GET %s HTTP/1.1\r\nHost: other.example\r\n\r\n" % target))
            echoed = json.loads(got[0][2])
            self.assertEqual((echoed["path"], echoed["query"]), (path, query), target)
            self.assertEqual(echoed["headers"]["x-forwarded-host"],
                             target.split(b"/")[2].split(b":")[0].split(b"?")[0].decode())
        for bad in (b"ftp://example.com/", b"http://user@example.com/", b"http:///p"):
            answer = await inThread(exchange, gw.httpPort,
                                    b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % bad)
            self.assertTrue(answer.startswith(b"HTTP/1.1 400 "), bad)

    async def test_idle_keep_alive_connections_are_closed(self) -> None:
        gw = await self.gateway()
        factory = gw.gateway.http1
        factory.idleTimeout = 0.2

        def idleThenSend() -> tuple[bytes, bytes]:
            with socket.create_connection(("127.0.0.1", gw.httpPort), timeout=10) as s:
                s.sendall(GET)
                first = s.recv(65536)
                time.sleep(0.5)
                return first, s.recv(65536)

        pending = inThread(idleThenSend)
        await deferLater(reactor, 0.35, lambda: None)
        factory.closeIdle()
        first, after = await pending
        self.assertTrue(first.startswith(b"HTTP/1.1 200 OK"))
        self.assertEqual(after, b"")  # closed by the gateway


class TimeoutTests(GatewayTestCase):
    """The idle sweep times a head from its first byte and a buffered body from its
    last read: trickling bytes does not keep a connection."""

    async def sweepWhile(self, pending: Any, factory: GatewayHTTPFactory) -> Any:
        while not pending.called:
            await deferLater(reactor, 0.05, lambda: None)
            factory.closeIdle()
        return await pending

    async def test_a_trickled_head_times_out(self) -> None:
        gw = await self.gateway()
        factory = gw.gateway.http1
        factory.headTimeout = 0.3

        def trickle(port: int) -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                try:
                    for byte in b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: abcdefghij":
                        s.sendall(bytes([byte]))
                        time.sleep(0.03)
                    s.sendall(b"\r\n\r\n")
                except OSError:  # closed meanwhile: the 408 may still be readable
                    pass
                try:
                    return s.recv(65536)
                except OSError:
                    return b"reset"

        answer = await self.sweepWhile(inThread(trickle, gw.httpPort), factory)
        self.assertTrue(answer.startswith(b"HTTP/1.1 408 ") or answer == b"reset", answer)

    async def test_a_stalled_body_times_out(self) -> None:
        gw = await self.gateway()
        factory = gw.gateway.http1
        factory.headTimeout = 0.3

        def stall(port: int) -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
                return s.recv(65536)

        answer = await self.sweepWhile(inThread(stall, gw.httpPort), factory)
        self.assertTrue(answer.startswith(b"HTTP/1.1 408 "), answer)

    async def test_a_slow_body_that_progresses_is_not_cut(self) -> None:
        gw = await self.gateway()
        factory = gw.gateway.http1
        factory.headTimeout = 0.3

        def slowBody(port: int) -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
                for _ in range(10):
                    time.sleep(0.1)
                    s.sendall(b"z")
                return exchange_rest(s)

        def exchange_rest(s: socket.socket) -> bytes:
            received = b""
            while _complete(received) < 1:
                chunk = s.recv(65536)
                if not chunk:
                    break
                received += chunk
            return received

        answer = await self.sweepWhile(inThread(slowBody, gw.httpPort), factory)
        self.assertEqual(json.loads(responses(answer)[0][2])["body"], "z" * 10)


class ClosingTests(GatewayTestCase):
    async def test_upload_after_an_early_answer_is_dropped(self) -> None:
        """TLS keeps reading until the client's close_notify: an upload that goes on
        after the gateway answered must not pile up in memory."""
        from tests.plugins import Exiter

        gw = await self.gateway([{"name": "exiter"}], {"exiter": Exiter()})
        factory = gw.gateway.http1
        size = 8 << 20

        def upload(port: int) -> None:
            conn = ClientConnection(port, clientContext(self.pki))
            conn.sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                              % (2 * size))
            try:
                for _ in range(size // 65536):
                    conn.sock.sendall(b"u" * 65536)
            except OSError:
                pass
            conn.sock.close()

        uploading = inThread(upload, gw.httpsPort)
        held = 0
        while not uploading.called:
            await deferLater(reactor, 0.01, lambda: None)
            held = max([held, *(len(c._buffer) for c in factory.channels)])
        await uploading
        self.assertLess(held, 1 << 20)
        for _ in range(100):  # the gateway sees the client's close
            if not factory.channels:
                break
            await deferLater(reactor, 0.02, lambda: None)

    async def test_an_early_answer_says_the_connection_closes(self) -> None:
        from tests.plugins import Exiter

        gw = await self.gateway([{"name": "exiter"}], {"exiter": Exiter()})
        answer = await inThread(
            exchange, gw.httpPort, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
            b"\r\n" % (4 << 20) + b"u" * 65536, until=0)
        head = answer.partition(b"\r\n\r\n")[0]
        self.assertTrue(head.startswith(b"HTTP/1.1 403 "), head)
        self.assertIn(b"\r\nConnection: close", head)

    async def test_plain_tcp_lingers_after_an_early_answer(self) -> None:
        """Closing a TCP socket with unread bytes resets the connection, and a reset can
        throw away what the client has not read yet: the response. Like nginx's
        lingering close, the gateway half-closes and drops the rest of the upload until
        the client closes: a client still uploading after the response is not reset."""
        from tests.plugins import Exiter

        gw = await self.gateway([{"name": "exiter"}], {"exiter": Exiter()})
        factory = gw.gateway.http1

        def uploadPastTheAnswer(port: int) -> tuple[bytes, str]:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d"
                          b"\r\n\r\n" % (64 << 20) + b"u" * 65536)
                received = b""
                while chunk := s.recv(65536):  # the 404, then the gateway's FIN
                    received += chunk
                try:
                    for _ in range(4):  # a reset would fail the second send at latest
                        s.sendall(b"u" * (256 << 10))
                        time.sleep(0.05)
                except OSError as e:
                    return received, f"upload reset: {e!r}"
                return received, "upload went on"

        answer, upload = await inThread(uploadPastTheAnswer, gw.httpPort)
        self.assertTrue(answer.startswith(b"HTTP/1.1 403 "), answer[:200])
        self.assertIn(b"\r\nConnection: close", answer)
        self.assertEqual(upload, "upload went on")
        for _ in range(100):  # the client closed: so does the gateway
            if not factory.channels:
                break
            await deferLater(reactor, 0.02, lambda: None)
        self.assertEqual(factory.channels, set())

    async def test_plain_tcp_lingers_after_refusing_a_head(self) -> None:
        """A head refused before its body arrives (here its framing) is answered, and the
        body the client goes on sending is dropped until it closes, not reset."""
        gw = await self.gateway()

        def uploadPastTheRefusal(port: int) -> tuple[bytes, str]:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
                          b"Transfer-Encoding: chunked\r\n\r\n" % (64 << 20))
                received = b""
                while chunk := s.recv(65536):  # the 400, then the gateway's FIN
                    received += chunk
                try:
                    for _ in range(4):  # the body, sent after the head was refused
                        s.sendall(b"u" * (256 << 10))
                        time.sleep(0.05)
                except OSError as e:
                    return received, f"upload reset: {e!r}"
                return received, "upload went on"

        answer, upload = await inThread(uploadPastTheRefusal, gw.httpPort)
        self.assertTrue(answer.startswith(b"HTTP/1.1 400 "), answer[:200])
        self.assertEqual(upload, "upload went on")

    async def test_a_client_half_close_while_lingering_still_gets_the_whole_answer(
            self) -> None:
        """A client that stops uploading with a FIN (shutdown) while the gateway lingers
        is the close the linger waits for; what is still queued of the response goes
        out before the gateway closes."""
        size = 16 << 20

        class BigExit:
            PRIORITY = 1500
            VERSION = "1.0.0"

            def access(self, kong: Any, conf: Any) -> None:
                kong.response.exit(403, b"x" * size)

        gw = await self.gateway([{"name": "big-exit"}], {"big-exit": BigExit()})

        def uploadStopAndRead(port: int) -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                          % (64 << 20) + b"u" * 65536)
                time.sleep(0.3)  # answered: the socket's buffers fill, the rest queues
                s.shutdown(socket.SHUT_WR)  # the client gives up its upload
                time.sleep(0.2)
                received = b""
                while chunk := s.recv(1 << 20):
                    received += chunk
                return received

        answer = await inThread(uploadStopAndRead, gw.httpPort)
        self.assertTrue(answer.startswith(b"HTTP/1.1 403 "), answer[:200])
        body = answer.partition(b"\r\n\r\n")[2]
        self.assertEqual(body.count(b"x"), size)
        self.assertTrue(body.endswith(b"\r\n0\r\n\r\n"), body[-20:])  # the last chunk

    async def test_a_client_that_never_closes_is_aborted(self) -> None:
        """After a Connection: close response, TLS waits for the client's close_notify;
        a client that never sends one is cut off after the linger timeout."""
        gw = await self.gateway()
        factory = gw.gateway.http1
        factory.lingerTimeout = 0.2

        def stayOpen(port: int) -> bytes:
            raw = socket.create_connection(("127.0.0.1", port), timeout=5)
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            tls = clientContext(self.pki).wrap_bio(incoming, outgoing,
                                                   server_hostname="localhost")
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    raw.sendall(outgoing.read())
                    incoming.write(raw.recv(65536))
            tls.write(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            raw.sendall(outgoing.read())
            received = b""
            try:
                while chunk := raw.recv(65536):  # never answers the close_notify
                    received += chunk
            except (TimeoutError, ConnectionResetError) as e:
                return type(e).__name__.encode()
            finally:
                raw.close()
            return b"closed"

        staying = inThread(stayOpen, gw.httpsPort)
        while not staying.called:
            await deferLater(reactor, 0.05, lambda: None)
            factory.closeIdle()
        self.assertIn(await staying, (b"closed", b"ConnectionResetError"))


class LateExit:
    """Answers 403 from access once the request body has had time to arrive."""

    PRIORITY = 1
    VERSION = "1.0.0"

    async def access(self, kong: Any, conf: Any) -> None:
        await deferLater(reactor, 0.3, lambda: None)
        kong.response.exit(403, {"message": "late"})


class BodyFlowTests(GatewayTestCase):
    async def test_unread_streamed_body_does_not_stall_the_connection(self) -> None:
        """A plugin answers a request whose chunked body came whole but was never sent
        upstream: the body had paused reading, and the next request must still be
        read."""
        gw = await self.gateway([{"name": "late"}], {"late": LateExit()})
        size = HIGH_WATER + 8000  # the last read takes the queue over the high-water mark

        def twoRequests(port: int) -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                          b"\r\n%x\r\n" % size + b"c" * (size - 20000))
                time.sleep(0.1)
                s.sendall(b"c" * 20000 + b"\r\n0\r\n\r\n")
                received = b""
                try:
                    while received.count(b"\r\n0\r\n\r\n") < 1:
                        received += s.recv(65536)
                    s.sendall(GET)
                    while received.count(b"\r\n0\r\n\r\n") < 2:
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        received += chunk
                except TimeoutError:
                    pass
                return received

        received = await inThread(twoRequests, gw.httpPort)
        self.assertEqual(received.count(b"HTTP/1.1 403 Forbidden"), 2, received)


class ChannelFlowTests(TestCase):
    """The channel and a streamed body both pause reading; neither undoes the other."""

    def test_body_resuming_keeps_pipelined_bytes_paused(self) -> None:
        served: list[DownstreamRequest] = []
        factory = GatewayHTTPFactory(served.append, None, Clock())  # type: ignore[arg-type]
        channel = HTTP1Channel(factory)
        transport = StringTransport()
        channel.makeConnection(transport)
        size = 2 << 20
        channel.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                             % size)
        stream = served[0].bodyStream
        assert stream is not None
        written: list[bytes] = []

        class Consumer:
            write = written.append

        stream.startProducing(Consumer())
        stream.pauseProducing()  # the upstream is slow
        channel.dataReceived(b"b" * (size - 1000))
        self.assertEqual(transport.producerState, "paused")
        # The end of the body, and more than the pipeline holds unpaused.
        channel.dataReceived(b"b" * 1000 + GET * (PIPELINE_HIGH_WATER // len(GET) + 1))
        self.assertTrue(stream.complete)
        stream.resumeProducing()  # the upstream takes it all: the body no longer pauses
        self.assertEqual(sum(map(len, written)), size)
        self.assertEqual(transport.producerState, "paused")  # the pipelined bytes still do
        served[0].finish()
        self.assertEqual(transport.producerState, "producing")


class ChunkedBodyTests(TestCase):
    def test_split_anywhere(self) -> None:
        encoded = b"5\r\nhello\r\n10\r\n" + b"x" * 16 + b"\r\n0\r\n\r\nNEXT"
        for step in (1, 2, 3, 7):
            got: list[bytes] = []
            decoder = ChunkedBody(got.append)
            rest = b""
            for i in range(0, len(encoded), step):
                rest += decoder.take(encoded[i:i + step])
            self.assertTrue(decoder.done)
            self.assertEqual(b"".join(got), b"hello" + b"x" * 16)
            self.assertEqual(rest, b"NEXT")

    def test_strict_sizes(self) -> None:
        for bad in (b"zz\r\n", b"+5\r\n", b"-1\r\n", b"0x5\r\n", b" 5\r\n",
                    b"5\r\nhelloX\r\n", b"1" * 16 + b"\r\n"):
            with self.assertRaises(MalformedRequestError, msg=bad):
                ChunkedBody(lambda data: None).take(bad + b"hello\r\n0\r\n\r\n")


class FieldAdderTests(TestCase):
    """kongtls.web.fieldAdder fills twisted.web's Headers through its private parts."""

    def test_same_as_add_raw_header(self) -> None:
        fast, slow = Headers(), Headers()
        add = fieldAdder(fast)
        for name, value in [(b"content-type", b"a/b"), (b"X-Thing", b"1"),
                            (b"x-thing", b"2"), (b"ETAG", b'"e"')]:
            add(name, value)
            slow.addRawHeader(name, value)
        self.assertEqual(list(fast.getAllRawHeaders()), list(slow.getAllRawHeaders()))
        self.assertEqual(fast.getRawHeaders("x-thing"), ["1", "2"])
        self.assertTrue(fast.hasHeader(b"Content-Type"))

    def test_refuses_names_that_are_not_tokens(self) -> None:
        add = fieldAdder(Headers())
        for bad in (b"Transfer-Encoding ", b" folded", b"a\x00b"):
            with self.assertRaises(ValueError, msg=bad):
                add(bad, b"x")


class StopTests(GatewayTestCase):
    async def test_stopping_closes_keep_alive_connections(self) -> None:
        gw = await self.gateway()

        def requestThenWait(port: int) -> tuple[bytes, bytes]:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(GET)
                first = s.recv(65536)
                return first, s.recv(65536)  # b"" once the gateway closes

        pending = inThread(requestThenWait, gw.httpPort)
        await deferLater(reactor, 0.5, lambda: None)
        await gw.gateway.stop()
        first, after = await pending
        self.assertTrue(first.startswith(b"HTTP/1.1 200 OK"))
        self.assertEqual(after, b"")

    def test_a_lingering_connection_is_still_aborted_after_the_gateway_stops(self) -> None:
        """Plain TCP answered early lingers until the client closes; the sweep's linger
        timeout ends it for a client that never does, also once nothing listens."""
        clock = Clock()

        def answerEarly(request: DownstreamRequest) -> None:
            request.setResponseCode(403)
            request.finish()

        factory = GatewayHTTPFactory(answerEarly, None,  # type: ignore[arg-type]
                                     clock, lingerTimeout=1.0)
        factory.doStart()
        channel = factory.buildProtocol(None)
        transport = _HalfClosingTransport()
        channel.makeConnection(transport)
        channel.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                             % (64 << 20))
        self.assertTrue(transport.writeClosed)  # the 403, then a FIN: it lingers
        factory.closeAll()  # the gateway stops
        factory.doStop()
        factory.lingerTimeout = -1.0  # the next sweep finds the linger timed out
        clock.advance(10)
        self.assertTrue(transport.aborted)


@implementer(ITCPTransport)
class _HalfClosingTransport(StringTransport):
    """A StringTransport that half-closes and aborts, as a TCP transport does."""

    writeClosed = False
    aborted = False

    def loseWriteConnection(self) -> None:
        self.writeClosed = True

    def abortConnection(self) -> None:
        self.aborted = True
