"""twisted.web pieces shared by the gateway, its PDK and serializer, and the echo server."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from twisted.web.http_headers import Headers, _nameEncoder
from twisted.web.server import Site


class QuietSite(Site):
    """A Site without twisted.web's per-request access log (kongtls has its own)."""

    def log(self, request: Any) -> None:
        pass


def headerTable(headers: Headers, redact: Collection[str] = ()) -> dict[str, str | list[str]]:
    """Kong's header tables: names lower-cased, a repeated header as a list.

    Headers named in C{redact} show as ``"REDACTED"`` (the log serializer's rule).
    """
    table: dict[str, str | list[str]] = {}
    for name, values in headers.getAllRawHeaders():
        key = name.decode("latin-1").lower()
        if key in redact:
            table[key] = "REDACTED"
            continue
        decoded = [v.decode("latin-1") for v in values]
        table[key] = decoded[0] if len(decoded) == 1 else decoded
    return table


def fieldAdder(headers: Headers) -> Any:
    """A fast C{addRawHeader} for fields a parser has already checked.

    twisted.web's own re-checks every value for line breaks on each call, a cost per
    field per request that the HTTP/1.1 parsers here have paid already (they refuse
    control characters in the whole head in one pass). Names still go through Twisted's
    canonical-name cache, which refuses any name that is not a token
    (C{InvalidHeaderName}, a C{ValueError}). The private parts this relies on are
    checked by C{tests/test_http1.py}.
    """
    raw = headers._rawHeaders
    encode = _nameEncoder.encode

    def add(name: bytes, value: bytes) -> None:
        key = encode(name)
        values = raw.get(key)
        if values is None:
            raw[key] = [value]
        else:
            values.append(value)

    return add

