"""Run kongtls inside a program that already runs a reactor.

The program serves its own small HTTP application on a loopback port and puts a
kongtls gateway in front of it, with a plugin of its own that requires a client
certificate. Run it with ``python examples/embedded.py [HTTPS_ENDPOINT]`` and try::

    curl -k https://127.0.0.1:8443/           # 401: no certificate
    curl -k --cert client.pem --key client.key https://127.0.0.1:8443/
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import react
from twisted.web.resource import Resource
from twisted.web.server import Site

from kongtls.gateway import Gateway


class Hello(Resource):
    """The program's own application: says hello to whoever the gateway vouches for."""

    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        who = request.getHeader("x-client-subject") or "stranger"
        return f"hello, {who}\n".encode()


class RequireClientCertificate:
    """Ask for a certificate in the handshake; refuse requests that came without one."""

    PRIORITY = 1000
    VERSION = "1.0.0"

    def certificate(self, kong: Any, conf: Mapping[str, Any]) -> None:
        kong.client.tls.request_client_certificate()
        kong.client.tls.disable_session_reuse()

    def access(self, kong: Any, conf: Mapping[str, Any]) -> None:
        chain, err = kong.client.tls.get_full_client_certificate_chain()
        if chain is None:
            return kong.response.exit(401, {"message": "a client certificate is required"})
        subject = kong.client.tls.get_facts().get("Client-Cert-Subject", "")
        kong.service.request.set_header("X-Client-Subject", subject)


async def main(reactor: Any, httpsEndpoint: str = "tcp:8443:interface=127.0.0.1") -> None:
    app = reactor.listenTCP(0, Site(Hello()), interface="127.0.0.1")
    config = {
        "_format_version": "3.0",
        "services": [{"name": "hello", "url": f"http://127.0.0.1:{app.getHost().port}",
                      "routes": [{"name": "all", "paths": ["/"]}]}],
        "plugins": [{"name": "require-client-certificate"}],
    }
    gateway = Gateway.fromDict(reactor, config,
                               plugins={"require-client-certificate": RequireClientCertificate})
    port = await gateway.listen(httpsEndpoint)
    print(f"gateway on https://127.0.0.1:{port.getHost().port}/", flush=True)
    forever: Deferred[None] = Deferred()
    reactor.addSystemEventTrigger("before", "shutdown", gateway.stop)
    await forever


if __name__ == "__main__":
    react(lambda reactor: ensureDeferred(main(reactor, *sys.argv[1:])))
