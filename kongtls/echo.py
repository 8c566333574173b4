"""A small HTTP echo server: answers with the request it received, as JSON.

Used by the built-in demo and by L{kongtls.testing} as a real upstream.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.web.resource import Resource

from kongtls.web import QuietSite, headerTable


class EchoResource(Resource):
    """Every path answers 200 with method, path, query, headers and the body's size."""

    isLeaf = True

    def render(self, request: Any) -> bytes:
        body = request.content.read()
        headers = headerTable(request.requestHeaders)
        uri = request.uri.decode("latin-1")
        status = request.getHeader("x-echo-status")
        if status and status.isdigit():
            request.setResponseCode(int(status))
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"x-echo-server", b"kongtls")
        return json.dumps({
            "method": request.method.decode("ascii"),
            "server_port": request.getHost().port,
            "uri": uri,
            "path": request.path.decode("latin-1"),
            "query": uri.partition("?")[2],
            "headers": headers,
            "body_size": len(body),
            "body": body.decode("utf-8", "replace") if len(body) <= 4096 else None,
        }, indent=2).encode("utf-8") + b"\n"


def echoSite() -> QuietSite:
    return QuietSite(EchoResource())
