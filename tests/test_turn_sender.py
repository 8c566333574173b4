"""Small writes queued for the end of the reactor turn, over real loopback TCP."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase

from kongtls.turn_sender import SOCKET_BUFFER, sendAtTurnEnd

reactor: Any = _reactor


class _Collector(Protocol):
    """The peer: everything it receives, and a Deferred fired with it at close."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.closed: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        self.closed.callback(bytes(self.received))


class TurnSenderTests(TestCase):
    async def _connected(self) -> tuple[Any, _Collector]:
        """A server-side TCP transport and the collecting client connected to it."""
        accepted: Deferred[Any] = Deferred()

        class Server(Protocol):
            def connectionMade(self) -> None:
                accepted.callback(self.transport)

        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(Server))
        self.addCleanup(port.stopListening)
        client = await TCP4ClientEndpoint(
            reactor, "127.0.0.1", port.getHost().port).connect(
            Factory.forProtocol(_Collector))
        self.addCleanup(lambda: client.transport.abortConnection())
        return await accepted, client

    def test_small_writes_arrive_in_order_without_writability_registration(
            self) -> Deferred[None]:
        async def check() -> None:
            transport, client = await self._connected()
            sendAtTurnEnd(transport, b"one ")
            sendAtTurnEnd(transport, b"two ")
            transport.write(b"three ")  # Twisted's own write queues behind them
            sendAtTurnEnd(transport, b"four")
            transport.loseConnection()  # in the same turn: nothing may be lost
            self.assertEqual(await client.closed, b"one two three four")

        return Deferred.fromCoroutine(check())

    def test_a_small_write_is_sent_by_the_turn_end_not_by_epoll(self) -> Deferred[None]:
        async def check() -> None:
            transport, client = await self._connected()
            sendAtTurnEnd(transport, b"ping")
            self.assertNotIn(transport, reactor.getWriters())
            turnEnded: Deferred[None] = Deferred()
            reactor.callLater(0, turnEnded.callback, None)
            await turnEnded
            self.assertNotIn(transport, reactor.getWriters())
            self.assertEqual(transport._tempDataLen, 0)
            transport.loseConnection()
            self.assertEqual(await client.closed, b"ping")

        return Deferred.fromCoroutine(check())

    def test_writes_over_the_high_water_mark_and_a_full_socket_lose_nothing(
            self) -> Deferred[None]:
        async def check() -> None:
            transport, client = await self._connected()
            transport.bufferSize = SOCKET_BUFFER
            # The peer reads nothing until the end: the socket fills, the rest waits
            # in Twisted's queue for writability.
            client.transport.pauseProducing()
            chunks = [bytes([i]) * 100_000 for i in range(60)]
            for chunk in chunks:
                sendAtTurnEnd(transport, chunk)
            sendAtTurnEnd(transport, b"x" * (SOCKET_BUFFER + 1))
            transport.loseConnection()
            client.transport.resumeProducing()
            self.assertEqual(await client.closed,
                             b"".join(chunks) + b"x" * (SOCKET_BUFFER + 1))

        return Deferred.fromCoroutine(check())

    def test_an_abort_in_the_same_turn_drops_the_queued_bytes(self) -> Deferred[None]:
        """abortConnection drops whatever is queued, as Twisted's own does: over TLS the
        queued bytes are the close_notify that would make a cut response look whole."""
        async def check() -> None:
            transport, client = await self._connected()
            sendAtTurnEnd(transport, b"queued before the abort")
            transport.abortConnection()
            sendAtTurnEnd(transport, b"queued after it")
            self.assertEqual(await client.closed, b"")

        return Deferred.fromCoroutine(check())

    def test_a_transport_that_is_not_a_socket_gets_a_plain_write(self) -> None:
        written: list[bytes] = []

        class NotASocket:
            def write(self, data: bytes) -> None:
                written.append(data)

        sendAtTurnEnd(NotASocket(), b"data")
        self.assertEqual(written, [b"data"])
