"""Plugins that ship with kongtls."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ClientCertificate:
    """Ask every client of the connection for a certificate (mutual TLS).

    conf: ``ca_certs`` (PEM strings whose subjects are sent as acceptable CA names and
    which judge the verdict), ``disable_session_reuse`` (default true, so that every
    request on a new connection carries a certificate), ``require`` (default false:
    when true, a request without a client certificate gets 401).
    """

    PRIORITY = 1100
    VERSION = "1.0.0"
    SCHEMA = {
        "ca_certs": {"type": "array", "elements": "string", "default": []},
        "disable_session_reuse": {"type": "boolean", "default": True},
        "require": {"type": "boolean", "default": False},
    }

    def certificate(self, kong: Any, conf: Mapping[str, Any]) -> None:
        res, err = kong.client.tls.request_client_certificate(conf["ca_certs"] or None)
        if not res:
            kong.log.err("cannot request a client certificate: ", err)
            return
        if conf["disable_session_reuse"]:
            kong.client.tls.disable_session_reuse()

    def access(self, kong: Any, conf: Mapping[str, Any]) -> None:
        if not conf["require"]:
            return
        chain, err = kong.client.tls.get_full_client_certificate_chain()
        if chain is None:
            kong.response.exit(401, {"message": "No required TLS certificate was sent"})


class TLSFacts:
    """Tell the upstream what the TLS layer saw, as ``X-TLS-*`` request headers."""

    PRIORITY = 900
    VERSION = "1.0.0"
    SCHEMA: dict[str, dict[str, object]] = {}

    def access(self, kong: Any, conf: Mapping[str, Any]) -> None:
        facts = kong.client.tls.get_facts()
        for name, value in facts.items():
            kong.service.request.set_header(f"X-TLS-{name}", str(value))


BUNDLED_PLUGINS: dict[str, Any] = {
    "client-certificate": ClientCertificate,
    "tls-facts": TLSFacts,
}
