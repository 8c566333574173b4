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


#: Twisted's canonical-name cache (name as received -> canonical name), and its encoder,
#: which canonicalizes, caches and refuses any name that is not a token
#: (C{InvalidHeaderName}, a C{ValueError}). Hot parsers look a name up in the cache
#: first, saving a call per field: C{CANONICAL_NAMES.get(name) or encodeName(name)}.
#: The private parts this relies on are checked by C{tests/test_http1.py}.
CANONICAL_NAMES: dict[bytes | str, bytes] = _nameEncoder._canonicalHeaderCache
encodeName = _nameEncoder.encode


def fieldAdder(headers: Headers) -> Any:
    """A fast C{addRawHeader} for fields a parser has already checked.

    twisted.web's own re-checks every value for line breaks on each call, a cost per
    field per request that the HTTP/1.1 parsers here have paid already (they refuse
    control characters in the whole head in one pass). Names still go through Twisted's
    canonical-name cache (L{CANONICAL_NAMES}), which refuses any name that is not a
    token.
    """
    raw = headers._rawHeaders
    cached = CANONICAL_NAMES.get

    def add(name: bytes, value: bytes) -> None:
        key = cached(name) or encodeName(name)
        values = raw.get(key)
        if values is None:
            raw[key] = [value]
        else:
            values.append(value)

    return add
