"""Plugins the tests use; importable as ``tests.plugins:NAME`` for ``--plugin``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import deferLater

from kongtls.phases import Phase


class Probe:
    """Requests a certificate as conf says, and reports what later phases see.

    conf: ``request`` (bool), ``ca_certs`` (PEM list), ``disable_reuse`` (bool),
    ``verify`` (a value for set_client_verify in access), ``exit`` (bool: answer from
    access with a JSON report instead of proxying).
    """

    PRIORITY = 1000
    VERSION = "1.0.0"

    def __init__(self) -> None:
        self.logs: list[dict[str, Any]] = []
        self.handshakes: list[str | None] = []

    def certificate(self, kong: Any, conf: Mapping[str, Any]) -> None:
        self.handshakes.append(kong.client.get_ip())
        if conf.get("request"):
            res, err = kong.client.tls.request_client_certificate(conf.get("ca_certs"))
            assert res is True and err is None, err
        if conf.get("disable_reuse"):
            res, err = kong.client.tls.disable_session_reuse()
            assert res is True and err is None, err

    def access(self, kong: Any, conf: Mapping[str, Any]) -> None:
        if conf.get("verify"):
            kong.client.tls.set_client_verify(conf["verify"])
        if conf.get("exit"):
            chain, err = kong.client.tls.get_full_client_certificate_chain()
            kong.response.exit(200, {"chain": chain, "err": err,
                                     "facts": kong.client.tls.get_facts()})

    def log(self, kong: Any, conf: Mapping[str, Any]) -> None:
        self.logs.append(kong.log.serialize())


class PhaseRecorder:
    """Calls every kong.client.tls function in every phase and records the outcome."""

    PRIORITY = 2000
    VERSION = "1.0.0"
    CALLS = {
        "request_client_certificate": lambda t: t.request_client_certificate(),
        "disable_session_reuse": lambda t: t.disable_session_reuse(),
        "get_full_client_certificate_chain": lambda t: t.get_full_client_certificate_chain(),
        "set_client_verify": lambda t: t.set_client_verify("NONE"),
        "disable_http2_alpn": lambda t: t.disable_http2_alpn(),
    }

    def __init__(self) -> None:
        self.outcomes: dict[tuple[str, str], str] = {}

    def _record(self, kong: Any, phase: Phase) -> None:
        for name, call in self.CALLS.items():
            try:
                call(kong.client.tls)
            except Exception as e:  # recorded, compared by the test
                self.outcomes[(phase.name, name)] = f"{type(e).__name__}: {e}"
            else:
                self.outcomes[(phase.name, name)] = "ok"

    def client_hello(self, kong: Any, conf: Mapping[str, Any]) -> None:
        self._record(kong, Phase.client_hello)

    def certificate(self, kong: Any, conf: Mapping[str, Any]) -> None:
        self._record(kong, Phase.certificate)

    def rewrite(self, kong: Any, conf: Mapping[str, Any]) -> None:
        self._record(kong, Phase.rewrite)

    def access(self, kong: Any, conf: Mapping[str, Any]) -> None:
        self._record(kong, Phase.access)

    def balancer(self, kong: Any, conf: Mapping[str, Any]) -> None:
        self._record(kong, Phase.balancer)

    def header_filter(self, kong: Any, conf: Mapping[str, Any]) -> None:
        self._record(kong, Phase.header_filter)

    def body_filter(self, kong: Any, conf: Mapping[str, Any]) -> None:
        self._record(kong, Phase.body_filter)

    def log(self, kong: Any, conf: Mapping[str, Any]) -> None:
        self._record(kong, Phase.log)


class Raiser:
    """Raises in the phase named by conf ``phase``."""

    PRIORITY = 500
    VERSION = "1.0.0"

    def _maybe(self, conf: Mapping[str, Any], phase: str) -> None:
        if conf.get("phase") == phase:
            raise RuntimeError(f"boom in {phase}")

    def client_hello(self, kong: Any, conf: Mapping[str, Any]) -> Any:
        if conf.get("phase") == "client_hello-deferred":
            return Deferred()
        self._maybe(conf, "client_hello")
        return None

    def certificate(self, kong: Any, conf: Mapping[str, Any]) -> Any:
        if conf.get("phase") == "certificate-coroutine":
            async def later() -> None:
                pass
            return later()
        if conf.get("phase") == "certificate-fired":
            return succeed(None)
        self._maybe(conf, "certificate")
        return None

    def rewrite(self, kong: Any, conf: Mapping[str, Any]) -> None:
        self._maybe(conf, "rewrite")

    def access(self, kong: Any, conf: Mapping[str, Any]) -> None:
        self._maybe(conf, "access")

    def header_filter(self, kong: Any, conf: Mapping[str, Any]) -> None:
        self._maybe(conf, "header_filter")

    def log(self, kong: Any, conf: Mapping[str, Any]) -> None:
        self._maybe(conf, "log")


class Tagger:
    """Tags the upstream request and the response with its conf ``tag``; async access."""

    PRIORITY = 800
    VERSION = "1.0.0"

    async def access(self, kong: Any, conf: Mapping[str, Any]) -> None:
        from twisted.internet import reactor

        await deferLater(reactor, 0.001, lambda: None)
        seen = kong.ctx.shared.setdefault("tags", [])
        seen.append(conf.get("tag", "?"))
        kong.ctx.plugin["mine"] = True
        kong.service.request.set_header("X-Tags", ",".join(seen))

    def header_filter(self, kong: Any, conf: Mapping[str, Any]) -> Deferred[None]:
        kong.response.set_header("X-Tagged", conf.get("tag", "?"))
        return succeed(None)


class Exiter:
    """Answers from access (or rewrite) with conf ``status`` and records later phases."""

    PRIORITY = 1500
    VERSION = "1.0.0"

    def __init__(self) -> None:
        self.phases: list[str] = []

    def rewrite(self, kong: Any, conf: Mapping[str, Any]) -> None:
        self.phases.append("rewrite")
        if conf.get("in") == "rewrite":
            kong.response.exit(conf.get("status", 403), {"message": "stopped"})

    def access(self, kong: Any, conf: Mapping[str, Any]) -> None:
        self.phases.append("access")
        if conf.get("in", "access") == "access":
            kong.response.exit(conf.get("status", 403), {"message": "stopped"},
                               {"X-Exit": "yes"})

    def balancer(self, kong: Any, conf: Mapping[str, Any]) -> None:
        self.phases.append("balancer")

    def header_filter(self, kong: Any, conf: Mapping[str, Any]) -> None:
        self.phases.append(f"header_filter:{kong.response.get_status()}")

    def body_filter(self, kong: Any, conf: Mapping[str, Any]) -> None:
        chunk, eof = kong.response.get_chunk()
        self.phases.append(f"body_filter:{eof}")
        if eof:
            kong.response.set_chunk(chunk + b"\n")

    def log(self, kong: Any, conf: Mapping[str, Any]) -> None:
        self.phases.append(f"log:{kong.log.serialize()['response']['status']}")


class RequireCert:
    """A plain mTLS plugin for the twistd tests: asks, and refuses requests without one."""

    PRIORITY = 1000
    VERSION = "1.0.0"

    def certificate(self, kong: Any, conf: Mapping[str, Any]) -> None:
        kong.client.tls.request_client_certificate()
        kong.client.tls.disable_session_reuse()

    def access(self, kong: Any, conf: Mapping[str, Any]) -> None:
        chain, err = kong.client.tls.get_full_client_certificate_chain()
        if chain is None:
            kong.response.exit(401, {"message": "certificate required"})
        else:
            kong.service.request.set_header("X-Client-Chain-Length",
                                            str(chain.count("BEGIN CERTIFICATE")))
