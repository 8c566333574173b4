"""The plugin development kit: the ``kong`` object handed to every handler.

Each function checks its phase against Kong's sets (see L{kongtls.phases}); a wrong
phase raises L{kongtls.PhaseError} with Kong's text.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol

from twisted.logger import Logger

from kongtls import phases as P
from kongtls.client_tls import KongClientTLS
from kongtls.exchange import JSON_TYPE, Exchange, ShortCircuit, encodeBody
from kongtls.phases import Phase
from kongtls.web import headerTable

if TYPE_CHECKING:
    from kongtls.connection import ConnectionTLS


class PhaseSource(Protocol):
    """What the PDK parts read the current phase (and verify override) from."""

    @property
    def phase(self) -> Phase | None: ...

    def setClientVerify(self, value: str) -> None: ...


def _need(exchange: Exchange | None) -> Exchange:
    # Phase checks run first, so a request phase always has its exchange.
    assert exchange is not None
    return exchange


class KongClient:
    """``kong.client``."""

    def __init__(self, kong: Kong) -> None:
        self._kong = kong
        self.tls = KongClientTLS(kong, kong._connection)

    def _peer(self) -> Any:
        kong = self._kong
        if kong._exchange is not None:
            return kong._exchange.request.getClientAddress()
        conn = kong._connection
        transport = getattr(conn.protocol, "transport", None) if conn else None
        return transport.getPeer() if transport is not None else None

    def get_ip(self) -> str | None:
        """The address of the client that opened this connection."""
        P.NOT_INIT_WORKER.check(self._kong.phase)
        return getattr(self._peer(), "host", None)

    def get_port(self) -> int | None:
        P.NOT_INIT_WORKER.check(self._kong.phase)
        return getattr(self._peer(), "port", None)


class KongRequest:
    """``kong.request``: the client's request, as received."""

    def __init__(self, kong: Kong) -> None:
        self._kong = kong

    def _request(self) -> Any:
        P.REQUEST.check(self._kong.phase)
        return _need(self._kong._exchange).request

    def get_scheme(self) -> str:
        return "https" if self._request().isSecure() else "http"

    def get_host(self) -> str:
        return requestHost(self._request())

    def get_port(self) -> int:
        return int(self._request().getHost().port)

    def get_method(self) -> str:
        return str(self._request().method.decode("ascii"))

    def get_path(self) -> str:
        return str(self._request().path.decode("latin-1"))

    def get_raw_query(self) -> str:
        uri: bytes = self._request().uri
        return uri.partition(b"?")[2].decode("latin-1")

    def get_header(self, name: str) -> str | None:
        values = self._request().requestHeaders.getRawHeaders(name)
        return values[0] if values else None

    def get_headers(self) -> dict[str, str | list[str]]:
        """Header names lower-cased; a repeated header gives a list, as in Kong."""
        return headerTable(self._request().requestHeaders)

    def get_raw_body(self) -> bytes | None:
        """The request body; None when it is large enough to stream to the upstream."""
        request = self._request()
        if getattr(request, "bodyStream", None) is not None:
            return None
        content = request.content
        content.seek(0)
        data: bytes = content.read()
        content.seek(0)
        return data


class KongResponse:
    """``kong.response``: the response the client will get."""

    def __init__(self, kong: Kong) -> None:
        self._kong = kong

    def _exchange(self, allowed: P.PhaseSet) -> Exchange:
        allowed.check(self._kong.phase)
        exchange = _need(self._kong._exchange)
        return exchange

    def exit(self, status: int, body: object = None,
             headers: Mapping[str, str] | None = None) -> None:
        """End the request with this response; later rewrite/access work is skipped."""
        exchange = self._exchange(P.REWRITE_ACCESS_HEADER)
        if exchange.headersSent:
            raise RuntimeError("headers have already been sent")
        if not isinstance(status, int) or not 100 <= status <= 599:
            raise ValueError(f"code must be a number between 100 and 599, got {status!r}")
        data, ctype = encodeBody(body)
        pairs = [(str(k), str(v)) for k, v in (headers or {}).items()]
        if ctype and not any(k.lower() == "content-type" for k, _ in pairs):
            pairs.append(("Content-Type", ctype))
        exchange.exit = ShortCircuit(status, data, pairs)

    def error(self, status: int, message: str | None = None,
              headers: Mapping[str, str] | None = None) -> None:
        """Kong's ``kong.response.error``: an exit with Kong's JSON message body."""
        self.exit(status, {"message": message or _DEFAULT_MESSAGES.get(status, "")},
                  {"Content-Type": JSON_TYPE, **(headers or {})})

    def set_header(self, name: str, value: str) -> None:
        exchange = self._exchange(P.REWRITE_ACCESS_HEADER)
        if exchange.headersSent:
            raise RuntimeError("headers have already been sent")
        if exchange.phase in _DIRECT_HEADERS:
            exchange.responseHeaders.setRawHeaders(name, [str(value)])
        else:
            exchange.pendingResponseHeaders.append((name, str(value)))

    def clear_header(self, name: str) -> None:
        exchange = self._exchange(P.REWRITE_ACCESS_HEADER)
        if exchange.phase in _DIRECT_HEADERS:
            exchange.responseHeaders.removeHeader(name)
        else:
            exchange.pendingResponseHeaders.append((name, None))

    def set_status(self, status: int) -> None:
        exchange = self._exchange(P.REWRITE_ACCESS_HEADER)
        if exchange.headersSent:
            raise RuntimeError("headers have already been sent")
        exchange.responseStatus = int(status)

    def get_status(self) -> int | None:
        return self._exchange(P.HEADER_BODY_LOG).responseStatus

    def get_header(self, name: str) -> str | None:
        values = self._exchange(P.HEADER_BODY_LOG).responseHeaders.getRawHeaders(name)
        return values[0] if values else None

    def get_headers(self) -> dict[str, str | list[str]]:
        return headerTable(self._exchange(P.HEADER_BODY_LOG).responseHeaders)

    def set_raw_body(self, body: bytes) -> None:
        """In the response phase: send C{body} instead of the upstream's."""
        exchange = self._exchange(_RESPONSE)
        if not isinstance(body, bytes):
            raise TypeError("set_raw_body expects bytes")
        exchange.bufferedBody = body

    # body_filter: the current chunk (a kongtls addition; Kong uses ngx.arg)
    def get_chunk(self) -> tuple[bytes, bool]:
        """In body_filter: this chunk of the response body, and whether it is the last."""
        exchange = self._exchange(_BODY_FILTER)
        return exchange.chunk, exchange.eof

    def set_chunk(self, data: bytes) -> None:
        """In body_filter: send C{data} instead of the current chunk."""
        exchange = self._exchange(_BODY_FILTER)
        if not isinstance(data, bytes):
            raise TypeError("set_chunk expects bytes")
        exchange.chunk = data


_BODY_FILTER = P.phases(Phase.body_filter)
#: Phases where the response's headers exist and are changed in place.
_DIRECT_HEADERS = (Phase.header_filter, Phase.response)
_DEFAULT_MESSAGES = {400: "Bad request", 401: "Unauthorized", 403: "Forbidden",
                     404: "Not found", 405: "Method not allowed", 500:
                     "An unexpected error occurred", 502: "An invalid response was "
                     "received from the upstream server", 503: "Service unavailable",
                     504: "The upstream server is timing out"}


_RESPONSE = P.phases(Phase.response)


class KongServiceResponse:
    """``kong.service.response``: the response as the upstream sent it."""

    def __init__(self, kong: Kong) -> None:
        self._kong = kong

    def _exchange(self, allowed: P.PhaseSet) -> Exchange:
        allowed.check(self._kong.phase)
        return _need(self._kong._exchange)

    def get_status(self) -> int | None:
        return self._exchange(P.HEADER_BODY_LOG).upstreamStatus

    def get_header(self, name: str) -> str | None:
        headers = self._exchange(P.HEADER_BODY_LOG).upstreamHeaders
        values = headers.getRawHeaders(name) if headers is not None else None
        return values[0] if values else None

    def get_headers(self) -> dict[str, str | list[str]]:
        headers = self._exchange(P.HEADER_BODY_LOG).upstreamHeaders
        return headerTable(headers) if headers is not None else {}

    def get_raw_body(self) -> bytes:
        """In the response phase: the whole upstream body."""
        return self._exchange(_RESPONSE).bufferedBody or b""


class KongServiceRequest:
    """``kong.service.request``: the request the upstream will get."""

    def __init__(self, kong: Kong) -> None:
        self._kong = kong

    def set_header(self, name: str, value: str) -> None:
        P.ACCESS_REWRITE_BALANCER.check(self._kong.phase)
        edits = _need(self._kong._exchange).edits
        edits.clearHeaders.discard(name.lower())
        edits.setHeaders[name.lower()] = [str(value)]

    def clear_header(self, name: str) -> None:
        P.ACCESS_AND_REWRITE.check(self._kong.phase)
        edits = _need(self._kong._exchange).edits
        edits.setHeaders.pop(name.lower(), None)
        edits.clearHeaders.add(name.lower())


class KongService:
    """``kong.service``."""

    def __init__(self, kong: Kong) -> None:
        self._kong = kong
        self.request = KongServiceRequest(kong)
        self.response = KongServiceResponse(kong)

    def set_target(self, host: str, port: int) -> None:
        """Send this request to C{host}:C{port} instead of the service's own."""
        P.REWRITE_ACCESS_BALANCER_PREREAD.check(self._kong.phase)
        if not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError("port must be an integer between 0 and 65535")
        _need(self._kong._exchange).edits.target = (host, port)


class KongCtx:
    """``kong.ctx``: per-request tables (per-handshake in the handshake phases)."""

    def __init__(self, kong: Kong) -> None:
        self._kong = kong
        self._handshakeShared: dict[str, Any] = {}
        self._handshakePlugin: dict[str, dict[str, Any]] = {}

    @property
    def shared(self) -> dict[str, Any]:
        exchange = self._kong._exchange
        return exchange.shared if exchange is not None else self._handshakeShared

    @property
    def plugin(self) -> dict[str, Any]:
        name = self._kong.currentPlugin or ""
        exchange = self._kong._exchange
        if exchange is not None:
            return exchange.pluginContext(name)
        return self._handshakePlugin.setdefault(name, {})


class KongLog:
    """``kong.log``: leveled logging through twisted.logger, tagged with the plugin."""

    def __init__(self, kong: Kong) -> None:
        self._kong = kong
        self._logger = Logger(namespace="kongtls.plugin")

    def _emit(self, level: str, parts: tuple[object, ...]) -> None:
        text = " ".join(str(p) for p in parts)
        getattr(self._logger, level)("[{plugin}] {text}", plugin=self._kong.currentPlugin,
                                     text=text)

    def debug(self, *parts: object) -> None:
        self._emit("debug", parts)

    def info(self, *parts: object) -> None:
        self._emit("info", parts)

    def notice(self, *parts: object) -> None:
        self._emit("info", parts)

    def warn(self, *parts: object) -> None:
        self._emit("warn", parts)

    def err(self, *parts: object) -> None:
        self._emit("error", parts)

    def crit(self, *parts: object) -> None:
        self._emit("critical", parts)

    def serialize(self) -> dict[str, Any]:
        """Kong's log serializer: what happened to this request, as a table."""
        from kongtls.serializer import serialize

        P.LOG_ONLY.check(self._kong.phase)
        return serialize(_need(self._kong._exchange))


class Kong:
    """The PDK for one handshake or one request: ``kong`` in every handler."""

    def __init__(self, connection: ConnectionTLS | None,
                 exchange: Exchange | None = None, phase: Phase | None = None) -> None:
        self._connection = connection
        self._exchange = exchange
        self._phase = phase
        self.currentPlugin: str | None = None

    # The namespaces are made when first used: a handshake phase typically needs one.
    @cached_property
    def client(self) -> KongClient:
        return KongClient(self)

    @cached_property
    def request(self) -> KongRequest:
        return KongRequest(self)

    @cached_property
    def response(self) -> KongResponse:
        return KongResponse(self)

    @cached_property
    def service(self) -> KongService:
        return KongService(self)

    @cached_property
    def ctx(self) -> KongCtx:
        return KongCtx(self)

    @cached_property
    def log(self) -> KongLog:
        return KongLog(self)

    @property
    def phase(self) -> Phase | None:
        if self._exchange is not None:
            return self._exchange.phase
        return self._phase

    @phase.setter
    def phase(self, value: Phase | None) -> None:
        if self._exchange is not None:
            self._exchange.phase = value
        else:
            self._phase = value

    def setClientVerify(self, value: str) -> None:
        _need(self._exchange).clientVerifyOverride = value


def requestHost(request: Any) -> str:
    """The Host header's name, lower-cased, without its port (Kong's ``ngx.var.host``)."""
    hosts = request.requestHeaders._rawHeaders.get(b"Host")  # as getHeader, without
    host = hosts[-1].decode("latin-1") if hosts else ""     # a str lookup per request
    return stripPort(host).lower() or str(request.getHost().host)


def stripPort(host: str) -> str:
    """A Host field's name without its port (an IPv6 literal keeps its brackets)."""
    if host.startswith("["):
        return host.partition("]")[0] + "]"
    return host.partition(":")[0]
