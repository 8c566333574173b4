"""HTTP/1.1 (and HTTP/2) requests in, upstream HTTP requests out.

L{GatewayResource} takes every request, L{Upstreams} makes the upstream call through
a persistent connection pool, L{UpstreamResponse} hands its body over chunk by chunk
(pausing the upstream when the client is slower), and L{Downstream} writes the client's
response.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.error import ConnectError, DNSLookupError, TimeoutError
from twisted.logger import Logger
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from kongtls import __version__
from kongtls.config import Target
from kongtls.exchange import Exchange, messageResponse
from kongtls.http1 import DownstreamRequest, HTTP1Channel
from kongtls.pdk import stripPort
from kongtls.phase_tracker import PhaseTracker
from kongtls.proxy_types import AttemptFailure, OpenTunnel
from kongtls.tunnel import openTunnel, parseHead
from kongtls.upstream_client import (
    HOP_BY_HOP,
    Timeouts,
    UpstreamPool,
    UpstreamResponse,
    requestHead,
)

if TYPE_CHECKING:
    from twisted.web.server import Request

    from kongtls.connection import ConnectionTLS
    from kongtls.runtime import Runtime

from twisted.internet.interfaces import IPushProducer

log = Logger(namespace="kongtls.proxy")

SERVER = f"kongtls/{__version__}".encode("ascii")

BAD_GATEWAY = "An invalid response was received from the upstream server"
TIMEOUT = "The upstream server is timing out"


def _endToEnd(headers: Headers) -> Headers:
    """A copy without hop-by-hop fields, nor those the Connection field names."""
    named: Collection[bytes] = HOP_BY_HOP
    listed = headers._rawHeaders.get(b"Connection")
    if listed:
        named = set(HOP_BY_HOP)
        for value in listed:
            named.update(t.strip().lower() for t in value.split(b",") if t.strip())
    copy = Headers()
    raw = copy._rawHeaders  # names already canonical, values already checked
    for name, values in headers.getAllRawHeaders():
        if name.lower() not in named:
            raw[name] = list(values)
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


class Upstreams:
    """Calls services over one persistent connection pool (keep-alive upstream)."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.pool = UpstreamPool(reactor)

    def upstreamRequest(self, exchange: Exchange, host: str, port: int
                        ) -> tuple[bytes, bytes, Headers]:
        """The method, request-target and headers of the request to send upstream."""
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
        headers = _endToEnd(request.requestHeaders)
        raw = headers._rawHeaders  # canonical names; values checked on the way in
        raw.pop(b"Content-Length", None)  # the body producer states it
        # From the request itself: a Connection field naming Host does not remove it.
        hosts = request.requestHeaders._rawHeaders.get(b"Host")
        downstreamHost = hosts[-1] if hosts else None
        default = 443 if service.protocol == "https" else 80
        if not route.preserveHost:
            # The service's host, unless set_target picked another host for a plain
            # service (an upstream's name stays the Host, as in Kong).
            if service.upstream is None and exchange.edits.target is not None:
                hostName, hostPort = host, port
            else:
                hostName, hostPort = service.host, service.port
            raw[b"Host"] = [_hostField(hostName, hostPort, default)]
        elif downstreamHost:
            raw[b"Host"] = [downstreamHost]
        else:  # an HTTP/1.0 client without one: HTTP/1.1 needs it
            raw[b"Host"] = [_hostField(host, port, default)]
        client = _clientIP(request)
        forwarded = raw.get(b"X-Forwarded-For")
        raw[b"X-Forwarded-For"] = [b", ".join([*forwarded, client]) if forwarded
                                   else client]
        raw[b"X-Forwarded-Proto"] = [b"https" if request.isSecure() else b"http"]
        if downstreamHost:
            raw[b"X-Forwarded-Host"] = [
                stripPort(downstreamHost.decode("latin-1")).encode("latin-1")]
        raw[b"X-Forwarded-Port"] = [b"%d" % request.getHost().port]
        raw[b"X-Forwarded-Path"] = [request.path]
        raw[b"X-Real-Ip"] = [client]
        for name in exchange.edits.clearHeaders:
            headers.removeHeader(name)
        for name, values in exchange.edits.setHeaders.items():
            headers.setRawHeaders(name, values)
        return request.method, uri, headers

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
        method, target, headers = self.upstreamRequest(exchange, host, port)
        request = exchange.request
        headers.setRawHeaders(b"connection", [b"Upgrade"])
        headers.setRawHeaders(b"upgrade", request.requestHeaders.getRawHeaders(b"upgrade", []))
        head = requestHead(method, target, headers)
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
            return _failed(exchange, host, port, e)
        exchange.upstreamDone = time.time()
        return OpenTunnel(status, responseHeaders, tunnel)

    async def attempt(self, exchange: Exchange, host: str, port: int
                      ) -> UpstreamResponse | AttemptFailure:
        """One try: the response's headers, or why there are none."""
        service = exchange.service
        assert service is not None
        method, target, headers = self.upstreamRequest(exchange, host, port)
        request = exchange.request
        body: Any = exchange.bodyStream
        if body is None:
            content = request.content
            assert content is not None
            if exchange.requestSize:
                content.seek(0)
                body = content.read()
        tls = None
        if service.protocol == "https":
            tls = exchange.runtime.policyFor(service)
        exchange.upstreamStarted = time.time()
        call = self.pool.request(host, port, tls, method, target, headers, body, Timeouts(
            service.connectTimeout / 1000, service.writeTimeout / 1000,
            service.readTimeout / 1000))
        # A client that goes away before the head arrives drops the upstream connection.
        whenClientGone(request, call.cancel)
        try:
            response = await call.response
        except Exception as e:
            failure = _failed(exchange, host, port, e)
            if exchange.bodyStream is not None and exchange.bodyStream.started:
                failure.retryable = False  # a streamed body cannot be sent again
            return failure
        exchange.upstreamDone = time.time()
        return response


def _failed(exchange: Exchange, host: str, port: int, error: Exception) -> AttemptFailure:
    """Kong's answer for a try that got no response: 504 for timeouts, else 502.

    Only failures to connect are worth another try: nothing reached the upstream.
    """
    exchange.upstreamDone = time.time()
    if isinstance(error, (TimeoutError, DeferredTimeoutError)):
        return AttemptFailure(messageResponse(504, TIMEOUT), retryable=False, timeout=True)
    if not clientGone(exchange.request):  # a client that left cancelled it: no news
        service = exchange.service
        scheme = service.protocol if service is not None else "http"
        log.warn("upstream {url} failed: {error}", error=error,
                 url=f"{scheme}://{_hostForURL(host)}:{port}{exchange.upstreamURI or ''}")
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


@lru_cache(maxsize=1024)
def _hostField(host: str, port: int, default: int) -> bytes:
    """A Host field's value: the host, with its port unless the scheme's default."""
    value = _hostForURL(host) if port == default else f"{_hostForURL(host)}:{port}"
    return value.encode("utf-8")


def _clientIP(request: Any) -> bytes:
    """The client's address, as Kong's X-Forwarded-For and X-Real-IP give it."""
    channel = request.channel
    if isinstance(channel, HTTP1Channel):
        return channel.peerIP()
    return request.getClientAddress().host.encode("ascii")


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
            raw = headers._rawHeaders
            if b"Server" not in raw:
                raw[b"Server"] = [SERVER]
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
            if isinstance(self._request, DownstreamRequest):
                self._request.sendStalledSince = time.monotonic()

    def resumeProducing(self) -> None:
        if isinstance(self._request, DownstreamRequest):
            self._request.sendStalledSince = None
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
