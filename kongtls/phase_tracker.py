"""The PhaseTracker: one request's way through rewrite, access, balancer, the upstream,
header_filter, body_filter and log, as a chain of Deferreds.

Handlers may return a plain value, a Deferred, or be ``async def``. A handler that
raises gives the client Kong's 500 (logged with its traceback); log still runs.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Generator, Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers

from kongtls.exchange import Exchange, ShortCircuit, messageResponse
from kongtls.pdk import Kong, requestHost
from kongtls.phases import Phase
from kongtls.plugins import PluginSet
from kongtls.proxy_types import AttemptFailure, OpenTunnel
from kongtls.serializer import serialize
from kongtls.tunnel import formatHead, isUpgrade, switchDownstream

if TYPE_CHECKING:
    from kongtls.config import Target
    from kongtls.proxy import Downstream, UpstreamResponse, Upstreams

log = Logger(namespace="kongtls.phases")

NO_ROUTE = "no Route matched with those values"
NO_TARGET = "failure to get a peer from the ring-balancer"
UNEXPECTED = "An unexpected error occurred"


class _Complete:
    """An awaitable that is already done: what a phase with no handlers gives."""

    def __await__(self) -> Generator[Any, None, None]:
        return iter(())  # type: ignore[return-value]


_NOTHING = _Complete()


class PhaseTracker:
    """Runs one L{Exchange} through Kong's request phases."""

    def __init__(self, exchange: Exchange, upstreams: Upstreams,
                 downstream: Downstream) -> None:
        self.exchange = exchange
        self.kong = Kong(exchange.connection, exchange)
        self._upstreams = upstreams
        self._downstream = downstream
        self._plugins: PluginSet = exchange.runtime.plan.globals
        self._upgrade = isUpgrade(exchange.request)
        self._tunnel: OpenTunnel | None = None

    def run(self) -> Deferred[None]:
        """Fires when the response is sent and the log phase has run."""
        return Deferred.fromCoroutine(self._run())

    def _runPhase(self, phase: Phase, plugins: PluginSet) -> Awaitable[None]:
        self.exchange.phase = phase
        handlers = plugins.handlers(phase)
        if not handlers:
            return _NOTHING  # no coroutine to make and run for a phase with no handlers
        return self._runHandlers(phase, handlers)

    async def _runHandlers(self, phase: Phase, handlers: Sequence[Any]) -> None:
        exchange = self.exchange
        kong = self.kong
        stopOnExit = phase in (Phase.rewrite, Phase.access)
        for bound, method in handlers:
            kong.currentPlugin = bound.name
            result = method(kong, bound.conf)
            if inspect.isawaitable(result):
                await result
            if stopOnExit and exchange.exit is not None:
                break
        kong.currentPlugin = None

    def _fail(self, phase: Phase | None, failure: Failure) -> None:
        log.failure("plugin error in {phase} phase for {method} {uri}", failure,
                    phase=phase.name if phase else "?",
                    method=self.exchange.request.method.decode("ascii", "replace"),
                    uri=self.exchange.request.uri.decode("latin-1"))

    async def _run(self) -> None:
        exchange = self.exchange
        upstream: UpstreamResponse | None = None
        try:
            await self._runPhase(Phase.rewrite, self._plugins)
            if exchange.exit is None:
                self._route()
            if exchange.exit is None:
                await self._runPhase(Phase.access, self._plugins)
            if exchange.exit is None:
                upstream = await self._proxy()
            if upstream is not None:
                exchange.upstreamStatus = upstream.status
                exchange.upstreamHeaders = upstream.headers
                if self._plugins.defines(Phase.response):
                    await self._responsePhase(upstream)
                    upstream = None
        except Exception:
            self._fail(exchange.phase, Failure())
            exchange.exit = messageResponse(500, UNEXPECTED)
            upstream = None
        try:
            if self._tunnel is not None:
                await self._switch(self._tunnel)
            else:
                await self._respond(upstream)
        finally:
            exchange.finishedAt = time.time()
            await self._log()

    async def _switch(self, opened: OpenTunnel) -> None:
        """The upstream answered an Upgrade: header_filter, then bytes both ways."""
        exchange = self.exchange
        tunnel = opened.tunnel
        exchange.upstreamStatus = opened.status
        exchange.upstreamHeaders = opened.headers
        self._applyHeaders(opened.status, opened.headers.copy())
        try:
            await self._runPhase(Phase.header_filter, self._plugins)
        except Exception:
            self._fail(Phase.header_filter, Failure())
            tunnel.transport.loseConnection()
            raise
        status = exchange.responseStatus or opened.status
        exchange.headersSent = True
        switchDownstream(exchange.request, formatHead(status, exchange.responseHeaders),
                         tunnel)
        await tunnel.closed

    async def _responsePhase(self, upstream: UpstreamResponse) -> None:
        """Kong's ``response`` phase: handlers see (and may replace) the whole body."""
        exchange = self.exchange
        exchange.bufferedBody = await upstream.readAll()
        exchange.responseStatus = upstream.status
        exchange.responseHeaders = upstream.headers.copy()
        await self._runPhase(Phase.response, self._plugins)
        if exchange.exit is None:
            headers = exchange.responseHeaders
            headers.removeHeader(b"content-length")
            exchange.exit = ShortCircuit(
                exchange.responseStatus or upstream.status, exchange.bufferedBody or b"",
                [(k.decode("latin-1"), v.decode("latin-1"))
                 for k, vs in headers.getAllRawHeaders() for v in vs])
        exchange.responseStatus = None
        exchange.responseHeaders = Headers()

    async def _proxy(self) -> UpstreamResponse | None:
        """Balancer then the upstream call, once per try (Kong's ``retries``)."""
        exchange = self.exchange
        service = exchange.service
        assert service is not None
        tried: list[Target] = []
        for attempt in range(service.retries + 1):
            target = self._upstreams.chooseTarget(exchange, tried)
            if target is None:
                exchange.exit = messageResponse(503, NO_TARGET)
                return None
            tried.append(target)
            exchange.tries.append(target)
            await self._runPhase(Phase.balancer, self._plugins)
            exchange.phase = None
            host, port = exchange.edits.target or (target.host, target.port)
            answer: UpstreamResponse | OpenTunnel | AttemptFailure
            if self._upgrade:
                answer = await self._upstreams.attemptTunnel(exchange, host, port)
            else:
                answer = await self._upstreams.attempt(exchange, host, port)
            if isinstance(answer, OpenTunnel):
                self._upstreams.report(exchange, target, None)
                self._tunnel = answer
                return None
            if not isinstance(answer, AttemptFailure):
                self._upstreams.report(exchange, target, None)
                return answer
            self._upstreams.report(exchange, target, answer)
            if not answer.retryable or attempt == service.retries:
                exchange.exit = answer.response
                return None
        return None

    def _route(self) -> None:
        exchange = self.exchange
        request = exchange.request
        host = requestHost(request)
        path = request.path.decode("latin-1")
        sni = exchange.connection.sni if exchange.connection is not None else None
        matched = exchange.runtime.router.match(host, path, sni,
                                                request.method.decode("ascii", "replace"))
        if matched is None:
            exchange.exit = messageResponse(404, NO_ROUTE)
            return
        exchange.route, exchange.matchedPrefix = matched
        exchange.service = exchange.route.service
        self._plugins = exchange.runtime.plan.forRoute(exchange.route)

    def _applyHeaders(self, status: int, headers: Headers) -> None:
        exchange = self.exchange
        exchange.responseStatus = exchange.responseStatus or status
        exchange.responseHeaders = headers
        for name, value in exchange.pendingResponseHeaders:
            if value is None:
                headers.removeHeader(name)
            else:
                headers.setRawHeaders(name, [value])

    async def _headerFilter(self, upstream: UpstreamResponse | None) -> UpstreamResponse | None:
        """Run header_filter; an exit there replaces the response, an error gives 500."""
        exchange = self.exchange
        short = exchange.exit
        if upstream is not None:
            self._applyHeaders(upstream.status, upstream.headers)
        elif short is not None:
            self._applyHeaders(short.status, _headersOf(short))
            exchange.responseStatus = short.status
        try:
            await self._runPhase(Phase.header_filter, self._plugins)
        except Exception:
            self._fail(Phase.header_filter, Failure())
            exchange.exit = messageResponse(500, UNEXPECTED)
        if exchange.exit is not short and exchange.exit is not None:
            # A new exit (from header_filter, or its failure) replaces the response.
            if upstream is not None:
                upstream.discard()
                upstream = None
            replacement = exchange.exit
            exchange.responseStatus = replacement.status
            exchange.responseHeaders = _headersOf(replacement)
        if self._plugins.defines(Phase.body_filter):
            exchange.responseHeaders.removeHeader("content-length")
        return upstream

    async def _filterChunk(self, chunk: bytes, eof: bool) -> bytes:
        exchange = self.exchange
        exchange.chunk, exchange.eof = chunk, eof
        try:
            await self._runPhase(Phase.body_filter, self._plugins)
        except Exception:
            self._fail(Phase.body_filter, Failure())
            raise
        return exchange.chunk

    async def _respond(self, upstream: UpstreamResponse | None) -> None:
        exchange = self.exchange
        downstream = self._downstream
        upstream = await self._headerFilter(upstream)
        assert exchange.responseStatus is not None
        downstream.sendHeaders(exchange.responseStatus, exchange.responseHeaders)
        exchange.headersSent = True
        filtering = self._plugins.defines(Phase.body_filter)
        try:
            if upstream is None:
                assert exchange.exit is not None
                body = exchange.exit.body
                if filtering:
                    body = await self._filterChunk(body, True)
                downstream.write(body)
            elif not filtering and (whole := upstream.bodyIfComplete()) is not None:
                downstream.write(whole)  # all in already: no producer, no pulling
            else:
                downstream.streaming()
                while True:
                    await downstream.writable()
                    if downstream.gone:
                        upstream.discard()
                        return
                    chunk = await upstream.nextChunk()
                    if chunk is None:
                        break
                    if filtering:
                        chunk = await self._filterChunk(chunk, False)
                    downstream.write(chunk)
                    if downstream.gone:
                        upstream.discard()
                        return
                if filtering:
                    downstream.write(await self._filterChunk(b"", True))
        except Exception:
            # Headers are out: the client must not take a short body for a whole one.
            if upstream is not None:
                upstream.discard()
            downstream.abort()
            return
        downstream.finish()

    async def _log(self) -> None:
        try:
            await self._runPhase(Phase.log, self._plugins)
        except Exception:
            self._fail(Phase.log, Failure())
        accessLog = self.exchange.runtime.accessLog
        if accessLog is not None:
            try:
                accessLog.write(serialize(self.exchange))
            except Exception:
                self._fail(Phase.log, Failure())
        self.exchange.phase = None


def _headersOf(short: ShortCircuit) -> Headers:
    headers = Headers()
    for name, value in short.headers:
        headers.addRawHeader(name, value)
    return headers
