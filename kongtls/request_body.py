"""Request bodies that stream to the upstream, with backpressure towards the client.

HTTP/1.1 bodies over L{STREAM_OVER} bytes (or of unknown length) are not buffered: the
request is processed once its head is in (L{kongtls.http1}), and the body goes to the
upstream as it arrives. When the upstream is slower, the client's connection stops
being read.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

#: Bodies larger than this (or of unknown length) stream; smaller ones are buffered.
STREAM_OVER = 1 << 20
#: How much may wait for the upstream before the client is paused.
HIGH_WATER = 1 << 18


@implementer(IBodyProducer)
class RequestBodyStream:
    """The client's body, fed as it arrives, produced once to the upstream."""

    def __init__(self, channel: Any, length: int | None) -> None:
        self._channel = channel
        self.length = UNKNOWN_LENGTH if length is None else length
        self.received = 0
        self.complete = False
        self.started = False
        self.discarding = False
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._consumer: Any = None
        self._paused = False
        self._done: Deferred[None] | None = None
        self._failed: Failure | None = None

    # -- from the client ----------------------------------------------------------

    def feed(self, data: bytes) -> None:
        self.received += len(data)
        if self.discarding:
            return
        if self._consumer is not None and not self._paused and not self._queue:
            self._consumer.write(data)
            return
        self._queue.append(data)
        self._queued += len(data)
        if self._queued > HIGH_WATER:
            self._channel.pauseReading(self)  # again is a no-op

    def finish(self) -> None:
        self.complete = True
        self._flush()

    def clientLost(self, reason: Failure) -> None:
        self._failed = reason
        self._flush()

    # -- to the upstream (IBodyProducer) -------------------------------------------

    def startProducing(self, consumer: Any) -> Deferred[None]:
        self.started = True
        self._consumer = consumer
        self._done = Deferred()
        self._flush()
        return self._done

    def _flush(self) -> None:
        while self._consumer is not None and self._queue and not self._paused:
            data = self._queue.popleft()
            self._queued -= len(data)
            self._consumer.write(data)
        if self._queued <= HIGH_WATER // 4:
            self._channel.resumeReading(self)  # a no-op unless paused for this body
        done = self._done
        if done is None or done.called:
            return
        if self._failed is not None:
            done.errback(self._failed)
        elif self.complete and not self._queue:
            done.callback(None)

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._flush()

    def stopProducing(self) -> None:
        self._consumer = None
        self._queue.clear()
        self._queued = 0
        self._channel.resumeReading(self)
