"""Kong's log serializer (``kong.log.serialize()``) for one finished request."""

from __future__ import annotations

import time
from typing import Any

from kongtls.exchange import Exchange
from kongtls.web import headerTable

_REDACTED = frozenset({"authorization", "proxy-authorization"})


def tlsInfo(exchange: Exchange) -> dict[str, str | None] | None:
    conn = exchange.connection
    if conn is None:
        return None
    return {
        "version": conn.version,
        "cipher": conn.cipher,
        "client_verify": exchange.clientVerifyOverride or conn.clientVerify(),
    }


def serialize(exchange: Exchange) -> dict[str, Any]:
    request = exchange.request
    scheme = "https" if request.isSecure() else "http"
    host = request.getHeader("host") or request.getHost().host
    uri = request.uri.decode("latin-1")
    now = exchange.finishedAt or time.time()
    proxyMs = -1
    if exchange.upstreamStarted is not None and exchange.upstreamDone is not None:
        proxyMs = round((exchange.upstreamDone - exchange.upstreamStarted) * 1000)
    totalMs = round((max(now, exchange.startedAt) - exchange.startedAt) * 1000)
    route = exchange.route
    service = exchange.service
    result: dict[str, Any] = {
        "request": {
            "uri": uri,
            "url": f"{scheme}://{host}{uri}",
            "querystring": uri.partition("?")[2],
            "method": request.method.decode("ascii"),
            "headers": headerTable(request.requestHeaders, _REDACTED),
            "size": exchange.requestSize,
            "tls": tlsInfo(exchange),
        },
        "upstream_uri": exchange.upstreamURI or "",
        "response": {
            "status": exchange.responseStatus,
            "headers": headerTable(exchange.responseHeaders, _REDACTED),
            "size": exchange.bytesSent,
        },
        "latencies": {
            "kong": max(totalMs - max(proxyMs, 0), 0),
            "proxy": proxyMs,
            "request": totalMs,
        },
        "route": None if route is None else {"name": route.name, "paths": list(route.paths),
                                             "hosts": list(route.hosts),
                                             "snis": list(route.snis)},
        "service": None if service is None else {
            "name": service.name, "host": service.host, "port": service.port,
            "protocol": service.protocol, "path": service.path},
        "client_ip": request.getClientAddress().host,
        "started_at": int(exchange.startedAt * 1000),
    }
    if result["request"]["tls"] is None:
        del result["request"]["tls"]
    return result

