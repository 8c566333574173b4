"""One HTTP request's state as it moves through the phases, shared by the PDK and proxy."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.web.http_headers import Headers

from kongtls.phases import Phase

if TYPE_CHECKING:
    from twisted.web.server import Request

    from kongtls.config import Route, Service
    from kongtls.connection import ConnectionTLS
    from kongtls.runtime import Runtime


@dataclass
class ShortCircuit:
    """A response a plugin (or the core) produced instead of the upstream's."""

    status: int
    body: bytes
    headers: list[tuple[str, str]]


JSON_TYPE = "application/json; charset=utf-8"


def encodeBody(body: object) -> tuple[bytes, str | None]:
    """Kong's ``exit`` bodies: a table becomes JSON, a string is sent as it is."""
    if body is None:
        return b"", None
    if isinstance(body, bytes):
        return body, None
    if isinstance(body, str):
        return body.encode("utf-8"), None
    return json.dumps(body, separators=(",", ":")).encode("utf-8"), JSON_TYPE


def messageResponse(status: int, message: str) -> ShortCircuit:
    body, ctype = encodeBody({"message": message})
    return ShortCircuit(status, body, [("Content-Type", ctype or JSON_TYPE)])


@dataclass
class ServiceRequestEdits:
    """Changes plugins made to the request that goes upstream."""

    setHeaders: dict[str, list[str]] = field(default_factory=dict)
    clearHeaders: set[str] = field(default_factory=set)
    target: tuple[str, int] | None = None


class Exchange:
    """A request, its route, the response being built, and what plugins asked for."""

    def __init__(self, request: Request, runtime: Runtime,
                 connection: ConnectionTLS | None) -> None:
        self.request = request
        self.runtime = runtime
        self.connection = connection
        self.phase: Phase | None = None
        self.route: Route | None = None
        self.matchedPrefix = ""
        self.service: Service | None = None
        self.exit: ShortCircuit | None = None
        self.edits = ServiceRequestEdits()
        self.responseStatus: int | None = None
        self.responseHeaders = Headers()
        self.pendingResponseHeaders: list[tuple[str, str | None]] = []
        self.headersSent = False
        self.chunk: bytes = b""
        self.eof = False
        self.clientVerifyOverride: str | None = None
        self.shared: dict[str, Any] = {}
        self.pluginCtx: dict[str, dict[str, Any]] = {}
        self.bodyStream = getattr(request, "bodyStream", None)
        self._bufferedSize = _contentSize(request)
        self.startedAt = time.time()
        self.upstreamStarted: float | None = None
        self.upstreamDone: float | None = None
        self.finishedAt: float | None = None
        self.bytesSent = 0
        self.upstreamURI: str | None = None
        self.tries: list[Any] = []
        self.upstreamStatus: int | None = None
        self.upstreamHeaders: Headers | None = None
        self.bufferedBody: bytes | None = None

    @property
    def requestSize(self) -> int:
        """Bytes of request body received so far (all of it, unless it streams)."""
        if self.bodyStream is not None:
            return int(self.bodyStream.received)
        return self._bufferedSize

    def pluginContext(self, name: str) -> dict[str, Any]:
        return self.pluginCtx.setdefault(name, {})


def _contentSize(request: Request) -> int:
    content = request.content
    if content is None:
        return 0
    size = content.seek(0, 2)
    content.seek(0)
    return int(size)
