"""The upstream HTTP/1.1 client: responses arriving in pieces, flow control, timeouts."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, TimeoutError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.http_headers import Headers

from kongtls.upstream_client import BadResponseError, Timeouts, UpstreamPool

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


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
        call = self.pool.request(("http", "127.0.0.1", 80, None), None, method, b"/x",
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
        call = self.pool.request(("http", "127.0.0.1", 80, None), None, b"GET", b"/",
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

        channel = type("Channel", (), {"transport": StringTransport()})()
        return RequestBodyStream(channel, length)

    def sendStream(self, body: Any) -> tuple[Any, Any, StringTransport]:
        call = self.pool.request(("http", "127.0.0.1", 80, None), None, b"POST", b"/up",
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
        second = self.pool.request(("http", "127.0.0.1", 80, None), None, b"GET", b"/y",
                                   Headers({b"host": [b"h"]}), None, TIMEOUTS)
        self.assertEqual(len(self.reactor.tcpClients), 1)  # the pooled one
        second.cancel()
        self.failureResultOf(second.response, CancelledError)
        self.assertTrue(transport.disconnected)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(len(self.reactor.tcpClients), 1)  # and no retry on a new one
