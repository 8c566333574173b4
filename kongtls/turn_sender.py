"""Small writes sent together at the end of the reactor turn.

Twisted's C{transport.write} queues the bytes, registers the socket for writability and
sends once C{epoll} reports it writable, then unregisters it: two C{epoll_ctl} calls and
a loop turn per write. Sending at once instead (what kongtls did before) saves those,
but each send then wakes the peer on its own, in the middle of handling the turn's other
events, and under keep-alive load the kernel time per request doubled. L{sendAtTurnEnd}
does neither: it puts the bytes in the transport's own queue, exactly where
C{transport.write} would, and one call at the end of the reactor turn sends every
transport's queue with a plain C{send}. Only what the socket does not take is left to
Twisted's writability machinery; ordering, C{loseConnection} and error reporting stay
Twisted's, because the bytes were in Twisted's queue all along.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.abstract import FileDescriptor
from twisted.internet.interfaces import IDelayedCall

#: A socket transport's read size and write high-water mark (Twisted's default is
#: 64 KiB): fewer reads, writes and pause/resume turns per megabyte.
SOCKET_BUFFER = 1 << 18


def useLargeBuffers(transport: Any) -> None:
    """Give a TCP transport (or the one under a TLS transport) L{SOCKET_BUFFER}."""
    below = transport if isinstance(transport, FileDescriptor) else \
        getattr(transport, "transport", None)
    if isinstance(below, FileDescriptor):
        below.bufferSize = SOCKET_BUFFER


class TurnSender:
    """The transports of one reactor with bytes queued for the end of this turn."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._queued: dict[FileDescriptor, None] = {}
        self._call: IDelayedCall | None = None

    def queue(self, transport: FileDescriptor, data: bytes) -> bool:
        """Queue C{data} on C{transport} for the end of the turn, if that is safe.

        False when the transport is already Twisted's to send (bytes waiting for
        writability, closing, aborted, or over its high-water mark, where the producer
        must be paused): the caller then uses C{transport.write}.
        """
        queued = transport._tempDataBuffer
        if (not transport.connected or transport.disconnecting
                or transport._writeDisconnected or getattr(transport, "_aborting", False)
                or transport.dataBuffer
                or (queued and transport not in self._queued)
                or transport._tempDataLen + len(data) > transport.bufferSize):
            return False
        queued.append(data)
        transport._tempDataLen += len(data)
        self._queued[transport] = None
        if self._call is None:
            self._call = self._reactor.callLater(0, self._sendAll)
        return True

    def _sendAll(self) -> None:
        self._call = None
        queued, self._queued = self._queued, {}
        for transport in queued:
            # Closing, lost, aborted (its queue is dropped), or already registered for
            # writability: Twisted sends it (or not).
            if (transport.connected and not transport.disconnecting
                    and not getattr(transport, "_aborting", False)
                    and not transport.dataBuffer
                    and transport._tempDataBuffer):
                _sendQueued(transport)


def _sendQueued(transport: Any) -> None:
    chunks = transport._tempDataBuffer
    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    try:
        sent = transport.socket.send(data)
    except OSError:  # would block, or a failure Twisted's own write will report
        sent = 0
    if sent == len(data):
        transport._tempDataBuffer = []
        transport._tempDataLen = 0
        return
    rest = data[sent:]
    transport._tempDataBuffer = [rest]
    transport._tempDataLen = len(rest)
    transport.startWriting()


#: One sender per reactor (a process has one, nearly always; reactors are not freed).
_senders: dict[Any, TurnSender] = {}


def sendAtTurnEnd(transport: Any, data: bytes) -> None:
    """Write C{data} to a TCP (or UNIX) transport; small writes go at the turn's end."""
    # Only a socket transport itself: a TLS transport must encrypt first (and would
    # hand an attribute lookup for "socket" on to the socket below it).
    if isinstance(transport, FileDescriptor) and getattr(transport, "socket", None):
        reactor = transport.reactor
        sender = _senders.get(reactor)
        if sender is None:
            sender = _senders[reactor] = TurnSender(reactor)
        if sender.queue(transport, data):
            return
    transport.write(data)
