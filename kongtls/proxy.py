"""HTTP/1.1 (and HTTP/2) requests in, upstream HTTP requests out.

L{GatewayResource} takes every request, L{Upstreams} makes the upstream call through
a persistent connection pool, L{UpstreamResponse} hands its body over chunk by chunk
(pausing the upstream when the client is slower), and L{Downstream} writes the client's
response.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.error import ConnectError, DNSLookupError, TimeoutError
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    FileBodyProducer,
    HTTPConnectionPool,
    PotentialDataLoss,
    ResponseDone,
    _HTTP11ClientFactory,  # the pool's, made quiet
)
from twisted.web.http import PotentialDataLoss as HTTPPotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from kongtls import __version__
from kongtls.config import Service, Target
from kongtls.exchange import Exchange, messageResponse
from kongtls.http1 import DownstreamRequest
from kongtls.phase_tracker import PhaseTracker
from kongtls.proxy_types import AttemptFailure, OpenTunnel
from kongtls.tunnel import openTunnel, parseHead

if TYPE_CHECKING:
    from twisted.web.server import Request

    from kongtls.connection import ConnectionTLS
    from kongtls.runtime import Runtime

from twisted.internet.interfaces import IPushProducer

log = Logger(namespace="kongtls.proxy")

SERVER = f"kongtls/{__version__}".encode("ascii")

BAD_GATEWAY = "An invalid response was received from the upstream server"
TIMEOUT = "The upstream server is timing out"

#: RFC 9110 section 7.6.1 connection-specific fields, never forwarded.
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
    b"transfer-encoding", b"upgrade", b"proxy-authenticate", b"proxy-authorization",
})


def _endToEnd(headers: Headers) -> Headers:
    """A copy without hop-by-hop fields, nor those the Connection field names."""
    named = set(HOP_BY_HOP)
    for value in headers.getRawHeaders(b"connection", []):
        named.update(t.strip().lower() for t in value.split(b",") if t.strip())
    copy = Headers()
    for name, values in headers.getAllRawHeaders():
        if name.lower() not in named:
            copy.setRawHeaders(name, list(values))
    return copy


def connectionOf(request: Any) -> ConnectionTLS | None:
    """The TLS facts of the connection a request came on (HTTP/1.1 or HTTP/2)."""
    channel = request.channel
    transport = getattr(channel, "transport", None)
    if transport is None:
        h2 = getattr(channel, "_conn", None)
        transport = getattr(h2, "transport", None)
    state: ConnectionTLS | None = getattr(transport, "_kongtls", None)
    return state


class UpstreamResponse(Protocol):
    """The upstream's status, headers and a body to pull chunk by chunk."""

    HIGH_WATER = 8

    def __init__(self, response: Any, reactor: Any = None, readTimeout: float = 60.0
                 ) -> None:
        self.status: int = response.code
        self.headers = _endToEnd(response.headers)
        length = response.length
        if isinstance(length, int) and not self.headers.hasHeader(b"content-length") \
                and response.request.method != b"HEAD" and self.status not in (204, 304) \
                and self.status >= 200:
            # Agent takes the framing off; the client gets the same length back.
            self.headers.setRawHeaders(b"content-length", [str(length).encode()])
        self._reactor = reactor
        self._readTimeout = readTimeout
        self._response = response
        self._chunks: deque[bytes] = deque()
        self._end: Failure | None = None
        self._waiting: Deferred[None] | None = None
        self._paused = False
        self._discarded = False
        response.deliverBody(self)

    def dataReceived(self, data: bytes) -> None:
        if self._discarded:
            return
        self._chunks.append(data)
        transport: Any = self.transport
        if len(self._chunks) >= self.HIGH_WATER and not self._paused and transport:
            self._paused = True
            transport.pauseProducing()
        self._wake()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._end = reason or Failure(ResponseDone())
        self._wake()

    def _wake(self) -> None:
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.callback(None)

    async def nextChunk(self) -> bytes | None:
        """The next chunk; None at a complete end; raises if the body was cut short."""
        while not self._chunks:
            if self._end is not None:
                if self._end.check(ResponseDone, PotentialDataLoss, HTTPPotentialDataLoss):
                    return None
                self._end.raiseException()
            waiting: Deferred[None] = Deferred()
            self._waiting = waiting
            if self._reactor is not None:
                waiting.addTimeout(self._readTimeout, self._reactor)
            await waiting
        data = self._chunks.popleft()
        transport: Any = self.transport
        if self._paused and len(self._chunks) <= 1 and transport:
            self._paused = False
            transport.resumeProducing()
        return data

    async def readAll(self) -> bytes:
        """The whole body (Kong's ``response`` phase buffers it)."""
        chunks = []
        while (chunk := await self.nextChunk()) is not None:
            chunks.append(chunk)
        return b"".join(chunks)

    def discard(self) -> None:
        """Stop reading: the client is gone or the body is replaced."""
        self._discarded = True
        self._chunks.clear()
        transport: Any = self.transport
        if self._end is None and transport is not None:
            transport.stopProducing()


class _QuietClientFactory(_HTTP11ClientFactory):
    noisy = False


class Upstreams:
    """Calls services over one persistent connection pool (keep-alive upstream)."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = 128
        self.pool._factory = _QuietClientFactory  # one log line per upstream connection
                                                   # is too many for a gateway
        self._agents: dict[tuple[float, int], Agent] = {}

    def _agent(self, exchange: Exchange, service: Service) -> Agent:
        policy = exchange.runtime.policyFor(service)
        key = (service.connectTimeout / 1000, id(policy))
        agent = self._agents.get(key)
        if agent is None:
            if len(self._agents) > 1024:
                self._agents.clear()
            agent = self._agents[key] = Agent(self.reactor, contextFactory=policy,
                                              connectTimeout=key[0], pool=self.pool)
        return agent

    def upstreamRequest(self, exchange: Exchange, host: str, port: int
                        ) -> tuple[bytes, bytes, Headers]:
        request = exchange.request
        route = exchange.route
        service = exchange.service
        assert route is not None and service is not None
        path = request.path.decode("latin-1")
        rest = path[len(exchange.matchedPrefix):] if route.stripPath else path
        upstreamPath = _joinPath(service.path, rest)
        query = request.uri.partition(b"?")[2]
        uri = upstreamPath.encode("latin-1") + (b"?" + query if query else b"")
        exchange.upstreamURI = uri.decode("latin-1")
        url = f"{service.protocol}://{_hostForURL(host)}:{port}".encode("ascii") + uri
        headers = _endToEnd(request.requestHeaders)
        headers.removeHeader(b"content-length")  # the body producer states it
        downstreamHost = request.getHeader("host")
        if not route.preserveHost:
            headers.removeHeader(b"host")
            default = 443 if service.protocol == "https" else 80
            # The service's host, unless set_target picked another host for a plain
            # service (an upstream's name stays the Host, as in Kong).
            if service.upstream is None and exchange.edits.target is not None:
                hostName, hostPort = host, port
            else:
                hostName, hostPort = service.host, service.port
            headers.setRawHeaders(b"host", [
                _hostForURL(hostName) + ("" if hostPort == default else f":{hostPort}")])
        client = request.getClientAddress().host
        forwarded = headers.getRawHeaders("x-forwarded-for", [])
        headers.setRawHeaders(b"x-forwarded-for", [", ".join([*forwarded, client])])
        headers.setRawHeaders(b"x-forwarded-proto",
                              [b"https" if request.isSecure() else b"http"])
        if downstreamHost:
            headers.setRawHeaders(b"x-forwarded-host", [downstreamHost.partition(":")[0]])
        headers.setRawHeaders(b"x-forwarded-port", [str(request.getHost().port)])
        headers.setRawHeaders(b"x-forwarded-path", [request.path])
        headers.setRawHeaders(b"x-real-ip", [client])
        for name in exchange.edits.clearHeaders:
            headers.removeHeader(name)
        for name, values in exchange.edits.setHeaders.items():
            headers.setRawHeaders(name, values)
        return request.method, url, headers

    def chooseTarget(self, exchange: Exchange, tried: list[Target]) -> Target | None:
        """The next target for a try: the upstream's balancer, or the service itself."""
        service = exchange.service
        assert service is not None
        if service.upstream is None:
            return Target(service.host, service.port)
        balancer = exchange.runtime.balancers[service.upstream.name]
        return balancer.pick(exclude=tried) or balancer.pick()

    def report(self, exchange: Exchange, target: Target, failure: AttemptFailure | None
               ) -> None:
        service = exchange.service
        if service is None or service.upstream is None:
            return
        balancer = exchange.runtime.balancers[service.upstream.name]
        if failure is None:
            balancer.succeeded(target)
        else:
            balancer.failed(target, failure.timeout)

    async def attemptTunnel(self, exchange: Exchange, host: str, port: int
                            ) -> OpenTunnel | AttemptFailure:
        """One try of an Upgrade request: connect, send its head, read the answer's."""
        service = exchange.service
        assert service is not None
        method, url, headers = self.upstreamRequest(exchange, host, port)
        request = exchange.request
        headers.setRawHeaders(b"connection", [b"Upgrade"])
        headers.setRawHeaders(b"upgrade", request.requestHeaders.getRawHeaders(b"upgrade", []))
        path = (exchange.upstreamURI or "/").encode("latin-1")
        head = b"%s %s HTTP/1.1\r\n" % (method, path) + b"".join(
            name + b": " + v + b"\r\n" for name, vs in headers.getAllRawHeaders() for v in vs
        ) + b"\r\n"
        creator = None
        if service.protocol == "https":
            creator = exchange.runtime.policyFor(service).creatorForNetloc(
                host.encode("idna"), port)
        exchange.upstreamStarted = time.time()
        try:
            tunnel = await openTunnel(self.reactor, host, port, creator,
                                      service.connectTimeout / 1000, head)
            answer = await tunnel.head.addTimeout(service.readTimeout / 1000, self.reactor)
            status, responseHeaders = parseHead(answer)
        except Exception as e:
            return _failed(exchange, url, e, timedOut=False)
        exchange.upstreamDone = time.time()
        return OpenTunnel(status, responseHeaders, tunnel)

    async def attempt(self, exchange: Exchange, host: str, port: int
                      ) -> UpstreamResponse | AttemptFailure:
        """One try: the response's headers, or why there are none."""
        service = exchange.service
        assert service is not None
        method, url, headers = self.upstreamRequest(exchange, host, port)
        request = exchange.request
        content = request.content
        assert content is not None
        body: Any
        if exchange.bodyStream is not None:
            body = exchange.bodyStream
        else:
            content.seek(0)
            body = FileBodyProducer(content) if exchange.requestSize or \
                method in (b"POST", b"PUT", b"PATCH") else None
        exchange.upstreamStarted = time.time()
        pending = self._agent(exchange, service).request(method, url, headers, body)
        # A client that goes away cancels the upstream request. (Not only before
        # pending fires: once connected it waits on the request's own Deferred, and
        # cancel() is forwarded to that.)
        whenClientGone(request, pending.cancel)
        timedOut: list[bool] = []

        def onTimeout() -> None:
            timedOut.append(True)
            pending.cancel()

        timer = self.reactor.callLater(
            (service.connectTimeout + service.writeTimeout + service.readTimeout) / 1000,
            onTimeout)
        try:
            response = await pending
        except Exception as e:
            failure = _failed(exchange, url, e, bool(timedOut))
            if exchange.bodyStream is not None and exchange.bodyStream.started:
                failure.retryable = False  # a streamed body cannot be sent again
            return failure
        finally:
            if timer.active():
                timer.cancel()
        exchange.upstreamDone = time.time()
        return UpstreamResponse(response, self.reactor, service.readTimeout / 1000)


def _failed(exchange: Exchange, url: bytes, error: Exception, timedOut: bool
            ) -> AttemptFailure:
    """Kong's answer for a try that got no response: 504 for timeouts, else 502.

    Only failures to connect are worth another try: nothing reached the upstream.
    """
    exchange.upstreamDone = time.time()
    if timedOut or isinstance(error, (TimeoutError, DeferredTimeoutError)):
        return AttemptFailure(messageResponse(504, TIMEOUT), retryable=False, timeout=True)
    if not clientGone(exchange.request):  # a client that left cancelled it: no news
        log.warn("upstream {url} failed: {error}", url=url.decode("latin-1"), error=error)
    connectFailure = isinstance(error, (ConnectError, DNSLookupError))
    return AttemptFailure(messageResponse(502, BAD_GATEWAY), retryable=connectFailure,
                          timeout=False)


def whenClientGone(request: Any, onGone: Callable[[], object]) -> None:
    """Call C{onGone} when the client disconnects, or now if it already has.

    (C{notifyFinish} never fires for a request whose client left before it was asked.)
    """
    if clientGone(request):
        onGone()
    elif isinstance(request, DownstreamRequest):
        request.whenGone(onGone)
    else:
        request.notifyFinish().addErrback(lambda reason: onGone())


def clientGone(request: Any) -> bool:
    return bool(getattr(request, "_disconnected", False))


def _hostForURL(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _joinPath(base: str, rest: str) -> str:
    if not rest:
        return base or "/"
    if base.endswith("/") and rest.startswith("/"):
        return base + rest[1:]
    if not base.endswith("/") and not rest.startswith("/"):
        return base + "/" + rest
    return base + rest


@implementer(IPushProducer)
class Downstream:
    """Writes the response to the client and tells when the client has gone."""

    def __init__(self, request: Request, exchange: Exchange) -> None:
        self._request = request
        self._exchange = exchange
        self.gone = False
        self._paused: Deferred[None] | None = None
        self._producing = False
        whenClientGone(request, self._clientGone)

    def _clientGone(self) -> None:
        self.gone = True
        self.resumeProducing()

    async def writable(self) -> None:
        """Wait while the client's transport is full (real backpressure)."""
        if self._paused is not None:
            await self._paused

    def sendHeaders(self, status: int, headers: Headers) -> None:
        request = self._request
        request.setResponseCode(status)
        if isinstance(request, DownstreamRequest):
            if not headers.hasHeader(b"server"):
                headers.setRawHeaders(b"server", [SERVER])
            request.responseHeaders = headers  # written out as they are, no copy
            return
        request.defaultContentType = None
        if not headers.hasHeader(b"server"):
            request.responseHeaders.setRawHeaders(b"server", [SERVER])
        for name, values in headers.getAllRawHeaders():
            request.responseHeaders.setRawHeaders(name, list(values))

    def write(self, data: bytes) -> None:
        if data and not self.gone:
            self._exchange.bytesSent += len(data)
            self._request.write(data)

    def streaming(self) -> None:
        """From now on the transport tells us when the client cannot keep up."""
        if not self._producing and not self.gone:
            self._producing = True
            self._request.registerProducer(self, True)

    def _stopStreaming(self) -> None:
        if self._producing:
            self._producing = False
            self._request.unregisterProducer()

    def finish(self) -> None:
        if not self.gone:
            self._stopStreaming()
            self._request.finish()

    def abort(self) -> None:
        if self.gone:
            return
        self.gone = True
        self._stopStreaming()
        channel = self._request.channel
        transport = getattr(channel, "transport", None)
        target = transport if transport is not None else channel
        abort = getattr(target, "abortConnection", None) or target.loseConnection
        abort()

    def pauseProducing(self) -> None:
        if self._paused is None:
            self._paused = Deferred()

    def resumeProducing(self) -> None:
        paused, self._paused = self._paused, None
        if paused is not None:
            paused.callback(None)

    def stopProducing(self) -> None:
        self.gone = True
        self.resumeProducing()


class RequestServer:
    """Each request (HTTP/1.1 from L{kongtls.http1}, or an HTTP/2 stream) becomes an
    L{Exchange} driven by a L{PhaseTracker} under the configuration current then."""

    def __init__(self, currentRuntime: Callable[[], Runtime], upstreams: Upstreams) -> None:
        self._currentRuntime = currentRuntime
        self._upstreams = upstreams

    def __call__(self, request: Any) -> None:
        exchange = Exchange(request, self._currentRuntime(), connectionOf(request))
        tracker = PhaseTracker(exchange, self._upstreams, Downstream(request, exchange))
        done = tracker.run()
        done.addErrback(lambda f: log.failure("request failed", f))


class GatewayResource(Resource):
    """twisted.web's side, for HTTP/2 streams: every path goes to the L{RequestServer}."""

    isLeaf = True

    def __init__(self, serve: RequestServer) -> None:
        super().__init__()
        self._serve = serve

    def render(self, request: Request) -> Any:
        self._serve(request)
        return NOT_DONE_YET
