"""twisted.web pieces shared by the gateway, its PDK and serializer, and the echo server."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from twisted.web.http_headers import Headers
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
